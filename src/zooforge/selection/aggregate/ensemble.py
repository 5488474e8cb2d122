"""Logit averaging: the baseline an aggregator has to beat.

The top-``top_k`` models as ``rank`` orders them (or ``models``), each fine-tuned alone through :func:`~zooforge.
tuning.tune.tune` (the one loop, the same epochs, ``lr="auto"`` to validate each one's learning rate
inside the training split), and their logits averaged on the held-out split. With ``top_k=1`` it is
the single best model fine-tuned on its own. It costs k trainings and k times one model's inference:
an aggregator that costs one model at inference has to beat ``top_k=1``; one that costs several has
to beat this too, or it is paying for what plain averaging gives.
"""

from __future__ import annotations

import torch

from zooforge.selection.aggregate._common import AggregateResult, Timer, inference_gmacs, load_members, split_dataset
from zooforge.tuning.loop import TrainConfig, outputs
from zooforge.tuning.methods import inputs_for

__all__ = ["ensemble"]


def ensemble(catalogue, dataset, *, top_k: int = 3, models=None, method: str = "full", lr: float | str | None = None,
             lr_grid=None, config: TrainConfig | None = None, split: float = 0.8, seed: int = 0, cache_dir=None,
             ordering=None, progress: bool = False) -> AggregateResult:
    """Fine-tune each of the top-``top_k`` (or ``models``) alone with ``method`` and average their logits.
    ``lr``: a peak rate, ``"auto"`` (validated per member, over ``lr_grid``: default the method's
    ``LR_GRID``), or None for ``config.lr``. ``ordering``: what ranks the zoo (``load_members``)."""
    from zooforge.tuning.tune import tune

    ds, train_ds, test_ds = split_dataset(dataset, split, seed)
    unranked: dict[str, str] = {}
    members = load_members(catalogue, models, top_k if not models else None, train_ds, ordering=ordering,
                           cache_dir=cache_dir, progress=progress, load=False,          # tune loads each one itself
                           unplaced=unranked)
    cfg = config or TrainConfig(epochs=10, lr=1e-3, progress=progress, seed=seed)
    y_te = torch.as_tensor(test_ds.labels)
    logits, runs, gmacs = [], [], 0.0
    with Timer() as timer:
        for b in members:
            run = tune(b.id, ds, method, catalogue=members, loop=cfg, lr=lr, lr_grid=lr_grid, split=split, seed=seed)
            x_te = inputs_for(run.task.backbone, test_ds)
            logits.append(outputs(run.task, x_te).float())
            gmacs += inference_gmacs(run.task, x_te)
            runs.append(run)
        accuracy = float((torch.stack(logits).mean(0).argmax(1) == y_te).double().mean())
    return AggregateResult(
        "ensemble", [b.id for b in members], [1.0 / len(members)] * len(members), accuracy,
        sum(r.trainable_params for r in runs), sum(r.total_params for r in runs), timer.seconds,
        [row | {"member": r.model} for r in runs for row in r.history],
        {"method": method, "lr": [r.lr for r in runs], "member_accuracy": [r.accuracy for r in runs],
         "unranked": unranked},
        None, gmacs)
