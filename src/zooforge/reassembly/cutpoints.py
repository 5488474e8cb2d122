"""Where DeRy may cut a backbone, and how to run the model up to a cut: the per-family facts.

timm models declare their cut points (``feature_info``: CNN stages, transformer blocks) and run them
through ``forward_features``. Hugging Face vision models (ViT, DeiT, DINOv2, BEiT, ConvNeXt, Swin,
ResNet, ...) declare none: their cut points are the entries of the base model's outermost layer list
(``layers`` or ``encoder.layer`` of a ViT, ``encoder.stages`` of a ConvNeXt or ResNet, ``encoder.layers``
of a Swin), run through the base model's own forward, whose ``last_hidden_state`` is the features.

A Hugging Face layer is called with more than the hidden states: an attention mask (None for images),
Swin's grid size, BEiT's resolution. The values it was called with on the probe pass are recorded and
given again (:class:`LayerCall`). That holds because a block always sees the grid it was cut at (stitches
resample to it). A layer called with further tensors (rotary position embeddings, say) is refused:
those encode the positions of the model's own tokens, which a block fed by a stitch does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.zoo.backbone import Backbone, first_tensor

__all__ = ["CutPoints", "LayerCall", "cut_points", "run_features"]


def run_features(model: nn.Module, family: str, x: torch.Tensor) -> torch.Tensor:
    """The model's unpooled features of the image batch ``x``: timm ``forward_features``; the
    ``last_hidden_state`` of a Hugging Face base model (its pooler and classifier are not the body)."""
    if family == "timm":
        return model.forward_features(x)
    return model.base_model(pixel_values=x).last_hidden_state


class LayerCall(nn.Module):
    """A Hugging Face layer called with the hidden states and the other arguments it took on the probe
    pass; returns the hidden states it gives (the first of a tuple)."""

    def __init__(self, layer: nn.Module, args: tuple = (), kwargs: dict | None = None):
        super().__init__()
        self.layer, self.args, self.kwargs = layer, tuple(args), dict(kwargs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return first_tensor(self.layer(x, *self.args, **self.kwargs))


@dataclass
class CutPoints:
    """The candidate cuts of one backbone, read on one probe pass of ``example``."""

    family: str                                   # "timm" | "hf" (how the model runs)
    names: list[str]                              # candidate cut modules in call order (names in backbone.model)
    channels: dict[str, int | None]               # declared output channels (the nchw/nhwc rule); None: 4-d is nchw
    example: torch.Tensor                         # one input image as the model takes it
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]]   # module -> (hidden states in, hidden states out)
    prefix_tokens: int = 0                        # tokens before the patch tokens (class, distillation, registers)
    grid: tuple[int, int] | None = None           # the patch grid the first transformer layer sees
    calls: dict[str, tuple[tuple, dict]] = field(default_factory=dict)   # hf: each layer's other arguments

    def body(self, model: nn.Module, name: str) -> nn.Module:
        """The module ``name`` of ``model`` as a block body: one tensor in, one tensor out."""
        module = model.get_submodule(name)
        if self.family == "timm":
            return module
        args, kwargs = self.calls[name]
        return LayerCall(module, args, kwargs)


def cut_points(backbone: Backbone) -> CutPoints:
    """The cut points of an image backbone (module docstring), or a refusal that says why there are none."""
    if backbone.modality != "image":
        raise ZooforgeError(f"model {backbone.id!r} is a {backbone.modality} model; DeRy composes image "
                            "backbones (timm, local checkpoints or Hugging Face vision models).")
    backbone.model.eval()
    if backbone.family == "timm":
        return _timm_points(backbone)
    return _hf_points(backbone)


def _timm_points(backbone: Backbone) -> CutPoints:
    model = backbone.model
    info = list(getattr(model, "feature_info", None) or [])
    names = [f["module"] for f in info]
    if len(names) < 2:
        raise ZooforgeError(f"model {backbone.id!r} declares no feature_info stages to cut at; DeRy needs a "
                            "timm model with feature_info (CNN stages or transformer blocks).")
    c, h, w = backbone.transform.input_size
    example = torch.zeros(1, c, h, w, device=backbone.device)
    with backbone.capture(names) as seen, torch.no_grad():
        model.forward_features(example)
    grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()) or ()) or None
    return CutPoints("timm", names, {f["module"]: f["num_chs"] for f in info}, example, dict(seen),
                     int(getattr(model, "num_prefix_tokens", 0) or 0), grid)


def _hf_points(backbone: Backbone) -> CutPoints:
    model = backbone.model
    base = model.base_model
    base_name = next(n for n, m in model.named_modules() if m is base)
    lists = [(n.count("."), -len(m), n) for n, m in base.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) >= 2]
    if not lists:
        raise ZooforgeError(f"model {backbone.id!r}: its base model {type(base).__name__} has no list of layers "
                            "to cut at (DeRy cuts Hugging Face vision encoders between their layers or stages).")
    layer_list = min(lists)[2]                    # the outermost list: stages, not the layers inside a stage
    names = [".".join(p for p in (base_name, layer_list, str(i)) if p) for i in range(len(base.get_submodule(layer_list)))]
    example = backbone.example_inputs()["pixel_values"][:1]
    calls: dict[str, tuple[tuple, dict]] = {}
    with backbone.capture(names, calls=calls) as seen, torch.no_grad():
        base(pixel_values=example)
    missing = [n for n in names if n not in seen]
    if missing:
        raise ZooforgeError(f"model {backbone.id!r}: layers {missing[:3]} of {layer_list!r} did not run on an "
                            "image, so the list is not the encoder's chain of layers; this model is not cut.")
    for name, (args, kwargs) in calls.items():
        if _has_tensor((args, kwargs)):
            raise ZooforgeError(f"model {backbone.id!r}: layer {name!r} takes tensors beside the hidden states "
                                "(position embeddings?), which a block fed by a stitch cannot give it; this "
                                "model is not cut.")
    prefix_tokens, grid = _patch_grid(model.config, seen[names[0]][0], example)
    return CutPoints("hf", names, dict.fromkeys(names), example, dict(seen), prefix_tokens, grid, calls)


def _has_tensor(value: Any) -> bool:
    if torch.is_tensor(value):
        return True
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    return False


def _patch_grid(config, first_input: torch.Tensor, example: torch.Tensor) -> tuple[int, Any]:
    """(prefix tokens, patch grid) of a transformer whose first layer takes ``first_input`` tokens; (0, None)
    for maps. Prefix tokens are what the patch grid (image size // the config's ``patch_size``) does not cover."""
    patch = getattr(config, "patch_size", None)
    if first_input is None or first_input.dim() != 3 or patch is None:
        return 0, None
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    grid = (example.shape[-2] // ph, example.shape[-1] // pw)
    extra = first_input.shape[1] - grid[0] * grid[1]
    return (extra, grid) if 0 <= extra < first_input.shape[1] else (0, None)
