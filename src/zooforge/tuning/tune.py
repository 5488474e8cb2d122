"""``tune``: fine-tune one model on a dataset with one method, from a catalogue id or a hub name.

The peak learning rate matters more than anything else a user sets, and it differs by method: a
frozen backbone's head, biases, adapters and rescaling vectors want about ten times the rate that
moves every weight. ``DEFAULT_LR`` holds one rate per method; ``lr="auto"`` (``zooforge tune --lr
auto``) instead validates the method's ``LR_GRID`` on a stratified 80/20 split of the training split
(fresh weights per trial) and trains on the whole training split with the winner. In
``python benchmarks/tuning.py`` the validated rate of full fine-tuning ranges from 1e-4 (the real
MiniLM) to 3e-3 (the demo ResNet), and Houlsby adapters' from 3.3e-3 to 3e-2: no single number
serves every model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from zooforge.config import TuneConfig, build_config
from zooforge.errors import ZooforgeError
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.tuning.methods import MethodConfig, TaskModel, build, inputs_for, save_adapters
from zooforge.tuning.objectives import METRIC_NAMES, init_head
from zooforge.zoo.cache import atomic_write_bytes

__all__ = ["DEFAULT_LR", "LR_GRID", "TuneResult", "choose_by_validation", "resolve_entry", "tune"]

# One peak learning rate per method (AdamW, batch 64, warm-up + cosine), and the grid ``lr="auto"``
# validates around it.
DEFAULT_LR = {"linear": 1e-2, "full": 1e-3, "bitfit": 1e-2, "adapter": 1e-2, "adaptformer": 1e-2,
              "lora": 3e-3, "ia3": 1e-2}
LR_GRID = {m: (lr / 10, lr / 3, lr, 3 * lr) for m, lr in DEFAULT_LR.items()}
# ``auto`` choices fit on this share of the training split and validate on the rest.
VALIDATION_SPLIT = 0.8


@dataclass
class TuneResult:
    model: str
    method: str
    accuracy: float                 # held-out split: accuracy, or R^2 / mAP for those tasks (``metric``)
    trainable_params: int
    total_params: int
    peak_memory_mb: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    lr: float | None = None                     # the peak learning rate of the final run
    lr_trials: list[dict] = field(default_factory=list)   # lr="auto": validation accuracy per rate
    task: TaskModel | None = field(default=None, repr=False)
    metric: str = "accuracy"                    # what ``accuracy`` holds: accuracy, r2 or map

    @property
    def trainable_ratio(self) -> float:
        return self.trainable_params / self.total_params

    def record(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "task"}
        out["trainable_ratio"] = self.trainable_ratio
        return out


def resolve_entry(model: str, catalogue=None):
    """A catalogue entry by id (``catalogue`` given: a file, a built-in name or a list of entries), else a
    timm name, else a Hugging Face id/folder."""
    from zooforge.zoo import CatalogueEntry, load_catalogue

    if catalogue is not None:
        entries = {e.id: e for e in (catalogue if isinstance(catalogue, list) else load_catalogue(catalogue))}
        if model not in entries:
            raise ZooforgeError(f"model {model!r} is not in catalogue {catalogue}; it has {sorted(entries)[:10]}.")
        return entries[model]
    import timm

    if timm.is_model(model) or timm.is_model(model.split(".")[0]):
        return CatalogueEntry(id=model, source="timm", name=model)
    from pathlib import Path

    from zooforge.zoo.catalogue import BUILTIN_CATALOGUES

    if not Path(model).expanduser().is_dir():
        for name in BUILTIN_CATALOGUES:            # a built-in catalogue's id is not a hub name
            if any(e.id == model for e in load_catalogue(name)):
                raise ZooforgeError(f"{model!r} is an id of the built-in catalogue {name!r}, not a timm or Hugging "
                                    f"Face name: did you mean --catalogue {name}?")
    return CatalogueEntry(id=model, source="hf", name=model)


def choose_by_validation(values: Sequence, trial: Callable[[object], float], name: str,
                         prefer_larger: bool = False) -> tuple[object, list[dict]]:
    """``trial(value)`` (a validation accuracy) for every value; the best value, ties going to the
    smaller (or, with ``prefer_larger``, the larger) one, and a ``{name, "val_accuracy"}`` row per value."""
    if not values:
        raise ValueError(f"no {name} values to choose from.")
    trials = [{name: value, "val_accuracy": trial(value)} for value in values]
    sign = 1 if prefer_larger else -1
    best = max(trials, key=lambda t: (t["val_accuracy"], sign * t[name]))
    return best[name], trials


def tune(model: str, dataset, config: TuneConfig | str | None = None, *, catalogue=None,
         out_dir: str | Path | None = None, loop: TrainConfig | None = None, **options) -> TuneResult:
    """Fine-tune ``model`` on the train part of a stratified split of ``dataset``; report the held-out
    score (accuracy; R^2 or mAP for a regression or multi-label target, ``TuneResult.metric``).

    ``config``: a :class:`~zooforge.config.TuneConfig`, or a method name as shorthand; keyword
    ``options`` set or override its fields (``tune(m, data, "lora", rank=4, lr="auto")``). Its ``lr``:
    a peak learning rate; ``"auto"`` to choose one from ``lr_grid`` (default ``LR_GRID[method]``) by
    validation inside the training split (module docstring); None for ``loop.lr`` when ``loop`` is
    given, else ``DEFAULT_LR[method]``. ``loop``: the training loop's own settings (warm-up,
    patience, AMP, ...); when given, its epochs, batch size, seed, device and checkpoint are the
    loop's. Without it the loop takes the config's, and with ``out_dir`` checkpoints every epoch to
    ``out_dir/checkpoint`` (resumed only by the same run: the checkpoint's key). The held-out split
    is scored once, at the end, and never selected on."""
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone

    if isinstance(config, str):
        config, options = None, {"method": config, **options}
    if isinstance(config, TrainConfig):
        raise TypeError("tune(): a TrainConfig goes to `loop=` (the training loop's own settings); `config` takes a "
                        "TuneConfig or a method name.")
    cfg = build_config(TuneConfig, config, options, "tune")
    method = cfg.method
    method_config = MethodConfig(method=method, **cfg.method_options())
    seed = cfg.seed
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset, task=cfg.task)
    train_ds, test_ds = ds.split(cfg.split, seed)
    backbone = Backbone.from_entry(resolve_entry(model, catalogue))
    x_tr, x_te = inputs_for(backbone, train_ds), inputs_for(backbone, test_ds)
    y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
    loop_cfg = loop or TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed, device=cfg.device,
                                   lr=DEFAULT_LR[method], progress=cfg.progress,
                                   checkpoint_dir=str(Path(out_dir) / "checkpoint") if out_dir is not None else None)
    trials: list[dict] = []
    if cfg.lr == "auto":
        fit, val = (torch.as_tensor(i) for i in train_ds.split_indices(VALIDATION_SPLIT, seed + 1))
        quiet = replace(loop_cfg, checkpoint_dir=None, progress=False)

        def trial(value: float) -> float:
            torch.manual_seed(seed)
            trial_task = build(copy.deepcopy(backbone), ds.num_classes, method_config, task=ds.task)  # trains in place
            init_head(trial_task, ds.task, y_tr[fit])
            if train(trial_task, x_tr[fit], y_tr[fit], replace(quiet, lr=value)).diverged:
                return float("-inf")                # never chosen while another rate trains
            return evaluate_accuracy(trial_task, x_tr[val], y_tr[val])

        chosen, trials = choose_by_validation(cfg.lr_grid or LR_GRID[method], trial, "lr")
        loop_cfg = replace(loop_cfg, lr=float(chosen))
    elif cfg.lr is not None:
        loop_cfg = replace(loop_cfg, lr=float(cfg.lr))
    torch.manual_seed(seed)
    model = build(backbone, ds.num_classes, method_config, task=ds.task)
    init_head(model, ds.task, y_tr)
    res = train(model, x_tr, y_tr, loop_cfg).check(
        f"fine-tuning {backbone.id} at lr {loop_cfg.lr:g}",
        "give --lr-grid lower rates (validation chose this one)" if cfg.lr == "auto" else
        "lower the learning rate (--lr), or let tune choose one by validation (--lr auto)")
    # the held-out split is only scored, never selected on
    result = TuneResult(backbone.id, method, evaluate_accuracy(model, x_te, y_te), model.trainable_params,
                        model.total_params, res.peak_memory_mb, res.seconds, res.history, loop_cfg.lr, trials, model,
                        METRIC_NAMES[ds.task])
    if out_dir is not None:
        save_adapters(model, out_dir)
        record = result.record() | {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
                                    "classes": list(ds.classes), "target_kind": ds.task, "config": asdict(loop_cfg),
                                    "method_options": cfg.method_options(), "train_share": cfg.split,
                                    "train_samples": len(train_ds), "test_samples": len(test_ds)}
        atomic_write_bytes(Path(out_dir) / "result.json", json.dumps(record, indent=2).encode())
    return result
