"""The training loop: one flat loop, fed a config, resumable to the bit.

After nanoGPT's ``train.py``: a pure learning-rate schedule (linear warm-up, cosine decay), AdamW with
weight decay only on matrices, gradient accumulation, autocast on GPU, early stopping on a validation
split (given, or carved from the training rows; never the data a caller reports on), and a checkpoint
after every epoch holding everything needed to continue exactly (model, optimiser, epoch, RNG states,
history). Resuming from a checkpoint of the same config and seed gives
the same final weights as an uninterrupted run on CPU; a checkpoint of another run is refused
(:mod:`zooforge.tuning.checkpoint`).

Inputs are one tensor, or a tuple of tensors indexed together (``model(*batch)``), for models that
take side information per sample (B-Tuning's teacher predictions). A model may leave a scalar tensor
in ``model.aux_loss`` during a training forward (a regulariser, a load-balancing term); the loop adds
it to the loss. A term that needs the labels leaves a callable instead: the loop calls it with the
batch's targets and the task's loss function (``loss(outputs, targets)``, batch-mean) and adds what it
returns (Hub-Pathway's members, each trained on the inputs routed to it).

Labels say the task (:mod:`zooforge.tuning.objectives`): int64 codes (N,) train with cross-entropy
and report accuracy; float (N, K) targets with variance-scaled MSE and R^2; int (N, K) tag
indicators with binary cross-entropy and mAP. "Accuracy" in the history and results means that
task's score.

A loss that becomes NaN or infinite and takes the weights with it ends the training after that step
(``TrainResult.diverged`` says where; under fp16 the gradient scaler skips such a step and training
goes on): the weights are then no result, and every caller that reports a trained model's score
refuses them (``TrainResult.check``); a trial among others (a learning rate, a strength, a
successive-halving round) is judged on them and loses.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from zooforge.errors import ZooforgeError, finite_number
from zooforge.tuning.checkpoint import check_resumable, run_key
from zooforge.tuning.objectives import Objective, task_of, objective
from zooforge.zoo.cost import count_params

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train", "learning_rate", "outputs", "predict", "evaluate",
           "evaluate_accuracy"]


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "samples per optimiser micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.01, metadata={"help": "final lr as a fraction of the peak"})
    warmup_frac: float = field(default=0.05, metadata={"help": "share of steps spent warming up"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decay on >=2-D parameters"})
    label_smoothing: float = 0.0
    patience: int | None = field(default=None, metadata={"help": "epochs without val improvement before stopping"})
    val_fraction: float = field(default=0.1, metadata={
        "help": "with patience and no validation set given: the stratified share of the training rows held out"})
    seed: int = 0
    device: str | None = None
    amp: bool = field(default=True, metadata={"help": "bf16/fp16 autocast on GPU (ignored on CPU)"})
    checkpoint_dir: str | None = field(default=None, metadata={"help": "save/resume here every epoch"})
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}.")
        finite_number(self.lr, "lr", above=0)
        finite_number(self.weight_decay, "weight_decay", at_least=0)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"`label_smoothing` must be in [0, 1); got {self.label_smoothing}.")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"`warmup_frac` must be in [0, 1); got {self.warmup_frac}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"`min_lr_ratio` must be in [0, 1]; got {self.min_lr_ratio}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"`patience` must be at least 1 (or None); got {self.patience}.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in (0, 1); got {self.val_fraction}.")


@dataclass
class TrainResult:
    history: list[dict]                # one row per epoch: loss, train/val accuracy, lr, seconds
    best_val_accuracy: float | None
    trainable_params: int
    total_params: int
    peak_memory_mb: float
    seconds: float
    stopped_early: bool
    # why training stopped with a loss that is not finite, where the model returned is that one (early
    # stopping that restored an earlier epoch is not divergence); None when it did not
    diverged: str | None = None

    def check(self, what: str = "training", fix: str = "lower the learning rate (--lr)") -> "TrainResult":
        """Self, or a :class:`TrainingDiverged` saying ``what`` diverged and how to ``fix`` it: what a
        caller that reports this model's score calls first (a trial among others may simply lose)."""
        if self.diverged:
            raise TrainingDiverged(f"{what} diverged: {self.diverged}. Its weights are not a result; {fix}.")
        return self


class TrainingDiverged(ZooforgeError):
    """The training loss became NaN or infinite, so the model trained is no result."""


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    warmup = int(cfg.warmup_frac * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _micro_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size``; a lone last sample joins the batch before it:
    batch norm cannot train on a batch of one (no spread to normalise by; it raised where a map is 1x1)."""
    micro = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(micro) > 1 and len(micro[-1]) == 1:
        micro[-2:] = [torch.cat(micro[-2:])]
    return micro


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weights decay, biases and norms do not. A parameter with an ``lr_scale`` attribute (a
    method's newly initialised parts, e.g. Zoo-Tuning's gates) trains at that multiple of the rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters.")
    # (decays, lr_scale) -> parameters; the two plain groups always first, as before there were scales,
    # so a checkpoint's optimiser state still lines up with them
    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    for p in params:
        groups.setdefault((p.dim() >= 2, float(getattr(p, "lr_scale", 1.0))), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr_scale": scale}
                              for (decays, scale), ps in groups.items()], lr=cfg.lr)


Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def _take(x: Inputs, idx, device) -> tuple[torch.Tensor, ...]:
    parts = x if isinstance(x, tuple) else (x,)
    return tuple(p[idx].to(device, non_blocking=True) for p in parts)


def _rows(x: Inputs, idx) -> Inputs:
    return tuple(p[idx] for p in x) if isinstance(x, tuple) else x[idx]


def _length(x: Inputs) -> int:
    return len(x[0]) if isinstance(x, tuple) else len(x)


@torch.no_grad()
def outputs(model: nn.Module, x: Inputs, batch_size: int = 256) -> torch.Tensor:
    """The model's raw outputs (logits, or regression predictions) for every row of ``x``, in eval
    mode, as float32 on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(*_take(x, slice(i, i + batch_size), device)).float().cpu()
           for i in range(0, _length(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict(model: nn.Module, x: Inputs, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (argmax of the logits) for every row of ``x``, in eval mode, on the CPU."""
    out = outputs(model, x, batch_size)
    return out.argmax(-1) if len(out) else torch.empty(0, dtype=torch.long)


def evaluate(model: nn.Module, x: Inputs, y: torch.Tensor, task: "str | Objective | None" = None,
             batch_size: int = 256) -> float:
    """The task's score (accuracy, R^2 or mAP; the task is inferred from ``y`` when not given)."""
    obj = task if isinstance(task, Objective) else objective(task or task_of(y))
    return obj.score(outputs(model, x, batch_size), y.cpu())


def evaluate_accuracy(model: nn.Module, x: Inputs, y: torch.Tensor, batch_size: int = 256) -> float:
    """The held-out score of ``y``'s task: accuracy for class codes (R^2, mAP for the others)."""
    return evaluate(model, x, y, batch_size=batch_size)


def train(model: nn.Module, train_x: Inputs, train_y: torch.Tensor, cfg: TrainConfig,
          val_x: Inputs | None = None, val_y: torch.Tensor | None = None) -> TrainResult:
    """Train ``model`` (logits = model(x)) on in-memory tensors with the labels' task's loss
    (cross-entropy for classes); see the module docstring.

    ``val_x``/``val_y`` are the validation set: accuracy on it is recorded each epoch and, with
    ``cfg.patience``, decides when to stop and which epoch's weights to keep. Never pass the data you
    will report on: that selects on it. With ``cfg.patience`` and no validation set, a stratified
    ``cfg.val_fraction`` of the training rows is held out (seeded by ``cfg.seed``) and not trained on.
    """
    if _length(train_x) != len(train_y) or len(train_y) == 0:
        raise ValueError(f"train_x has {_length(train_x)} samples and train_y {len(train_y)}; need equal, non-zero.")
    task = task_of(train_y)
    if cfg.patience is not None and val_x is None:
        from zooforge.zoo.data import stratified_split_indices
        from zooforge.zoo.targets import strata

        fit, held = (torch.as_tensor(i) for i in stratified_split_indices(strata(train_y.cpu().numpy(), task),
                                                                            1 - cfg.val_fraction, cfg.seed))
        if len(held) == 0:
            raise ValueError("early stopping needs a validation set, and every class has a single training "
                             "sample; pass val_x/val_y or leave `patience` unset.")
        train_x, train_y, val_x, val_y = _rows(train_x, fit), train_y[fit], _rows(train_x, held), train_y[held]
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(_micro_batches(torch.arange(len(train_y)), cfg.batch_size)) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    obj = objective(task, train_y, cfg.label_smoothing)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best, best_state, since_best, start_epoch = None, None, 0, 0
    ckpt = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir else None
    key = run_key(model, cfg, train_x, train_y, val_x, val_y) if ckpt is not None else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        check_resumable(ckpt, state.get("run_key"), key)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        shuffler.set_state(state["shuffler"])
        torch.set_rng_state(state["torch_rng"])
        history, best, since_best, start_epoch = state["history"], state["best"], state["since_best"], state["epoch"]
        best_state = state.get("best_state")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                if device.type == "cuda" and cfg.amp else torch.autocast("cpu", enabled=False))
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported())
    started = time.perf_counter()
    stopped_early, diverged, bad_loss = False, None, None
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience is not None and since_best >= cfg.patience:
            stopped_early = True
            break
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y), generator=shuffler)
        total_loss, correct, seen = 0.0, 0, 0
        micro = _micro_batches(order, cfg.batch_size)
        for k in range(0, len(micro), cfg.grad_accum):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, cfg) * group.get("lr_scale", 1.0)
            group_batches = micro[k:k + cfg.grad_accum]
            n_group = sum(len(b) for b in group_batches)
            for idx in group_batches:
                x, y = _take(train_x, idx, device), train_y[idx].to(device, non_blocking=True)
                with autocast:
                    logits = model(*x)
                    loss = obj.loss(logits.float(), y)
                    aux = getattr(model, "aux_loss", None)
                    if callable(aux):
                        aux = aux(y, obj.loss)
                    if aux is not None:
                        loss = loss + aux.float()
                    # scale so the summed gradient equals that of one batch of n_group samples
                    loss = loss * (len(idx) / n_group)
                scaler.scale(loss).backward()
                value = loss.item()
                if not math.isfinite(value):
                    bad_loss = value
                total_loss += value * n_group
                correct += obj.hits(logits, y) or 0
                seen += len(idx)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # a loss that is not finite, and weights that followed it: under fp16 the scaler skips such a
            # step and training goes on; otherwise the weights are NaN now, and no later step mends them
            if bad_loss is not None and not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                diverged = (f"the training loss became {bad_loss} at epoch {epoch + 1}, step {step} of "
                            f"{total_steps} (peak learning rate {cfg.lr:g}), and the weights followed")
                break               # the step taken: its weights are what a trial among others is judged on
            bad_loss = None
        row = {"epoch": epoch + 1, "loss": total_loss / seen}
        if task == "classification":
            row["train_accuracy"] = correct / seen
        row |= {"lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start}
        if val_x is not None and val_y is not None and not diverged:     # (NaN weights are never the best)
            row["val_accuracy"] = evaluate(model, val_x, val_y, obj)       # the task's score
            if best is None or row["val_accuracy"] > best:
                best, since_best = row["val_accuracy"], 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if cfg.patience else None
            else:
                since_best += 1
        history.append(row)
        if cfg.progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            print(f"  epoch {epoch + 1}/{cfg.epochs}: {shown}", flush=True)
        if diverged:
            break                   # no later epoch, and no checkpoint a resume would continue from
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                        "shuffler": shuffler.get_state(), "torch_rng": torch.get_rng_state(),
                        "history": history, "best": best, "since_best": since_best, "best_state": best_state,
                        "config": asdict(cfg), "run_key": key}, tmp)
            tmp.replace(ckpt)
    if cfg.patience is not None and best_state is not None:
        model.load_state_dict(best_state)   # early stopping keeps the best epoch's weights
        diverged = None                     # ... which came before the loss stopped being finite
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    return TrainResult(history, best, count_params(model, trainable_only=True), count_params(model),
                       peak, time.perf_counter() - started, stopped_early, diverged)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20
