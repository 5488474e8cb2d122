"""What training minimises and evaluation reports, per target kind (``zooforge.zoo.targets``).

* classification: cross-entropy; accuracy.
* regression: mean squared error of each target divided by its variance on the training rows (so
  targets in any unit train alike, and the loss of predicting the mean is 1); R^2, averaged over
  targets. Heads predict in the targets' own unit (``init_head`` starts them at the training mean).
* multi-label: binary cross-entropy of each tag's logit; mean average precision (mAP) over the
  tags that have both positives and negatives in the evaluated rows.

Every score is higher-is-better, so validation choices (learning rates, early stopping) compare
them as they compare accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Objective", "objective", "task_of", "METRIC_NAMES", "METRIC_LABELS", "init_head"]

METRIC_NAMES = {"classification": "accuracy", "regression": "r2", "multilabel": "map"}
METRIC_LABELS = {"accuracy": "accuracy", "r2": "R^2", "map": "mAP"}      # each metric as printed


@dataclass(frozen=True)
class Objective:
    task: str
    label_smoothing: float = 0.0
    scale: torch.Tensor | None = None      # regression: each target's variance on the training rows

    @property
    def metric(self) -> str:
        return METRIC_NAMES[self.task]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        if self.task == "regression":
            if self.scale is None:
                raise ValueError("a regression loss needs the training targets' scale: objective('regression', train_y).")
            return ((out - y.float()).square() / self.scale.to(out.device)).mean()
        return nn.functional.binary_cross_entropy_with_logits(out, y.float())

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> int | None:
        """Correct predictions in a batch (classification's running train accuracy); None otherwise."""
        return int((out.argmax(-1) == y).sum().item()) if self.task == "classification" else None

    def per_sample(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each sample's share of the evidence that one model beats another on the same rows, higher
        is better (a paired test's input, :mod:`zooforge.tuning.paired`): 0/1 correctness for
        classes; minus the squared error over each target's variance on these rows for regression
        (R^2 = 1 - its mean's negation, so differences in R^2 are differences in its mean); minus
        the binary cross-entropy summed over tags for multi-label (mAP does not split by sample)."""
        if self.task == "classification":
            return (out.argmax(-1) == y).double()
        if self.task == "regression":
            y = y.double().reshape(len(y), -1)
            total = (y - y.mean(0)).square().mean(0).clamp_min(torch.finfo(torch.float64).tiny)
            return -((out.double().reshape(len(y), -1) - y).square() / total).mean(1)
        return -nn.functional.binary_cross_entropy_with_logits(out.double(), y.double(), reduction="none").sum(1)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The task's metric of outputs ``out`` (N, K) against targets ``y``."""
        if len(y) == 0:
            return float("nan")
        if self.task == "classification":
            return float((out.argmax(-1) == y).float().mean())
        if self.task == "regression":
            y = y.double().reshape(len(y), -1)
            total = (y - y.mean(0)).square().sum(0)
            r2 = 1 - (out.double() - y).square().sum(0) / total
            return float(r2[total > 0].mean()) if (total > 0).any() else float("nan")
        from sklearn.metrics import average_precision_score

        y, out = y.numpy() > 0.5, out.double().numpy()
        both = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        return float(sum(average_precision_score(y[:, k], out[:, k]) for k in both) / len(both)) if both else float("nan")


def objective(task: str, train_y: torch.Tensor | None = None, label_smoothing: float = 0.0) -> Objective:
    """The Objective of ``task``; regression's loss scale comes from ``train_y``."""
    if task not in METRIC_NAMES:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(METRIC_NAMES)}.")
    scale = None
    if task == "regression" and train_y is not None:      # without them, it can score but not train
        scale = train_y.double().reshape(len(train_y), -1).var(0, unbiased=False).clamp_min(1e-12).float()
    return Objective(task, label_smoothing, scale)


def task_of(y: torch.Tensor) -> str:
    """The kind a label tensor is, by its encoding (``zooforge.zoo.targets``; ``targets.infer_task``
    reads raw labels instead): int codes (N,) classes; float (N, K) regression; int (N, K) tags."""
    if y.ndim == 1:
        return "classification"
    return "regression" if y.is_floating_point() else "multilabel"


@torch.no_grad()
def init_head(model: nn.Module, task: str, train_y: torch.Tensor) -> None:
    """Fit a new head's offsets to the training rows. Regression: a model with ``target_scale`` /
    ``target_shift`` buffers (``TaskModel``) maps its head's output by the targets' standard
    deviation and mean, so the head learns standardised values in any unit (AdamW moves a weight
    about ``lr`` a step: a target in the hundreds would take hundreds of steps to reach); a bare
    linear layer starts its bias at the mean. Multi-label: the bias starts at each tag's log-odds."""
    head = getattr(model, "head", model)
    y = train_y.double().reshape(len(train_y), -1)
    if task == "regression":
        if hasattr(model, "target_scale"):
            model.target_scale.copy_(y.std(0, unbiased=False).clamp_min(1e-12).to(model.target_scale))
            model.target_shift.copy_(y.mean(0).to(model.target_shift))
        else:
            head.bias.copy_(y.mean(0).to(head.bias))
    elif task == "multilabel":
        rate = y.mean(0).clamp(1e-3, 1 - 1e-3)
        head.bias.copy_(torch.log(rate / (1 - rate)).to(head.bias))
