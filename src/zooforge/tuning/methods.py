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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooforge.config import TUNING_METHODS
from zooforge.errors import ZooforgeError
from zooforge.zoo.backbone import Backbone
from zooforge.tuning.adapters import Adapter, attach_adapters, attach_peft, default_targets
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
        dim = backbone.feature_dim
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
        attach_adapters(model, cfg)
    elif cfg.method in ("lora", "ia3"):
        attach_peft(model, cfg)
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
