"""Resumable audits: score every (model, dataset) cell of a plan into one Parquet dataset.

A plan (TOML) names catalogues, an optional glob filter over their ids, datasets and estimators::

    catalogues = ["zoo.toml", "demo"]     # files (relative to the plan) or built-in names
    models = ["demo/*"]                   # optional fnmatch globs over catalogue ids
    datasets = ["data/flowers", "demo:shapes?n=100", "sklearn:digits"]
    metrics = ["logme", "leep", "nce"]    # default: every registered estimator (skipped where unfed)
    out = "audit.parquet"                 # a folder of Parquet parts, one per finished cell
    # optional: max_per_class, bootstrap (rounds for 90% intervals, default 0), seed, batch_size,
    #           device, cache_dir

Each finished cell is written as its own Parquet file (``<out>/cell-<key>.parquet``) through a
temporary file and a rename, so a crash or ``kill -9`` loses at most the cells in flight; a rerun skips
every cell whose part exists for the same settings. A cell that fails (bad checkpoint, unreadable
dataset, out of memory) is written too, with ``status = "error"`` and the message, and the audit goes
on; reruns retry failed cells unless told not to. The table (:func:`read_audit`) has one row per
(model, dataset, metric), sorted, so an interrupted-and-resumed audit gives the same table as an
uninterrupted one (timing columns aside: ``seconds`` and ``samples_per_s`` measure the run).

Backends: ``local`` runs cells in this process, model by model (each backbone loaded once);
``ray`` runs each cell as a Ray task (one extraction per task) on ``ray.init()`` (a local instance
with ``workers`` CPUs) or an existing cluster (``address``); the driver gathers results as they
finish and writes the parts, so workers need no shared filesystem for the results.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from zooforge.errors import ZooforgeError, describe
from zooforge.selection.audit_ray import run_ray
from zooforge.selection.audit_store import (SCHEMA, SCHEMA_VERSION, TIMING_COLUMNS, audit_generations, audit_tables,
                                           cell_rows, finished_cells, provenance, provenance_path, read_audit,
                                           read_provenance, write_part)
from zooforge.zoo.catalogue import entry_digest
from zooforge.zoo.cache import atomic_write_bytes

__all__ = ["Plan", "Cell", "load_plan", "plan_cells", "run_audit", "read_audit", "audit_tables", "AuditSummary",
           "SCHEMA", "SCHEMA_VERSION", "TIMING_COLUMNS", "audit_generations", "provenance_path",
           "read_provenance"]

_PLAN_KEYS = {"catalogues", "models", "datasets", "metrics", "out", "max_per_class", "bootstrap", "seed",
              "batch_size", "device", "cache_dir", "skip_bad_files"}


@dataclass(frozen=True)
class Plan:
    catalogues: tuple[str, ...]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...]
    out: Path
    models: tuple[str, ...] = ()
    max_per_class: int | None = None
    bootstrap: int = 0
    seed: int = 0
    batch_size: int = 128
    device: str | None = None
    cache_dir: Path | None = None
    skip_bad_files: bool = False
    base: Path = field(default=Path("."), compare=False)    # folder relative paths are resolved against

    def settings(self) -> dict[str, Any]:
        """What a cell's result depends on besides the model and dataset (device/batch size do not)."""
        from zooforge.metrics import REGISTRY

        out = {"metrics": sorted(self.metrics), "max_per_class": self.max_per_class,
               "bootstrap": self.bootstrap, "seed": self.seed}
        # Only estimators redefined since version 1 and flags that are on: old digests stay valid.
        versions = {m: REGISTRY[m].version for m in self.metrics if m in REGISTRY and REGISTRY[m].version > 1}
        return (out | ({"skip_bad_files": True} if self.skip_bad_files else {})
                | ({"estimator_versions": versions} if versions else {}))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def resolve_dataset(self, spec: str) -> str:
        """A dataset spec with a relative path made absolute against the plan's folder."""
        if spec.startswith(("demo:", "sklearn:")) or Path(spec).is_absolute():
            return spec
        return str(self.base / spec)


@dataclass(frozen=True)
class Cell:
    entry: Any                     # CatalogueEntry
    dataset: str                   # as written in the plan (the table's key)
    dataset_path: str              # resolved
    digest: str

    @property
    def key(self) -> str:
        """Everything a cell's result depends on but the dataset's content (checked against the
        part's stored fingerprint on resume): the whole catalogue entry (name, checkpoint and its
        size and modification time, preprocessing, pretrained, model_args), the dataset spec and
        the settings. Editing an entry or replacing its checkpoint makes a new cell."""
        return hashlib.sha256(f"{entry_digest(self.entry)}\0{self.dataset}\0{self.digest}".encode()).hexdigest()[:24]

    @property
    def part_name(self) -> str:
        return f"cell-{self.key}.parquet"


def load_plan(path: str | Path, **overrides) -> Plan:
    """Read and validate a plan file; ``overrides`` (e.g. ``out=``) replace its fields."""
    from zooforge.metrics import REGISTRY, get_estimator

    path = Path(path)
    if not path.is_file():
        raise ZooforgeError(f"audit plan {path} not found.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ZooforgeError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - _PLAN_KEYS
    if unknown:
        raise ZooforgeError(f"{path}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(_PLAN_KEYS)}.")
    raw |= {k: v for k, v in overrides.items() if v is not None}
    problems = []
    for key in ("catalogues", "datasets"):
        value = raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            problems.append(f"`{key}` must be a non-empty list of strings; got {value!r}")
    for key in ("models", "metrics"):
        if key in raw and (not isinstance(raw[key], list) or not all(isinstance(v, str) for v in raw[key])):
            problems.append(f"`{key}` must be a list of strings; got {raw[key]!r}")
    for key, lo in (("bootstrap", 0), ("seed", 0), ("batch_size", 1), ("max_per_class", 1)):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < lo):
            problems.append(f"`{key}` must be an integer >= {lo}; got {raw[key]!r}")
    if problems:
        raise ZooforgeError(f"{path}: " + "; ".join(problems) + ".")
    metrics = tuple(raw.get("metrics") or REGISTRY)
    for name in metrics:
        get_estimator(name)                    # unknown names fail here, listing the valid ones
    if len(set(raw["datasets"])) != len(raw["datasets"]):
        raise ZooforgeError(f"{path}: `datasets` lists a dataset twice.")
    base = path.parent.resolve()
    out = Path(raw.get("out", path.with_suffix(".parquet").name))
    cache_dir = raw.get("cache_dir")
    return Plan(catalogues=tuple(raw["catalogues"]), datasets=tuple(raw["datasets"]), metrics=metrics,
                out=out if out.is_absolute() else base / out, models=tuple(raw.get("models", ())),
                max_per_class=raw.get("max_per_class"), bootstrap=raw.get("bootstrap", 0), seed=raw.get("seed", 0),
                batch_size=raw.get("batch_size", 128), device=raw.get("device"),
                skip_bad_files=bool(raw.get("skip_bad_files", False)),
                cache_dir=None if cache_dir is None else (base / cache_dir).resolve(), base=base)


def plan_cells(plan: Plan) -> list[Cell]:
    """Every (model, dataset) cell, model-major, in plan order."""
    from zooforge.zoo import filter_entries, load_catalogue

    entries, origin = [], {}
    for name in plan.catalogues:
        file = plan.base / name
        for e in load_catalogue(file if file.exists() else name, check_files=False):
            if e.id in origin:
                raise ZooforgeError(f"model id {e.id!r} is in both {origin[e.id]} and {name}; ids must be unique.")
            origin[e.id] = name
            entries.append(e)
    chosen = filter_entries(entries, list(plan.models) or None)
    if not chosen:
        raise ZooforgeError(f"the plan selects no models (catalogues {list(plan.catalogues)}, "
                            f"filter {list(plan.models)}).")
    return [Cell(e, d, plan.resolve_dataset(d), plan.digest) for e in chosen for d in plan.datasets]


# ---- one cell -----------------------------------------------------------------------------------
def run_cell(cell: Cell, plan: Plan, *, backbone=None, dataset=None, progress: bool = False) -> list[dict]:
    """Extract (cached) and score one cell; never raises for a model or data problem: the rows carry
    the error instead. ``backbone``/``dataset`` may be passed in when already loaded."""
    import numpy as np

    from zooforge.selection.intervals import resamples
    from zooforge.selection.rank import score_model
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone

    start = time.perf_counter()
    info: dict[str, Any] = {}
    try:
        if backbone is None:
            backbone = Backbone.from_entry(cell.entry)
        if dataset is None:
            dataset = load_dataset(cell.dataset_path, max_per_class=plan.max_per_class, seed=plan.seed,
                                   skip_bad_files=plan.skip_bad_files)
        info |= {"n_samples": len(dataset), "num_classes": dataset.num_classes,
                 "dataset_fingerprint": dataset.fingerprint, "target_kind": dataset.task}
        result = score_model(backbone, dataset, sorted(plan.metrics),
                             resamples=resamples(dataset.strata(), plan.bootstrap, plan.seed),
                             cache_dir=plan.cache_dir, device=plan.device, batch_size=plan.batch_size,
                             progress=progress)
        scores = result.pop("scores")
        info |= result
    except Exception as exc:       # noqa: BLE001 - a cell records any failure (OOM included) and the audit goes on
        return cell_rows(cell, plan, status="error", reason=describe(exc), seconds=time.perf_counter() - start, **info)
    rows = cell_rows(cell, plan, seconds=time.perf_counter() - start, **info)
    for row in rows:
        s = scores[row["metric"]]
        row["score"] = s["score"]
        row["status"] = "ok" if s["skipped"] is None else "skipped"
        row["reason"] = s["skipped"]
        if s["samples"] is not None and np.isfinite(s["samples"]).any():
            row["lo"], row["hi"] = (float(np.nanpercentile(s["samples"], q)) for q in (5, 95))
    return rows


def _load_datasets(plan: Plan, cells: list[Cell]) -> dict[str, Any]:
    """Each dataset of the plan loaded once (None where it cannot be: the cells record why)."""
    from zooforge.zoo import load_dataset

    loaded: dict[str, Any] = {}
    for cell in cells:
        if cell.dataset_path not in loaded:
            try:
                loaded[cell.dataset_path] = load_dataset(cell.dataset_path, max_per_class=plan.max_per_class,
                                                         seed=plan.seed, skip_bad_files=plan.skip_bad_files)
            except Exception:     # noqa: BLE001 - recorded per cell by run_cell
                loaded[cell.dataset_path] = None
    return loaded


# ---- the audit ----------------------------------------------------------------------------------
@dataclass
class AuditSummary:
    out: Path
    cells: int
    ran: int
    skipped: int                  # already finished before this run
    stale: int = 0                # finished before, re-run because their dataset's content changed
    failed: list[tuple[str, str, str]] = field(default_factory=list)    # (model, dataset, error)
    seconds: float = 0.0
    table: pl.DataFrame | None = field(default=None, repr=False)


def run_audit(plan: Plan | str | Path, *, backend: str = "local", address: str | None = None,
              workers: int | None = None, retry_failed: bool = True, progress: bool = True,
              on_cell: Callable[[Cell, list[dict]], None] | None = None) -> AuditSummary:
    """Run every unfinished cell of ``plan`` and return the summary with the audit's table."""
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if backend not in ("local", "ray"):
        raise ZooforgeError(f"unknown backend {backend!r}; use local or ray.")
    cells = plan_cells(plan)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".cell-*.parquet.*"):     # temporary files of a run killed mid-write
        stale.unlink(missing_ok=True)
    record = provenance(plan) | {"cells": sorted(c.part_name for c in cells)}
    # beside the folder, not in it: pl.read_parquet / pyarrow / DuckDB read every file in the folder
    atomic_write_bytes(provenance_path(out), json.dumps(record, indent=2, default=str).encode())
    (out / "plan.json").unlink(missing_ok=True)         # where audits before schema 2 kept it
    datasets = _load_datasets(plan, cells)
    done, stale = finished_cells(out, cells, retry_failed, {k: getattr(v, "fingerprint", None) for k, v in datasets.items()})
    todo = [c for c in cells if c.key not in done]
    summary = AuditSummary(out, len(cells), len(todo), len(cells) - len(todo), stale=len(stale))
    start = time.perf_counter()

    def finish(cell: Cell, rows: list[dict]) -> None:
        write_part(out, cell, rows)
        if rows and rows[0]["status"] == "error":
            summary.failed.append((cell.entry.id, cell.dataset, rows[0]["reason"]))
        if on_cell is not None:
            on_cell(cell, rows)

    with _Progress(progress, len(cells), len(cells) - len(todo)) as bar:
        if backend == "local":
            _run_local(todo, plan, finish, bar, datasets)
        else:
            run_ray(todo, plan, finish, bar, address, workers)
    summary.seconds = time.perf_counter() - start
    summary.table = read_audit(out, cells)
    return summary


def _run_local(todo: list[Cell], plan: Plan, finish, bar: "_Progress", datasets: dict[str, Any]) -> None:
    from zooforge.zoo.backbone import Backbone

    by_model: dict[str, list[Cell]] = {}
    for cell in todo:
        by_model.setdefault(cell.entry.id, []).append(cell)
    for group in by_model.values():
        try:
            backbone = Backbone.from_entry(group[0].entry)
        except Exception:     # noqa: BLE001 - let run_cell record the error for each of the model's cells
            backbone = None
        for cell in group:
            bar.show(f"{cell.entry.id} on {cell.dataset}")
            finish(cell, run_cell(cell, plan, backbone=backbone, dataset=datasets[cell.dataset_path]))
            bar.step()
        del backbone


class _Progress:
    """A rich progress bar over cells, with elapsed time and an ETA across cells."""

    def __init__(self, enabled: bool, total: int, already: int):
        self.enabled, self.total, self.already = enabled, total, already
        self._bar = self._task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"))
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total, completed=self.already)
        return self

    def show(self, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)


