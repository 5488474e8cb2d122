"""The audit's folder: one Parquet part per finished cell in one schema, the provenance beside it,
and the readers (:func:`read_audit`, one generation by default; :func:`audit_tables`, a ranking per
dataset)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import polars as pl

from zooforge.errors import ZooforgeError
from zooforge.zoo.cache import atomic_write_bytes

if TYPE_CHECKING:
    from zooforge.selection.audit import Cell, Plan

__all__ = ["SCHEMA", "SCHEMA_VERSION", "TIMING_COLUMNS", "audit_generations", "audit_tables", "cell_rows",
           "finished_cells", "frame", "provenance", "provenance_path", "read_audit", "read_provenance", "write_part"]

# One row per (model, dataset, metric). Timing columns measure a particular run.
SCHEMA: dict[str, pl.DataType] = {
    "model": pl.Utf8, "dataset": pl.Utf8, "metric": pl.Utf8, "score": pl.Float64, "lo": pl.Float64,
    "hi": pl.Float64, "status": pl.Utf8, "reason": pl.Utf8, "params_m": pl.Float64, "gmacs": pl.Float64,
    "n_samples": pl.Int64, "num_classes": pl.Int64, "feature_dim": pl.Int64, "dataset_fingerprint": pl.Utf8,
    "settings": pl.Utf8, "samples_per_s": pl.Float64, "seconds": pl.Float64, "schema_version": pl.Int32,
    "target_kind": pl.Utf8,
}
# Bumped when a column changes meaning or is added; parts of older versions still read (missing
# columns become null).
SCHEMA_VERSION = 3          # 3: target_kind (classification, regression, multilabel)
TIMING_COLUMNS = ("samples_per_s", "seconds")


def cell_rows(cell: Cell, plan: Plan, **common) -> list[dict]:
    base = {k: None for k in SCHEMA} | {"model": cell.entry.id, "dataset": cell.dataset, "settings": cell.digest,
                                        "schema_version": SCHEMA_VERSION}
    return [base | {"metric": m} | common for m in sorted(plan.metrics)]


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def write_part(out: Path, cell: Cell, rows: list[dict]) -> None:
    buffer = io.BytesIO()
    frame(rows).write_parquet(buffer)
    atomic_write_bytes(out / cell.part_name, buffer.getvalue())


def finished_cells(out: Path, cells: list[Cell], retry_failed: bool,
              fingerprints: dict[str, str | None]) -> tuple[set[str], list[Cell]]:
    """Keys of the cells whose part can be kept, and the cells whose part is stale: their dataset's
    content changed since (its fingerprint differs from the one the part recorded)."""
    done, stale = set(), []
    for cell in cells:
        part = out / cell.part_name
        if not part.exists():
            continue
        stored = pl.read_parquet(part, columns=["status", "dataset_fingerprint"])
        if retry_failed and stored["status"].eq("error").any():
            continue
        now = fingerprints.get(cell.dataset_path)
        recorded = stored["dataset_fingerprint"].drop_nulls()
        if now is not None and recorded.len() and recorded[0] != now:
            stale.append(cell)
            continue
        done.add(cell.key)
    return done, stale


def provenance_path(out: str | Path) -> Path:
    """The audit's provenance (plan, settings, versions, the latest plan's cells): a file beside the
    folder of parts, ``<folder>.plan.json``, so the folder holds nothing but Parquet."""
    out = Path(out)
    return out.with_name(out.name + ".plan.json")


def read_provenance(out: str | Path) -> dict:
    """The provenance of an audit folder ({} when there is none); also reads the old in-folder file."""
    for path in (provenance_path(out), Path(out) / "plan.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return {}
    return {}


def audit_generations(out: str | Path) -> tuple[list[str], list[str]]:
    """(part names of the latest run's plan, part names left by earlier plans of other settings or
    models) in an audit folder. A folder written before plans listed their cells has only the first."""
    out = Path(out)
    every = sorted(p.name for p in out.glob("cell-*.parquet"))
    try:
        latest = set(read_provenance(out)["cells"])
    except (KeyError, TypeError):
        return every, []
    return [n for n in every if n in latest], [n for n in every if n not in latest]


def read_audit(out: str | Path, cells: Iterable[Cell] | None = None, *, generation: str = "latest") -> pl.DataFrame:
    """The audit's table, one row per (model, dataset, metric), sorted by dataset, model and metric.

    An audit folder run again with other settings, models or datasets keeps the earlier parts (so
    going back costs nothing); ``generation="latest"`` (the default) reads only the cells of the
    latest run's plan, ``"all"`` every part (then (model, dataset, metric) can repeat, told apart by
    the ``settings`` column). ``cells`` reads exactly those."""
    out = Path(out)
    if not out.is_dir():
        raise ZooforgeError(f"no audit at {out}: expected a folder of cell-*.parquet parts.")
    if generation not in ("latest", "all"):
        raise ZooforgeError(f"unknown audit generation {generation!r}; use 'latest' or 'all'.")
    if cells is not None:
        names = sorted(c.part_name for c in cells)
    else:
        latest, older = audit_generations(out)
        names = latest + (older if generation == "all" else [])
    parts = [pl.read_parquet(out / n) for n in names if (out / n).exists()]
    table = pl.concat([frame([]), *parts], how="diagonal_relaxed") if parts else frame([])
    return table.sort("dataset", "model", "metric")


def audit_tables(table: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """One ranking table per dataset (the layout of :func:`zooforge.selection.rank`: score, rank,
    mean rank, z-scored ensemble, Pareto front), built from an audit's long table."""
    from zooforge.selection.rank import finish_table

    out = {}
    for (dataset,), part in table.sort("dataset").group_by("dataset", maintain_order=True):
        metrics = sorted(part["metric"].unique().to_list())
        wide = part.pivot(on="metric", index="model", values="score", aggregate_function="first")
        per_model = part.group_by("model", maintain_order=True).agg(
            pl.col("params_m").first(), pl.col("gmacs").first(), pl.col("samples_per_s").first(),
            pl.when(pl.col("status") == "error").then(pl.col("reason")).otherwise(None).drop_nulls().first().alias("error"),
            pl.when(pl.col("status") == "skipped").then(pl.col("metric") + ": " + pl.col("reason"))
            .otherwise(None).drop_nulls().str.join("; ").alias("skipped"))
        joined = per_model.join(wide, on="model", how="left").with_columns(
            pl.col("skipped").replace("", None), *[pl.col(m).cast(pl.Float64) for m in metrics])
        kinds = part["target_kind"].drop_nulls() if "target_kind" in part.columns else []
        ranking = finish_table(joined, metrics, {}, False, None, None, None, kinds[0] if len(kinds) else "classification")
        if part["lo"].is_not_null().any():            # the audit's bootstrap intervals, when it ran any
            bounds = [part.filter(pl.col("metric") == m).select("model", pl.col("lo").alias(f"{m}_lo"),
                                                                 pl.col("hi").alias(f"{m}_hi")) for m in metrics]
            for b in bounds:
                ranking = ranking.join(b, on="model", how="left")
        out[dataset] = ranking
    return out


def provenance(plan: Plan) -> dict:
    from zooforge.zoo.features import library_versions

    return {"plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(plan).items() if k != "base"},
            "settings": plan.settings(), "settings_digest": plan.digest, "versions": library_versions()}
