"""Parameter-efficient fine-tuning methods behind one call: ``build(backbone, num_classes, method)``.

Every method returns a :class:`TaskModel` (``logits = model(x)``) whose ``requires_grad`` flags say
exactly what trains, so the one training loop (:mod:`zooforge.tuning.loop`) serves them all:

``linear``       frozen backbone, new linear head (the linear probe).
``full``         everything trains.
``bitfit``       biases only, plus the head (Ben Zaken et al., ACL 2022).
``adapter``      Houlsby serial bottleneck adapters, ``h + up(act(down(h)))`` with ``up`` zero-initialised
                 so training starts from the pre-trained function (Houlsby et al., ICML 2019).
``adaptformer``  AdaptFormer parallel adapters, ``f(h) + s · up(act(down(h)))`` (Chen et al., NeurIPS 2022).
``lora``         low-rank updates through PEFT (``peft.LoraConfig``; Hu et al., ICLR 2022).
``ia3``          learned rescaling vectors through PEFT (``peft.IA3Config``; Liu et al., NeurIPS 2022).

Where adapters go, per architecture family:

* timm transformers (modules with ``attn`` and ``mlp``, e.g. ViT, DeiT, Swin, EVA): serial adapters
  after each block's attention and MLP (Houlsby's two places); parallel adapters beside each MLP
  (AdaptFormer's place). The MLP sees the normed residual stream, which is what AdaptFormer feeds.
* timm CNNs: one adapter per ``feature_info`` stage. Serial: a 1×1-conv bottleneck on the stage output.
  Parallel: the bottleneck reads the stage *input* with the stride that matches the stage's downsampling
  and adds to its output. Channels-last stages (e.g. MambaOut) are detected from ``feature_info``.
* Hugging Face transformers: one adapter per encoder layer on its hidden states.

Shapes are found by one probe forward pass, so any architecture whose stages map tensors to tensors
works without a table of layer names. LoRA and IA3 pick default target modules per family
(:func:`default_targets`) and accept ``targets=[...]`` to override them.

Adapters save and load alone (:func:`save_adapters` / :func:`load_adapters`: the trainable tensors in
safetensors plus a JSON of the method and its options) and re-attach to a freshly loaded base model.
LoRA and IA3 merge into the base weights (:meth:`TaskModel.merge`); bottleneck adapters are non-linear
and cannot be merged, which :meth:`TaskModel.merge` says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooforge.config import TUNING_METHODS
from zooforge.errors import ZooforgeError
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.cost import count_params

__all__ = ["METHODS", "MethodConfig", "TaskModel", "build", "default_targets", "save_adapters",
           "load_adapters", "inputs_for", "Adapter"]

METHODS = TUNING_METHODS          # names in zooforge.config, so configs validate without importing torch


@dataclass
class MethodConfig:
    method: str = "linear"
    reduction: int = 8            # adapter bottleneck = max(4, width // reduction)
    scale: float = 0.1            # AdaptFormer's s
    rank: int = 8                 # LoRA rank
    alpha: float = 16.0           # LoRA alpha
    dropout: float = 0.0          # LoRA dropout
    targets: list[str] | None = None   # LoRA/IA3 target module names (regex on full names); None: defaults

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown tuning method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.reduction < 1 or self.rank < 1:
            raise ValueError("`reduction` and `rank` must be at least 1.")


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
    if t.dim() == 4:
        if channels is not None and t.shape[1] != channels and t.shape[-1] == channels:
            return "nhwc", t.shape[-1]
        return "nchw", t.shape[1]
    return "tokens", t.shape[-1]


def _probe(model: nn.Module, run, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in names:
        def hook(_m, args, out, name=name):
            first = out[0] if isinstance(out, tuple) else out
            seen[name] = (args[0], first)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return seen


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


def _attach_adapters(task: "TaskModel", cfg: MethodConfig) -> None:
    backbone = task.backbone
    mode = "serial" if cfg.method == "adapter" else "parallel"
    sites = _adapter_sites(backbone, mode)
    example = backbone.example_inputs()
    shapes = _probe(backbone.model, lambda: task.features(example), sites)
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


def _attach_peft(task: "TaskModel", cfg: MethodConfig) -> None:
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


# ---- the task model ---------------------------------------------------------------------------------
class TaskModel(nn.Module):
    """A backbone's pooled features followed by a new linear head: ``logits = model(x)``.

    ``x`` is the tensor ``Backbone.prepare`` makes (``x`` for timm, ``pixel_values`` for HF images) or,
    for text, a LongTensor of padded token ids (the attention mask is rebuilt from the pad id), so
    the training loop can index it like any tensor.
    """

    def __init__(self, backbone: Backbone, num_classes: int, cfg: MethodConfig, task: str = "classification"):
        super().__init__()
        if num_classes < (2 if task == "classification" else 1):
            raise ValueError(f"`num_classes` (outputs) must be at least {2 if task == 'classification' else 1} for "
                             f"{task}; got {num_classes}.")
        self.task = task
        self.backbone = backbone
        self.body = backbone.model
        self.cfg = cfg
        self.peft_config = None
        self.num_classes = num_classes
        dim = self._feature_dim()
        self.head = nn.Linear(dim, num_classes).to(backbone.device)
        if task == "regression":
            # outputs in the targets' unit: head(features) * scale + shift, set from the training
            # targets (objectives.init_head), so the head learns standardised values whatever the unit
            self.register_buffer("target_scale", torch.ones(num_classes, device=backbone.device))
            self.register_buffer("target_shift", torch.zeros(num_classes, device=backbone.device))

    # features of the body only (the source head, if any, is not run)
    def features(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            inputs = self.backbone.as_inputs(inputs)
        return self.backbone.pooled_features(inputs)

    def forward(self, x):
        out = self.head(self.features(x))
        if self.task == "regression":
            out = out * self.target_scale + self.target_shift
        return out

    def _feature_dim(self) -> int:
        b = self.backbone
        example = b.example_inputs()
        was = b.model.training
        b.model.eval()
        with torch.no_grad():
            dim = self.features(example).shape[-1]
        b.model.train(was)
        return dim

    # ---- facts ----
    @property
    def trainable_params(self) -> int:
        return count_params(self, trainable_only=True)

    @property
    def total_params(self) -> int:
        return count_params(self)

    @property
    def trainable_ratio(self) -> float:
        return self.trainable_params / self.total_params

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors this method trains (what :func:`save_adapters` writes)."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k in keep}

    def merge(self) -> "TaskModel":
        """Fold LoRA / IA3 updates into the base weights in place (outputs unchanged); returns self."""
        if self.cfg.method not in ("lora", "ia3"):
            raise ZooforgeError(f"method {self.cfg.method!r} has nothing to merge: only LoRA and IA3 updates "
                                "are linear in the base weights.")
        for module in self.body.modules():
            if hasattr(module, "merge") and hasattr(module, "unmerge") and module is not self.body:
                module.merge()
        return self

    def unmerge(self) -> "TaskModel":
        for module in self.body.modules():
            if hasattr(module, "merge") and hasattr(module, "unmerge") and module is not self.body:
                module.unmerge()
        return self


def build(backbone: Backbone, num_classes: int, method: str | MethodConfig = "linear", *,
          task: str = "classification", **options: Any) -> TaskModel:
    """Attach ``method`` to ``backbone`` (in place) and a new head of ``num_classes`` outputs
    (classes; for a regression or multi-label ``task``, its targets or tags); set what trains."""
    cfg = method if isinstance(method, MethodConfig) else MethodConfig(method=method, **options)
    model = TaskModel(backbone, num_classes, cfg, task)
    body = model.body
    if cfg.method in ("adapter", "adaptformer"):
        _attach_adapters(model, cfg)
    elif cfg.method in ("lora", "ia3"):
        _attach_peft(model, cfg)
    for name, p in body.named_parameters():
        if cfg.method == "full":
            p.requires_grad_(True)
        elif cfg.method == "bitfit":
            p.requires_grad_(name.endswith("bias"))
        elif cfg.method in ("adapter", "adaptformer"):
            p.requires_grad_(".adapter." in f".{name}")
        elif cfg.method == "lora":
            p.requires_grad_("lora_" in name)
        elif cfg.method == "ia3":
            p.requires_grad_("ia3_" in name)
        else:
            p.requires_grad_(False)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


# ---- saving and re-attaching --------------------------------------------------------------------------
def save_adapters(task: TaskModel, out_dir: str | Path) -> Path:
    """Write ``adapters.safetensors`` (trainable tensors only) and ``adapters.json`` into ``out_dir``."""
    from safetensors.torch import save

    from zooforge.zoo.cache import atomic_write_bytes

    out = Path(out_dir)
    record = {"model": task.backbone.id, "num_classes": task.num_classes, "config": _cfg_dict(task.cfg),
              "trainable_params": task.trainable_params, "total_params": task.total_params, "task": task.task}
    if task.task == "regression":                  # not trainable, so not in the tensors: the unit
        record["target_scale"] = task.target_scale.tolist()
        record["target_shift"] = task.target_shift.tolist()
    atomic_write_bytes(out / "adapters.safetensors",
                       save(task.trainable_state(), metadata={"zooforge": json.dumps(record)}))
    atomic_write_bytes(out / "adapters.json", json.dumps(record, indent=2).encode())
    return out / "adapters.safetensors"


def load_adapters(backbone: Backbone, path: str | Path) -> TaskModel:
    """Re-attach adapters saved by :func:`save_adapters` to a freshly loaded ``backbone``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "adapters.safetensors"
    if not path.is_file():
        raise ZooforgeError(f"no adapters at {path}.")
    with safe_open(str(path), "pt") as f:
        record = json.loads((f.metadata() or {}).get("zooforge", "{}"))
    if not record:
        raise ZooforgeError(f"{path} carries no zooforge record; was it written by save_adapters?")
    if record["model"] != backbone.id:
        raise ZooforgeError(f"adapters in {path} were trained on {record['model']!r}, not {backbone.id!r}.")
    task = build(backbone, record["num_classes"], MethodConfig(**record["config"]),
                 task=record.get("task", "classification"))
    if task.task == "regression":
        with torch.no_grad():
            task.target_scale.copy_(torch.as_tensor(record["target_scale"]))
            task.target_shift.copy_(torch.as_tensor(record["target_shift"]))
    state = load_file(str(path))
    expected = set(task.trainable_state())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ZooforgeError(f"adapters in {path} do not fit {backbone.id!r}: missing {missing[:5]}, "
                            f"unexpected {extra[:5]}.")
    task.load_state_dict(state, strict=False)
    return task


def _cfg_dict(cfg: MethodConfig) -> dict:
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


# ---- data -------------------------------------------------------------------------------------------
def inputs_for(backbone: Backbone, dataset, batch_size: int = 512) -> torch.Tensor:
    """The whole dataset as one model-input tensor (images preprocessed; text as padded token ids)."""
    if backbone.modality == "text":
        texts = [dataset.text(i) for i in range(len(dataset))]
        return backbone.prepare(texts)["input_ids"]
    key = backbone.input_key
    chunks = []
    for start in range(0, len(dataset), batch_size):
        images = [dataset.image(i) for i in range(start, min(len(dataset), start + batch_size))]
        chunks.append(backbone.prepare(images)[key])
    return torch.cat(chunks)
