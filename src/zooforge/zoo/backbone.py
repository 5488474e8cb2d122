"""Backbone: one wrapper over timm, Hugging Face transformers and local checkpoints.

A Backbone knows how to turn raw samples (uint8 images or strings) into model inputs and how to run
the model once to get, in the same pass, pooled pre-logit features, the source head's logits (when
the weights carry a head) and pooled outputs of any named intermediate modules.

Loading never happens at import. Hub weights are fetched only for entries that name a hub model and
give no checkpoint; offline (``HF_HUB_OFFLINE=1`` or no network) a missing hub file raises
``BackboneLoadError`` saying what is missing and how to provide it.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from zooforge.errors import BackboneLoadError
from zooforge.zoo.catalogue import CatalogueEntry
from zooforge.zoo.cost import Cost, count_gmacs, count_params, remembered_cost
from zooforge.zoo.transforms import ImageTransform

__all__ = ["Backbone", "Preprocessor", "first_tensor", "layout_of", "load_state_dict_file", "pool"]

TEXT_MAX_LENGTH = 256      # tokens per text sample (truncated beyond, or the model's own limit)
TEXT_COST_LENGTH = 128     # sequence length at which text models' GMACs are reported


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch pickle (.pt/.pth/.bin, weights only) whose
    top level may wrap it in 'state_dict' / 'model'; 'module.' prefixes (DataParallel) are stripped."""
    path = Path(path)
    if not path.is_file():
        raise BackboneLoadError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, wrong format: all reported the same way
        raise BackboneLoadError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneLoadError(f"checkpoint {path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def layout_of(t: torch.Tensor, channels: int | None = None) -> str:
    """How a module output holds its features: ``"nchw"`` or ``"nhwc"`` maps (channels last when the
    module's declared ``channels`` is the last axis and not the second, as in MambaOut's stages), or
    ``"tokens"`` (B, N, C) and anything else not 4-d. The one rule for pooling, adapters and DeRy's blocks."""
    if t.dim() == 4:
        return "nhwc" if channels is not None and t.shape[1] != channels and t.shape[-1] == channels else "nchw"
    return "tokens"


def first_tensor(output: Any) -> torch.Tensor:
    """The tensor a module's output carries: the first of a tuple/list (blocks that return (x, aux)),
    a Hugging Face output's ``last_hidden_state``, or the output itself."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output


def pool(output: Any, channels: int | None = None) -> torch.Tensor:
    """Global-average-pool a module output to (B, C): NCHW/NHWC maps over space, (B, N, C) tokens over
    tokens (:func:`layout_of`); tuples and HF outputs through :func:`first_tensor`."""
    output = first_tensor(output)
    if output.ndim == 4:
        return output.mean(dim=(1, 2) if layout_of(output, channels) == "nhwc" else (2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    return output.flatten(1)


@dataclass(frozen=True)
class Preprocessor:
    """Raw samples -> model inputs: uint8 HWC images through the timm transform or the HF image
    processor, strings through the tokenizer."""

    modality: str
    transform: Any = None
    processor: Any = None
    tokenizer: Any = None
    max_length: int = 0

    def __call__(self, samples: Sequence[Any] | np.ndarray) -> dict[str, torch.Tensor]:
        if self.modality == "text":
            enc = self.tokenizer(list(samples), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            return dict(enc)
        if self.transform is not None:
            if isinstance(samples, np.ndarray):
                batch = torch.from_numpy(samples).permute(0, 3, 1, 2)       # (N, 3, H, W) uint8
                return {"x": self.transform(batch)}
            return {"x": self.transform.normalize(torch.stack(
                [self.transform.resize_crop(torch.from_numpy(np.array(s, copy=True)).permute(2, 0, 1))
                 for s in samples]))}
        enc = self.processor(images=[np.asarray(s) for s in samples], return_tensors="pt")
        return {"pixel_values": enc["pixel_values"]}


@dataclass
class Backbone:
    """A loaded model plus what it takes to feed it. Build with ``Backbone.from_entry``."""

    entry: CatalogueEntry
    model: nn.Module
    modality: str                                  # "image" | "text"
    num_source_classes: int = 0                    # 0 when the weights carry no classifier head
    transform: ImageTransform | None = None        # timm image models
    processor: Any = None                          # HF image processor
    tokenizer: Any = None                          # HF tokenizer
    layer_channels: dict[str, int] = field(default_factory=dict)   # intermediate module -> channels
    _cost: Cost | None = field(default=None, repr=False)
    cost_key: str | None = field(default=None, repr=False)    # architecture key of a remembered cost
    _weights_hash: str | None = field(default=None, repr=False)

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_entry(cls, entry: CatalogueEntry) -> "Backbone":
        from zooforge.zoo.loaders import hf_backbone, timm_backbone

        if entry.source in ("timm", "local"):
            return timm_backbone(entry)
        if entry.source == "hf":
            return hf_backbone(entry)
        raise BackboneLoadError(f"model {entry.id!r}: unknown source {entry.source!r}; use timm, hf or local.")

    # ---- facts -----------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def family(self) -> str:
        """How the model is built and run: "timm" (timm architectures, with or without local
        weights) or "hf" (transformers). With ``modality`` this is all a caller needs to know."""
        return "hf" if self.entry.source == "hf" else "timm"

    @property
    def input_key(self) -> str:
        """The key of the main model input in :meth:`prepare`'s dict."""
        if self.modality == "text":
            return "input_ids"
        return "x" if self.family == "timm" else "pixel_values"

    def as_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model-input dict from the main input tensor alone (text: the attention mask from padding)."""
        if self.modality == "text":
            pad = self.tokenizer.pad_token_id or 0
            return {"input_ids": x, "attention_mask": (x != pad).long()}
        return {self.input_key: x}

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One prepared example on the model's device (a blank image, or a sentence of the cost length)."""
        return {k: v.to(self.device) for k, v in self.prepare(self._example_samples()).items()}

    def with_model(self, model: nn.Module) -> "Backbone":
        """This backbone (entry, preprocessing) around another network of the same interface: its
        cost (never a remembered one) and weights digest are measured again."""
        return replace(self, model=model, _cost=None, cost_key=None, _weights_hash=None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def stage_names(self) -> list[str]:
        """Modules at the model's natural cut points (timm ``feature_info``; HF encoder layers)."""
        return list(self.layer_channels)

    @property
    def num_params(self) -> int:
        return self.cost.num_params

    @property
    def gmacs(self) -> float:
        return self.cost.gmacs

    @property
    def cost(self) -> Cost:
        if self._cost is None:         # with a cost_key: remembered for its architecture, head and input size
            count = lambda: count_gmacs(self.model, **self.example_inputs())      # noqa: E731
            self._cost = (Cost(count_params(self.model), count()) if self.cost_key is None
                          else remembered_cost(self.cost_key, self.model, count))
        return self._cost

    def adopt_cost(self, cost: Cost) -> None:
        """Take a cost measured earlier for these weights and input size (a feature-cache hit)."""
        if self._cost is None:
            self._cost = cost

    @property
    def weights_hash(self) -> str:
        """Digest of the loaded parameters and buffers: identifies exactly which weights ran."""
        if self._weights_hash is None:
            h = hashlib.blake2b(digest_size=16)
            for name, tensor in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._weights_hash = h.hexdigest()
        return self._weights_hash

    def describe_preprocessing(self) -> dict:
        if self.transform is not None:
            return self.transform.describe()
        if self.processor is not None:
            return {"hf_image_processor": self.processor.to_dict()}
        return {"tokenizer": type(self.tokenizer).__name__, "max_length": self._max_length()}

    @property
    def preprocessing_key(self) -> str:
        """Equal for two backbones exactly when they prepare samples alike (to share prepared images)."""
        return json.dumps(self.describe_preprocessing(), sort_keys=True, default=str)

    def image_geometry(self) -> tuple[tuple[int, int, int], tuple | None, tuple | None]:
        """(input size (C, H, W), normalisation mean, std) of an image model's preprocessing; mean and
        std are None where an HF image processor does not normalise."""
        if self.transform is not None:
            return tuple(self.transform.input_size), tuple(self.transform.mean), tuple(self.transform.std)
        size = getattr(self.processor, "size", None) or {}
        h = size.get("height") or size.get("shortest_edge") or 224
        w = size.get("width") or h
        mean, std = getattr(self.processor, "image_mean", None), getattr(self.processor, "image_std", None)
        return (3, int(h), int(w)), tuple(mean) if mean else None, tuple(std) if std else None

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features (what a task head sits on), read from one pass on an example."""
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return int(self.pooled_features(self.example_inputs()).shape[-1])
        finally:
            self.model.train(was)

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> "Backbone":
        self.model.to(device)
        if channels_last and self.modality == "image":
            self.model.to(memory_format=torch.channels_last)
        return self

    # ---- running ---------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Any] | np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs (on CPU) from a batch of raw samples: uint8 HWC images or strings."""
        return self.preprocessor()(samples)

    def preprocessor(self) -> "Preprocessor":
        """The preprocessing alone, without the model: small and picklable, for DataLoader workers
        (spawned workers receive it by pickle; a bound ``prepare`` would ship the whole network)."""
        return Preprocessor(self.modality, self.transform, self.processor, self.tokenizer,
                            self._max_length() if self.modality == "text" else 0)

    def forward(self, inputs: dict[str, torch.Tensor], layers: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """One pass: {"features": (B, D), "logits": (B, Z) if a head, "layer:<name>": (B, C_l)}."""
        pooled = (lambda name, _x, y: pool(y, self.layer_channels.get(name)))
        with self.capture(layers, pooled) as captured:
            out = self._timm_forward(inputs) if self.family == "timm" else self._hf_forward(inputs)
        out.update({f"layer:{k}": v for k, v in captured.items()})
        return out

    @contextmanager
    def capture(self, names: Sequence[str], keep=None, calls: dict | None = None) -> Iterator[dict[str, Any]]:
        """Within the block, every forward through the submodules ``names`` records ``keep(name, first
        input, first output tensor)`` (default: the (input, output) pair) in the yielded dict, the last
        call winning; the first input is the first positional argument or an HF layer's keyword
        ``hidden_states``, and ``calls`` (when given) receives name -> (the other positional, keyword
        arguments). The one forward-hook capture: pooled layer outputs, adapter placement and DeRy's
        cutting read modules through it. An unknown name is refused with the model's stages."""
        keep = keep or (lambda _name, x, y: (x, y))
        seen: dict[str, Any] = {}
        handles = []

        def record(name, args, kwargs, out):
            rest = dict(kwargs)
            first = args[0] if args else rest.pop("hidden_states", None)
            if calls is not None:
                calls[name] = (tuple(args[1:]), rest)
            seen[name] = keep(name, first, first_tensor(out))

        try:
            for name in names:
                try:
                    module = self.model.get_submodule(name)
                except AttributeError:
                    raise ValueError(f"model {self.id!r} has no module {name!r}; its stages are "
                                     f"{self.stage_names}.") from None
                handles.append(module.register_forward_hook(
                    lambda _m, args, kwargs, out, name=name: record(name, args, kwargs, out), with_kwargs=True))
            yield seen
        finally:
            for h in handles:
                h.remove()

    def _timm_forward(self, inputs):
        feats = self.model.forward_features(inputs["x"])
        out = {"features": self.model.forward_head(feats, pre_logits=True).flatten(1)}
        if self.num_source_classes:
            out["logits"] = self.model.forward_head(feats)
        return out

    def _hf_forward(self, inputs):
        base_out = {}
        base = self.model.base_model
        handle = base.register_forward_hook(lambda _m, _i, o: base_out.__setitem__("o", o))
        try:
            result = self.model(**inputs)
        finally:
            handle.remove()
        out = {"features": self._pool_hidden(base_out["o"].last_hidden_state, inputs)}
        if self.num_source_classes:
            out["logits"] = result.logits
        return out

    def _pool_hidden(self, hidden: torch.Tensor, inputs) -> torch.Tensor:
        if self.modality == "text":                        # mean over real tokens (the padding masked out)
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return pool(hidden)

    def pooled_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pooled features of the body alone (the source head is not run), with gradients: what
        a task head sits on when fine-tuning. The same features as ``forward(...)["features"]``."""
        if self.family == "timm":
            return self.model.forward_head(self.model.forward_features(inputs["x"]), pre_logits=True).flatten(1)
        return self._pool_hidden(self.model.base_model(**inputs).last_hidden_state, inputs)

    # ---- helpers ---------------------------------------------------------------------------------
    def _max_length(self) -> int:
        limit = getattr(self.tokenizer, "model_max_length", TEXT_MAX_LENGTH) or TEXT_MAX_LENGTH
        return int(min(limit, TEXT_MAX_LENGTH))

    def _example_samples(self):
        if self.modality == "text":
            return [" ".join(["token"] * (TEXT_COST_LENGTH - 2))]
        _, h, w = self.image_geometry()[0]
        return np.zeros((1, h, w, 3), dtype=np.uint8)
