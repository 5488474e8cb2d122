"""Rank a catalogue of backbones for a dataset: extract (cached) -> score -> table.

The table has one row per model: each estimator's score, its rank (1 = best), a 90% interval and
P(top-1) (the share of resamples in which the model scores best; all models share the same
resamples, so the comparison is paired; see :class:`zooforge.selection.intervals.Resamples`: from the estimator's influence
function where it has one, else from stratified 80% subsamples calibrated by the delete-d
jackknife, :func:`~zooforge.selection.intervals.delete_d_calibrate`), the mean rank across estimators, a z-scored
ensemble, cost (params, GMACs, measured samples/s), and, given budgets, which models fit and which lie
on the score-vs-GMACs Pareto front. Estimators a model cannot feed are skipped with the reason.

Rows are sorted by an :mod:`ordering <zooforge.selection.ordering>` (column ``ordering`` names it;
``order_value`` is its value, ``p_top1`` the share of resamples in which the model comes first under
it). The default ordering was fitted on fine-tune truth and tested leave-one-zoo-out (``benchmarks/selection.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from zooforge.config import RankConfig, build_config
from zooforge.errors import ZooforgeError, describe
from zooforge.metrics import get_estimator
from zooforge.selection.intervals import IntervalWarning, Resamples, interval_note, resamples
from zooforge.selection.scoring import score_featureset

__all__ = ["rank", "ranked_ids", "checked_ordering", "score_model", "score_featureset", "DEFAULT_METRICS",
           "default_metrics", "pareto_front", "resolve_ordering", "read_table", "write_table"]

# The default set: the default ordering's estimators first (zooforge.selection.ordering), then the
# other label-based estimators that work from features or a source head, shown beside them.
DEFAULT_METRICS = ("linear_probe", "parc", "transrate", "logme", "leep", "nce", "hscore_shrink", "gbc", "sfda")


def default_metrics(task: str = "classification") -> list[str]:
    """The default estimators that have a form for ``task`` targets (all of them for classes)."""
    return [m for m in DEFAULT_METRICS if get_estimator(m).unsupported(task) is None]


def score_model(backbone, dataset, metrics: Sequence[str], *, resamples: "Resamples | None" = None,
                resample: Sequence[str] | None = None, cache_dir=None,
                device=None, batch_size: int = 128, progress: bool = False) -> dict:
    """Extract (cached) and score one model on one dataset: the step ``rank`` runs per model and an
    audit per cell. Returns the cost (``params_m``, ``gmacs``, measured ``samples_per_s``; a cache hit
    knows them too), ``feature_dim`` and ``scores`` from :func:`score_featureset`. Model and data
    problems raise; the callers decide what a failure means for their table."""
    from zooforge.zoo.features import extract

    fs = extract(backbone, dataset, cache_dir=cache_dir, device=device, batch_size=batch_size, progress=progress)
    bad = ~np.isfinite(fs.features)
    if bad.any():          # every estimator would refuse them: one failure, said once (a head's NaN only
        rows = np.flatnonzero(bad.any(axis=1))                     # costs the estimators that read it)
        raise ZooforgeError(f"model {backbone.id!r} gives {int(bad.sum())} NaN or infinite values in its features for "
                            f"{rows.size} of the {len(fs.features)} samples (first: sample {int(rows[0])}), computed "
                            "in float32: its weights or its forward pass produce them (a corrupted checkpoint?), so "
                            "nothing can be scored.")
    return {"params_m": backbone.num_params / 1e6, "gmacs": float(backbone.gmacs),
            "samples_per_s": fs.provenance.get("samples_per_s"), "feature_dim": int(fs.features.shape[1]),
            "scores": score_featureset(fs, metrics, resamples=resamples, resample=resample, progress=progress,
                                       description=f"score {backbone.id}")}


def pareto_front(score: np.ndarray, gmacs: np.ndarray) -> np.ndarray:
    """Models not dominated by another with higher-or-equal score at lower-or-equal GMACs."""
    keep = np.zeros(len(score), dtype=bool)
    for i in range(len(score)):
        if np.isnan(score[i]):
            continue
        dominated = (score >= score[i]) & (gmacs <= gmacs[i]) & ((score > score[i]) | (gmacs < gmacs[i]))
        keep[i] = not dominated.any()
    return keep


def rank(catalogue, dataset, metrics: Sequence[str] | None = None, config: RankConfig | None = None,
         **options) -> pl.DataFrame:
    """Rank ``catalogue`` (a path, a built-in name or a list of entries) on ``dataset`` (a spec or a
    Dataset) under ``config`` (a :class:`~zooforge.config.RankConfig`; keyword ``options`` set or
    override its fields, ``metrics`` is the common one: ``rank("demo", "demo:shapes", ["logme"],
    bootstrap=0)``). Budgets are GMACs and millions of parameters. ``ordering`` (an
    :class:`~zooforge.selection.ordering.Ordering` or its name) sorts the table; by default, for
    the default estimators, the shipped default ordering, else the mean rank over ``metrics``.
    For a regression or multi-label target the default estimators are those with a form for it
    (:func:`default_metrics`) and the order is their mean rank (the default ordering was chosen on
    classification truth). ``intervals``: ``"fast"`` gives intervals to the estimators with an influence
    function and to those that decide the ordering's first model (its lead, else all of its
    estimators: what P(top-1) resamples; the others' cells stay empty: re-scoring them on every resample
    costs tens of times the point scores); ``"all"`` to every estimator. ``split``,
    ``max_per_class`` and ``task`` say how a data spec is read (``load_dataset``'s). See the module
    docstring."""
    from zooforge.zoo import filter_entries, load_catalogue, load_dataset
    from zooforge.zoo.backbone import Backbone

    cfg = build_config(RankConfig, config, options | ({"metrics": metrics} if metrics is not None else {}), "rank")
    for name in cfg.metrics or ():
        get_estimator(name)            # unknown names fail before any work
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset, cfg.split, max_per_class=cfg.max_per_class,
                                                                        seed=cfg.seed, task=cfg.task)
    metrics = list(cfg.metrics or default_metrics(ds.task))
    ordering = resolve_ordering(cfg.ordering, metrics, ds.task)
    resample = None if cfg.intervals == "all" else list(ordering.first_decided_by)
    models = cfg.models
    entries = catalogue if isinstance(catalogue, list) else load_catalogue(catalogue, check_files=False)
    entries = filter_entries(entries, list(models) if models else None)
    if not entries:
        raise ZooforgeError("the catalogue has no models" + (f" matching {list(models)}" if models else "") + ".")
    strata = ds.strata()
    shared = resamples(strata, cfg.bootstrap, cfg.seed)
    note = interval_note(strata, ds.task) if cfg.bootstrap else None
    if note:
        warnings.warn(note, IntervalWarning, stacklevel=2)
    rows, samples = [], {}
    for entry in entries:
        row = {"model": entry.id, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint, "params_m": None,
               "gmacs": None, "samples_per_s": None, "error": None,
               "skipped_files": len(ds.meta.get("skipped_files", []))}      # unreadable files left out (--skip-bad-files)
        try:
            result = score_model(Backbone.from_entry(entry), ds, metrics, resamples=shared, resample=resample,
                                 cache_dir=cfg.cache_dir, device=cfg.device, batch_size=cfg.batch_size,
                                 progress=cfg.progress)
            scores = result.pop("scores")
            row |= {k: result[k] for k in ("params_m", "gmacs", "samples_per_s")}
        except (ZooforgeError, ValueError, RuntimeError, OSError) as exc:
            row["error"] = describe(exc)
            scores = {m: {"score": None, "samples": None, "skipped": "model failed"} for m in metrics}
        skipped = []
        for m in metrics:
            row[m] = scores[m]["score"]
            if scores[m]["skipped"] and not row["error"]:
                skipped.append(f"{m}: {scores[m]['skipped']}")
            samples[(entry.id, m)] = scores[m]["samples"]
        row["skipped"] = "; ".join(skipped) or None
        rows.append(row)
    table = pl.DataFrame(rows, schema_overrides={m: pl.Float64 for m in metrics} | {
        "params_m": pl.Float64, "gmacs": pl.Float64, "samples_per_s": pl.Float64, "error": pl.Utf8, "skipped": pl.Utf8,
        "skipped_files": pl.Int64,
        "dataset": pl.Utf8, "dataset_fingerprint": pl.Utf8})
    return finish_table(table, metrics, samples, shared is not None, cfg.budget_gmacs, cfg.budget_params, ordering, ds.task)


def checked_ordering(ordering):
    """``ordering`` (None, an Ordering or its name) as an Ordering, every estimator it names known:
    for a command to call before its first costly step, so that a typo fails at once."""
    from zooforge.selection.ordering import Ordering

    if isinstance(ordering, str):
        ordering = Ordering.parse(ordering)
    for name in ordering.metrics if ordering is not None else ():
        get_estimator(name)
    return ordering


def ranked_ids(entries, dataset, ordering=None, *, cache_dir=None, progress: bool = False,
               unplaced: dict | None = None) -> list[str]:
    """The ids of catalogue ``entries`` best first, as ``rank`` orders them on ``dataset``: by default the
    ordering ``zooforge rank`` recommends (the shipped default over the default estimators);
    ``ordering`` (an Ordering or its name, e.g. ``"logme"``, the papers' choice) another. What the
    commands that act on the ranking (aggregate, compose's single-model baseline) read. A model the
    ordering cannot place (it failed, or has no score the ordering uses) is left out, as ``rank``
    never recommends one, and goes into ``unplaced`` (id -> why) when a dict is given; none placed is
    an error."""
    ordering = checked_ordering(ordering)
    table = rank(entries, dataset, metrics=None if ordering is None else list(ordering.metrics), ordering=ordering,
                 bootstrap=0, cache_dir=cache_dir, progress=progress)
    name = table["ordering"][0]
    placed = table["error"].is_null() & table["order_value"].is_not_nan()
    if unplaced is not None:
        for row in table.filter(~placed).iter_rows(named=True):
            unplaced[row["model"]] = row["error"] or (f"none of the scores the ordering {name} uses"
                                                      + (f" ({row['skipped']})" if row["skipped"] else ""))
    table = table.filter(placed)
    if table.height == 0:
        raise ZooforgeError(f"no model could be scored by the estimators of the ordering {name}; see "
                            "`zooforge rank` for the errors.")
    return table["model"].to_list()


def finish_table(table: pl.DataFrame, metrics, samples, with_bootstrap: bool, budget_gmacs, budget_params,
                 ordering=None, task: str = "classification") -> pl.DataFrame:
    """A table of raw scores (one row per model, one column per estimator) made a ranking: per-estimator
    ranks and intervals, mean rank, z-scored ensemble, the ordering's value and P(top-1), the budget
    and Pareto columns, sorted by ``ordering``. ``samples``: (model, estimator) -> resampled scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows (failed/skipped models) stay NaN
        return _finish_quietly(table, metrics, samples, with_bootstrap, budget_gmacs, budget_params,
                               resolve_ordering(ordering, metrics, task))


def resolve_ordering(ordering, metrics: Sequence[str], task: str = "classification"):
    """The ordering a table of ``metrics`` is sorted by: the one given (an Ordering or its name);
    else, for the default estimators, the default ordering (for a regression or multi-label target,
    whose truth it was not chosen on, the mean rank over the default estimators that have a form for
    it: see ``DEFAULT_METRICS``); else (estimators the user chose) the mean rank over ``metrics``
    that can score the task."""
    from zooforge.selection.ordering import DEFAULT_ORDERING, Ordering

    ordering = checked_ordering(ordering)
    if ordering is None:
        able = tuple(m for m in metrics if get_estimator(m).unsupported(task) is None)
        if task == "classification" and set(metrics) == set(DEFAULT_METRICS):
            ordering = DEFAULT_ORDERING
        elif not able:
            raise ZooforgeError(f"none of the estimators {', '.join(metrics)} can score a {task} target; use "
                                f"{', '.join(default_metrics(task))}.")
        else:
            ordering = Ordering(able)
    absent = [m for m in ordering.metrics if m not in metrics]
    if absent:
        raise ZooforgeError(f"the ordering {ordering.name} needs estimator(s) {', '.join(absent)}, which were not "
                            f"computed; add them with -m or choose --order from {', '.join(metrics)}.")
    return ordering


def _finish_quietly(table, metrics, samples, with_bootstrap, budget_gmacs, budget_params, ordering) -> pl.DataFrame:
    from zooforge.selection.ordering import metric_ranks, order

    ids = table["model"].to_list()
    extra: dict[str, list] = {}
    zs = []
    values_by_metric = {m: table[m].to_numpy().astype(float) for m in metrics}
    boots = {}
    for m in metrics:
        values = values_by_metric[m]
        extra[f"{m}_rank"] = metric_ranks(values).tolist()
        finite = values[~np.isnan(values)]
        if finite.size > 1 and finite.std() > 0:
            zs.append((values - finite.mean()) / finite.std())
        if with_bootstrap:
            boot = np.stack([samples[(i, m)] if samples[(i, m)] is not None else np.full(_rounds(samples), np.nan)
                             for i in ids])                                   # (models, rounds)
            boots[m] = boot
            extra[f"{m}_lo"] = np.nanpercentile(boot, 5, axis=1).tolist() if np.isfinite(boot).any() else [None] * len(ids)
            extra[f"{m}_hi"] = np.nanpercentile(boot, 95, axis=1).tolist() if np.isfinite(boot).any() else [None] * len(ids)
            extra[f"{m}_p_top1"] = _p_top1(boot, values)
    rank_cols = np.array([extra[f"{m}_rank"] for m in metrics], dtype=float)
    mean_rank = np.nanmean(rank_cols, axis=0) if len(metrics) else np.full(len(ids), np.nan)
    keys = order(values_by_metric, ordering)
    # A model that lacks a score (skipped, not finite, failed) never outranks one that has it: the
    # order is by the number of the ordering's estimators without a score first, then its value.
    extra["missing_scores"] = keys["missing"].astype(float).tolist()
    extra["order_value"] = keys["value"].tolist()
    if with_bootstrap:
        extra["p_top1"] = _ordering_p_top1(boots, values_by_metric, ordering, keys)
    ensemble = np.nanmean(np.stack(zs), axis=0) if zs else np.full(len(ids), np.nan)
    extra["mean_rank"] = mean_rank.tolist()
    extra["ensemble_z"] = ensemble.tolist()
    out = table.with_columns([pl.Series(k, v, dtype=pl.Float64) for k, v in extra.items()])
    gmacs = out["gmacs"].to_numpy().astype(float)
    params = out["params_m"].to_numpy().astype(float)
    fits = np.ones(len(ids), dtype=bool)
    if budget_gmacs is not None:
        fits &= np.nan_to_num(gmacs, nan=np.inf) <= budget_gmacs
    if budget_params is not None:
        fits &= np.nan_to_num(params, nan=np.inf) <= budget_params
    out = out.with_columns(pl.Series("within_budget", fits), pl.lit(ordering.name).alias("ordering"),
                           pl.Series("pareto", pareto_front(np.asarray(ensemble, float), np.nan_to_num(gmacs, nan=np.inf))),
                           pl.Series("_position", keys["position"]))
    out = (out.with_columns(pl.col("missing_scores").cast(pl.Int64))
           .sort("_position").drop("_position").with_row_index("rank", offset=1))
    # a failed model is never the best, whatever its (missing) scores
    best_in_budget = out.filter(pl.col("within_budget") & pl.col("mean_rank").is_not_null() & pl.col("error").is_null())
    best_id = best_in_budget["model"][0] if best_in_budget.height else None
    return out.with_columns((pl.col("model") == pl.lit(best_id)).alias("best_within_budget"))


def _p_top1(boot: np.ndarray, values: np.ndarray) -> list:
    """Share of resamples (columns of ``boot``) in which each model scores best."""
    filled = np.where(np.isnan(boot), -np.inf, boot)
    valid = np.isfinite(boot).any(axis=0)
    best = filled.argmax(axis=0)
    return [float(np.mean(best[valid] == k)) if valid.any() and not np.isnan(values[k]) else None
            for k in range(len(values))]


def _ordering_p_top1(boots, values_by_metric, ordering, keys) -> list:
    """Share of resamples in which each model comes first under ``ordering`` (all models share each
    resample, so the comparison is paired). Estimators without resamples keep their point scores."""
    from zooforge.selection.ordering import order

    rounds = next((b.shape[1] for b in boots.values()), 0)
    if rounds == 0:
        return [None] * len(keys["position"])
    firsts = np.zeros(len(keys["position"]))
    for r in range(rounds):
        draw = {m: (boots[m][:, r] if m in boots and np.isfinite(boots[m][:, r]).any() else v)
                for m, v in values_by_metric.items()}
        firsts[order(draw, ordering)["position"].argmin()] += 1
    unscored = ~np.isfinite(np.array([values_by_metric[m] for m in ordering.metrics])).any(axis=0)
    return [None if unscored[k] else float(firsts[k] / rounds) for k in range(len(firsts))]


def _rounds(samples) -> int:
    return next((len(v) for v in samples.values() if v is not None), 0)


TABLE_READERS = {".csv": pl.read_csv, ".json": pl.read_json, ".parquet": pl.read_parquet}


def read_table(path: str | Path, what: str = "table") -> pl.DataFrame:
    """Read a .csv, .json or .parquet table (``write_table``'s formats); anything polars cannot parse
    is a ZooforgeError naming ``what`` and the file."""
    from zooforge.errors import first_line

    path = Path(path)
    if path.suffix not in TABLE_READERS:
        raise ZooforgeError(f"{what} {path}: unsupported file type {path.suffix!r}; use .csv, .json or .parquet.")
    try:
        return TABLE_READERS[path.suffix](path)
    except Exception as exc:      # noqa: BLE001 - polars raises several kinds for a file it cannot parse
        raise ZooforgeError(f"{what} {path}: not a readable {path.suffix[1:]} table ({type(exc).__name__}: "
                            f"{first_line(exc)}).") from None


def write_table(table: pl.DataFrame, path: str | Path) -> Path:
    """Write a ranking as .csv, .json or .parquet, chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.write_csv(path)
    elif path.suffix == ".json":
        table.write_json(path)
    elif path.suffix == ".parquet":
        table.write_parquet(path)
    else:
        raise ZooforgeError(f"unsupported output {path.suffix!r}: use .csv, .json or .parquet.")
    return path
