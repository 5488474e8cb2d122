"""Where parameter-efficient methods attach to a backbone: Houlsby serial and AdaptFormer parallel
bottleneck adapters (placed per architecture family from one probe forward pass) and LoRA / IA3
through PEFT (default target modules per family). :func:`zooforge.tuning.methods.build` calls them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.zoo.backbone import Backbone, layout_of

if TYPE_CHECKING:
    from zooforge.tuning.methods import MethodConfig, TaskModel

__all__ = ["Adapter", "AdaptedModule", "attach_adapters", "attach_peft", "default_targets"]


# ---- bottleneck adapters ----------------------------------------------------------------------------
class Adapter(nn.Module):
    """Bottleneck ``up(act(down(x)))`` on tokens (..., D) or maps (B, C, H, W) / (B, H, W, C).

    ``up`` starts at zero so a freshly attached adapter leaves the network's function unchanged.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layout: str, stride: int = 1):
        super().__init__()
        self.layout = layout
        if layout in ("nchw", "nhwc"):
            self.down = nn.Conv2d(in_dim, hidden, 1, stride=stride)
            self.up = nn.Conv2d(hidden, out_dim, 1)
        else:
            if stride != 1:
                raise ValueError("strided adapters need a feature map.")
            self.down = nn.Linear(in_dim, hidden)
            self.up = nn.Linear(hidden, out_dim)
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return self.up(self.act(self.down(x.permute(0, 3, 1, 2)))).permute(0, 2, 3, 1)
        return self.up(self.act(self.down(x)))


class AdaptedModule(nn.Module):
    """``inner`` with an adapter: serial ``y + a(y)`` or parallel ``y + s · a(x)``; tuples adapt item 0."""

    def __init__(self, inner: nn.Module, adapter: Adapter, mode: str, scale: float = 1.0):
        super().__init__()
        self.inner, self.adapter, self.mode, self.scale = inner, adapter, mode, scale

    def forward(self, x, *args, **kwargs):
        out = self.inner(x, *args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if self.mode == "serial":
            first = first + self.adapter(first)
        else:
            first = first + self.scale * self.adapter(x)
        return (first, *out[1:]) if isinstance(out, tuple) else first


def _layout(t: torch.Tensor, channels: int | None) -> tuple[str, int]:
    """(layout, feature width) of a stage's output, by the backbone's one layout rule."""
    layout = layout_of(t, channels)
    return layout, t.shape[1] if layout == "nchw" else t.shape[-1]


def _adapter_sites(backbone: Backbone, mode: str) -> list[str]:
    model = backbone.model
    blocks = [n for n, m in model.named_modules() if hasattr(m, "attn") and hasattr(m, "mlp")
              and isinstance(getattr(m, "mlp"), nn.Module)]
    if backbone.family == "timm" and blocks:                         # timm transformer
        return [f"{b}.attn" for b in blocks] + [f"{b}.mlp" for b in blocks] if mode == "serial" \
            else [f"{b}.mlp" for b in blocks]
    sites = [s for s in backbone.stage_names if s]
    if not sites:
        raise ZooforgeError(f"model {backbone.id!r}: found no stages or transformer blocks to hold adapters.")
    return sites


def attach_adapters(task: "TaskModel", cfg: MethodConfig) -> None:
    backbone = task.backbone
    mode = "serial" if cfg.method == "adapter" else "parallel"
    sites = _adapter_sites(backbone, mode)
    example = backbone.example_inputs()
    with backbone.capture(sites) as shapes, torch.no_grad():
        task.features(example)
    for name in sites:
        if name not in shapes:
            continue                                    # a stage this forward path does not use
        x_in, y_out = shapes[name]
        channels = backbone.layer_channels.get(name)
        out_layout, out_dim = _layout(y_out, channels)
        if mode == "serial":
            in_dim, stride = out_dim, 1
        else:
            in_layout, in_dim = _layout(x_in, None if out_layout != "nhwc" else x_in.shape[-1])
            if in_layout != out_layout:
                raise ZooforgeError(f"model {backbone.id!r}: stage {name!r} changes layout; "
                                    "use the serial 'adapter' method for it.")
            stride = 1
            if out_layout in ("nchw", "nhwc"):
                spatial = -1 if out_layout == "nchw" else -2
                stride = max(1, x_in.shape[spatial] // y_out.shape[spatial])
            elif x_in.shape[:-1] != y_out.shape[:-1]:
                raise ZooforgeError(f"model {backbone.id!r}: stage {name!r} changes its token/spatial grid; "
                                    "parallel adapters need the same grid; use 'adapter'.")
        hidden = max(4, out_dim // cfg.reduction)
        adapter = Adapter(in_dim, out_dim, hidden, out_layout, stride).to(backbone.device)
        parent_name, _, child = name.rpartition(".")
        parent = backbone.model.get_submodule(parent_name) if parent_name else backbone.model
        setattr(parent, child, AdaptedModule(getattr(parent, child), adapter, mode, cfg.scale))


# ---- PEFT -------------------------------------------------------------------------------------------
def default_targets(backbone: Backbone, method: str) -> tuple[list[str], list[str]]:
    """(target module names, IA3 feed-forward module names) for LoRA/IA3 on this backbone."""
    names = {n: m for n, m in backbone.model.named_modules()}
    head_like = re.compile(r"(^|\.)(head|fc|classifier|pooler|score)(\.|$)")
    linear = [n for n, m in names.items() if isinstance(m, nn.Linear) and not head_like.search(n)]
    attn = [n for n in linear if re.search(r"(qkv|query|key|value|q_proj|k_proj|v_proj|\.q$|\.k$|\.v$)", n)]
    ffn_out = [n for n in linear if re.search(r"(mlp\.fc2|output\.dense$|fc2$|down_proj$|ffn\.lin2$)", n)
               and "attention" not in n]
    if attn:                                               # transformers
        if method == "lora":
            return attn, []
        return attn + ffn_out, ffn_out
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d) and m.groups == 1 and not head_like.search(n)]
    if not convs and not linear:
        raise ZooforgeError(f"model {backbone.id!r}: no Linear or Conv2d layers for {method}.")
    # CNNs: every dense convolution (depth-wise ones have too few weights to be worth a low-rank update)
    targets = convs + [n for n in linear if n not in convs]
    return targets, []


def attach_peft(task: "TaskModel", cfg: MethodConfig) -> None:
    try:
        import peft
    except ImportError as exc:
        raise ZooforgeError("LoRA and IA3 need PEFT: pip install 'zooforge[peft]'.") from exc
    targets, feedforward = default_targets(task.backbone, cfg.method)
    if cfg.targets:
        pattern = re.compile("|".join(cfg.targets))
        targets = [n for n, _ in task.backbone.model.named_modules() if n and pattern.fullmatch(n)]
        if not targets:
            raise ZooforgeError(f"model {task.backbone.id!r}: no module matches targets {cfg.targets}.")
        feedforward = [n for n in feedforward if n in targets]
    if cfg.method == "lora":
        config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=targets, bias="none")
    else:
        config = peft.IA3Config(target_modules=targets, feedforward_modules=feedforward)
    peft.inject_adapter_in_model(config, task.backbone.model)
    task.peft_config = config
