"""``tune``: fine-tune one model on a dataset with one method, from a catalogue id or a hub name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from zooforge.errors import ZooforgeError
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.tuning.methods import MethodConfig, TaskModel, build, inputs_for, save_adapters
from zooforge.zoo.cache import atomic_write_bytes

__all__ = ["TuneResult", "resolve_entry", "tune"]


@dataclass
class TuneResult:
    model: str
    method: str
    accuracy: float                 # held-out split
    trainable_params: int
    total_params: int
    peak_memory_mb: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    task: TaskModel | None = field(default=None, repr=False)

    @property
    def trainable_ratio(self) -> float:
        return self.trainable_params / self.total_params

    def record(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "task"}
        out["trainable_ratio"] = self.trainable_ratio
        return out


def resolve_entry(model: str, catalogue=None):
    """A catalogue entry by id (``catalogue`` given), else a timm name, else a Hugging Face id/folder."""
    from zooforge.zoo import CatalogueEntry, load_catalogue

    if catalogue is not None:
        entries = {e.id: e for e in load_catalogue(catalogue)}
        if model not in entries:
            raise ZooforgeError(f"model {model!r} is not in catalogue {catalogue}; it has {sorted(entries)[:10]}.")
        return entries[model]
    import timm

    if timm.is_model(model) or timm.is_model(model.split(".")[0]):
        return CatalogueEntry(id=model, source="timm", name=model)
    return CatalogueEntry(id=model, source="hf", name=model)


def tune(model: str, dataset, method: str = "linear", *, catalogue=None, config: TrainConfig | None = None,
         split: float = 0.8, seed: int = 0, out_dir: str | Path | None = None, **method_options) -> TuneResult:
    """Fine-tune ``model`` on the train part of a stratified split of ``dataset``; report held-out accuracy."""
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone

    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    train_ds, test_ds = ds.split(split, seed)
    backbone = Backbone.from_entry(resolve_entry(model, catalogue))
    torch.manual_seed(seed)
    task = build(backbone, ds.num_classes, MethodConfig(method=method, **method_options))
    x_tr, x_te = inputs_for(backbone, train_ds), inputs_for(backbone, test_ds)
    y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
    cfg = config or TrainConfig(seed=seed)
    res = train(task, x_tr, y_tr, cfg)   # the held-out split is only scored, never selected on
    result = TuneResult(backbone.id, method, evaluate_accuracy(task, x_te, y_te), task.trainable_params,
                        task.total_params, res.peak_memory_mb, res.seconds, res.history, task)
    if out_dir is not None:
        save_adapters(task, out_dir)
        record = result.record() | {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
                                    "classes": list(ds.classes), "config": asdict(cfg)}
        atomic_write_bytes(Path(out_dir) / "result.json", json.dumps(record, indent=2).encode())
    return result
