"""What the three aggregation methods share: members, data splits, results and saving."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zooforge.errors import ZooforgeError

__all__ = ["AggregateResult", "inference_gmacs", "load_members", "split_dataset", "save_result", "raw_images"]


@dataclass
class AggregateResult:
    method: str
    members: list[str]                 # catalogue ids, in the order of ``weights``
    weights: list[float]               # B-Tuning π, Zoo-Tuning mean gates, Hub-Pathway mean routing
    accuracy: float                    # on the held-out split
    trainable_params: int
    total_params: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    gmacs: float | None = None         # inference cost of one held-out input, as it ran (see ``inference_gmacs``)

    def record(self) -> dict:
        """Everything but the model, for JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def load_members(catalogue, models=None, top_k: int | None = None, dataset=None, *, ordering=None, cache_dir=None,
                 progress: bool = False, keep_all: bool = False, load: bool = True, unplaced: dict | None = None):
    """Backbones for ``models`` (ids or globs) or, with ``top_k``, the top-k of ``catalogue`` as ``rank``
    orders them on ``dataset``: by default the ordering ``zooforge rank`` recommends (the shipped
    default over the default estimators); ``ordering`` (an Ordering or its name, e.g. ``"logme"``, the
    papers' choice) another. Features go through the cache at ``cache_dir``, where a caller that reuses
    them will look. ``keep_all``: every model that ``models`` names, in that order (one that cannot be
    scored is an error, not left out). ``load=False``: their catalogue entries instead, for a caller
    that loads each model itself. ``unplaced``: a dict that receives the models the ranking had to
    leave out, with why (``ranked_ids``), for the caller to say."""
    from zooforge.selection.rank import ranked_ids
    from zooforge.zoo import filter_entries, load_catalogue
    from zooforge.zoo.backbone import Backbone

    entries = catalogue if isinstance(catalogue, list) else load_catalogue(catalogue)
    entries = filter_entries(entries, list(models) if models else None)
    if not entries:
        raise ZooforgeError("no catalogue models to aggregate" + (f" match {list(models)}" if models else "") + ".")
    if keep_all:
        top_k = len(entries)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"`top_k` must be at least 1; got {top_k}.")
        keep = ranked_ids(entries, dataset, ordering, cache_dir=cache_dir, progress=progress, unplaced=unplaced)[:top_k]
        if keep_all and len(keep) < len(entries):
            lost = [e.id for e in entries if e.id not in keep]
            said = f"the ordering {ordering if isinstance(ordering, str) else ordering.name}" if ordering else \
                "the ordering `zooforge rank` recommends"
            raise ZooforgeError(f"{lost} could not be scored on this data by the estimators of {said}, so they cannot "
                                "be ordered; see `zooforge rank` for the errors, or leave them out.")
        by_id = {e.id: e for e in entries}
        entries = [by_id[m] for m in keep]
    return [Backbone.from_entry(e) for e in entries] if load else entries


def split_dataset(dataset, fraction: float = 0.8, seed: int = 0):
    from zooforge.zoo import load_dataset

    from zooforge.zoo.targets import require_classification

    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    require_classification(ds, "aggregation (B-Tuning, Zoo-Tuning, Hub-Pathway) combines class predictions and "
                               "trains classifier heads")
    train, test = ds.split(fraction, seed)
    return ds, train, test


def raw_images(dataset, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) float images in [0, 1] at ``size``: the shared input of heterogeneous members,
    each of which then resizes and normalises for itself."""
    from torchvision.transforms.v2 import functional as TF

    if dataset.modality != "image":
        raise ZooforgeError("this aggregation method takes image datasets.")
    out = torch.empty(len(dataset), 3, *size)
    for i in range(len(dataset)):
        img = torch.from_numpy(np.array(dataset.image(i), copy=True)).permute(2, 0, 1)
        out[i] = TF.resize(img, list(size), antialias=True).float() / 255.0
    return out


def inference_gmacs(model: nn.Module, x: torch.Tensor) -> float:
    """GMACs of ``model`` on the one input ``x[:1]``, in eval mode: what a prediction costs, counted as it
    runs (Hub-Pathway's routed members only, Zoo-Tuning's per-sample kernel mixing, every head)."""
    from zooforge.zoo.cost import count_gmacs

    return count_gmacs(model, x[:1])


def save_result(result: AggregateResult, out_dir: str | Path) -> Path:
    from safetensors.torch import save

    from zooforge.zoo.cache import atomic_write_bytes

    out = Path(out_dir)
    if result.model is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        atomic_write_bytes(out / "model.safetensors", save(state))
    atomic_write_bytes(out / "result.json", json.dumps(result.record(), indent=2, default=float).encode())
    return out


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
