"""The extraction engine: (backbone, dataset) -> FeatureSet, once, cached.

One batched forward pass under ``torch.inference_mode`` yields the pooled features, the source head's
probabilities and any requested intermediate layers. GPU when present (cuda > mps > cpu), with
bf16/fp16 autocast and channels_last there; features come back as float32. Work is cut into shards
that are cached as they finish, so an interrupted extraction resumes from its last finished shard.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from zooforge.zoo.backbone import Backbone
from zooforge.zoo.cache import FeatureCache, cache_key
from zooforge.zoo.cost import Cost
from zooforge.zoo.data import Dataset

__all__ = ["FeatureSet", "extract", "pick_device"]

SHARD_SIZE = 4096          # samples per resumable shard
_VERSIONED = ("torch", "timm", "transformers", "numpy")
# Bump when the engine's output for the same inputs changes (it is part of every cache key).
ENGINE_VERSION = 1


@dataclass
class FeatureSet:
    """Everything extracted from one (model, dataset, layers, transform)."""

    features: np.ndarray                     # (N, D) float32 pooled pre-logit features
    labels: np.ndarray                       # (N,) int64 codes into ``classes``; (N, K) for other tasks
    classes: tuple[str, ...]
    source_probs: np.ndarray | None = None   # (N, Z) float32 softmax of the source head
    layers: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (N, C_l) pooled
    provenance: dict = field(default_factory=dict)
    task: str = "classification"             # the target kind (zooforge.zoo.targets)

    def inputs(self) -> dict[str, np.ndarray | None]:
        """The arrays an estimator may need (see ``zooforge.metrics.INPUTS``)."""
        return {"features": self.features, "source_probs": self.source_probs}

    def __len__(self) -> int:
        return len(self.labels)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def library_versions() -> dict[str, str]:
    out = {}
    for pkg in _VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _key_parts(backbone: Backbone, dataset: Dataset, layers: Sequence[str]) -> dict:
    return {
        "engine": ENGINE_VERSION,
        "model": backbone.id,
        "weights": backbone.weights_hash,
        "dataset": dataset.fingerprint,
        "n": len(dataset),
        "preprocessing": backbone.describe_preprocessing(),
        "layers": sorted(layers),
        "versions": library_versions(),
    }


class _Batches(torch.utils.data.Dataset):
    """Index -> raw sample; the collate function turns a list of samples into model inputs."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = int(self.indices[k])
        return self.dataset.text(i) if self.dataset.modality == "text" else self.dataset.image(i)


def _amp_active(device: torch.device, amp: bool | None) -> bool:
    return device.type == "cuda" and amp is not False


def _all_finite(arrays) -> bool:
    """Whether every value of ``arrays`` (name -> tensor or array) is finite."""
    return all(bool(torch.isfinite(v).all()) if isinstance(v, torch.Tensor) else bool(np.isfinite(v).all())
               for v in arrays.values())


def _autocast(device: torch.device, amp: bool | None):
    if _amp_active(device, amp):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def _default_workers(dataset: Dataset) -> int:
    if dataset.in_memory or dataset.modality == "text":
        return 0   # transformed a batch at a time in the main process: workers would only add copies
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# DataLoader worker start method: None = the platform default (fork on Linux); "spawn" is what macOS
# and Windows use, and what the tests force to prove that workers get everything they need by pickle.
_WORKER_CONTEXT: str | None = os.environ.get("ZOOFORGE_WORKER_START_METHOD") or None


def _run_shard(backbone, dataset, indices, layers, device, batch_size, num_workers, amp, advance, counts):
    """One shard's arrays. A batch whose outputs are not finite under autocast (fp16 ends at 65504, and
    some models' activations pass it) is run again in float32; ``counts["float32_batches"]`` counts them."""
    chunks: dict[str, list[np.ndarray]] = {}
    half = _amp_active(device, amp)
    if dataset.in_memory:
        batches = ((backbone.prepare(dataset.items[indices[i:i + batch_size]]), len(indices[i:i + batch_size]))
                   for i in range(0, len(indices), batch_size))
    else:
        loader = torch.utils.data.DataLoader(
            _Batches(dataset, indices), batch_size=batch_size, num_workers=num_workers,
            collate_fn=backbone.preprocessor(), pin_memory=device.type == "cuda",
            multiprocessing_context=_WORKER_CONTEXT if num_workers else None)
        batches = ((b, next(iter(b.values())).shape[0]) for b in loader)
    with torch.inference_mode(), _autocast(device, amp):
        for inputs, size in batches:
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            if device.type == "cuda" and "x" in inputs:
                inputs["x"] = inputs["x"].contiguous(memory_format=torch.channels_last)
            out = backbone.forward(inputs, layers)
            if half and not _all_finite(out):
                with torch.autocast(device.type, enabled=False):
                    out = backbone.forward(inputs, layers)
                counts["float32_batches"] = counts.get("float32_batches", 0) + 1
            if "logits" in out:
                out["source_probs"] = torch.softmax(out.pop("logits").float(), dim=-1)
            for k, v in out.items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
            advance(size)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def extract(backbone: Backbone, dataset: Dataset, *, layers: Sequence[str] = (), cache_dir=None,
            device: str | torch.device | None = None, batch_size: int = 128, num_workers: int | None = None,
            amp: bool | None = None, use_cache: bool = True, progress: bool = True,
            shard_size: int = SHARD_SIZE) -> FeatureSet:
    """Features of ``backbone`` on ``dataset`` (see the module docstring); cached unless ``use_cache``
    is false. ``layers`` are module names, e.g. ``backbone.stage_names``."""
    if dataset.modality != backbone.modality:
        raise ValueError(
            f"model {backbone.id!r} takes {backbone.modality} input but dataset {dataset.name!r} is {dataset.modality}."
        )
    cache = FeatureCache(cache_dir)
    parts = _key_parts(backbone, dataset, layers)
    key = cache_key(parts)
    if use_cache:
        hit = cache.load(key)
        if hit is not None and not _all_finite(hit[0]):     # stored before half-precision overflow was caught
            hit = None
        if hit is not None:
            meta = hit[1]
            if meta.get("params") is not None:     # the key pins weights and input size
                backbone.adopt_cost(Cost(int(meta["params"]), float(meta["gmacs"])))
            return _to_featureset(hit[0], dataset, meta, cache_hit=True)
    device = pick_device(device)
    backbone.to(device, channels_last=device.type == "cuda")
    workers = _default_workers(dataset) if num_workers is None else num_workers
    n = len(dataset)
    shards: list[dict[str, np.ndarray]] = []
    start = time.perf_counter()
    computed, counts, finite = 0, {}, True      # finite: every shard computed here is (cached ones were checked)
    with progress_bar(progress, f"extract {backbone.id} on {dataset.name}", n) as advance:
        for s in range(math.ceil(n / shard_size)):
            indices = np.arange(s * shard_size, min(n, (s + 1) * shard_size))
            done = cache.load_shard(key, s) if use_cache else None
            if done is not None and not _all_finite(done):
                done = None
            if done is None:
                done = _run_shard(backbone, dataset, indices, layers, device, batch_size, workers, amp, advance, counts)
                computed += len(indices)
                if use_cache:
                    shard_finite = _all_finite(done)
                    finite = finite and shard_finite
                    if shard_finite:            # NaN or inf is never cached: the model's failure is said anew
                        cache.store_shard(key, s, done)
            else:
                advance(len(indices))
            shards.append(done)
    elapsed = time.perf_counter() - start
    arrays = {k: np.concatenate([sh[k] for sh in shards]) for k in shards[0]}
    meta = dict(parts, dataset_name=dataset.name, classes=list(dataset.classes), device=str(device),
                batch_size=batch_size, seconds=elapsed, params=backbone.num_params, gmacs=backbone.gmacs,
                samples_per_s=computed / elapsed if computed and elapsed > 0 else None, **counts)
    if use_cache and finite:
        cache.store(key, arrays, meta)
    return _to_featureset(arrays, dataset, meta, cache_hit=False)


def _to_featureset(arrays: dict[str, np.ndarray], dataset: Dataset, meta: dict, cache_hit: bool) -> FeatureSet:
    layers = {k.removeprefix("layer:"): v for k, v in arrays.items() if k.startswith("layer:")}
    return FeatureSet(
        features=arrays["features"].astype(np.float32, copy=False), labels=dataset.labels.copy(),
        classes=dataset.classes, source_probs=arrays.get("source_probs"), layers=layers,
        provenance=dict(meta, cache_hit=cache_hit), task=dataset.task)


class progress_bar:
    """A rich progress bar as a context manager yielding ``advance(n, description=None)`` (a new
    description replaces the bar's label); a no-op when disabled or when the output is not a
    terminal. Extraction, scoring, ``select``'s trials and the timm listing use it."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total

    def __enter__(self):
        from rich.console import Console

        # piped or in a log, a live bar only leaves blank lines behind
        self.enabled = self.enabled and Console().is_terminal
        if not self.enabled:
            return lambda n, description=None: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._progress.__enter__()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda n, description=None: self._progress.update(
            task, advance=n, **({"description": description} if description else {}))

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.__exit__(*exc)
        return False
