"""Judge a ranking against fine-tuned accuracies, the way transferability papers do.

Per estimator, and first for the table's ordering (its ``rank`` column, every model): Kendall's tau, weighted tau (``scipy.stats.weightedtau`` defaults: hyperbolic weights
1/(r+1) on the rank, as in the LogME paper), Pearson r, top-1 regret (accuracy of the truly best model
minus accuracy of the model the estimator put first) and top-3 hit (whether the truly best model is
among the estimator's top 3).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from zooforge.errors import ZooforgeError

__all__ = ["evaluate", "TRUTH_COLUMNS"]

# The fine-tuned score a truth table may give, besides ``accuracy``: any higher-is-better score of
# the task (R^2 for regression, mAP for multi-label); regrets are then in its units.
TRUTH_COLUMNS = ("score", "r2", "map")


def evaluate(ranking: pl.DataFrame, truth: pl.DataFrame | dict[str, float], metrics=None) -> pl.DataFrame:
    """One row per estimator; ``truth`` maps model id -> fine-tuned accuracy (or a frame with
    columns model and accuracy, or for other tasks score, r2 or map)."""
    if isinstance(truth, dict):
        truth = pl.DataFrame({"model": list(truth), "accuracy": list(truth.values())})
    if "accuracy" not in truth.columns:           # a regression or multi-label truth: R^2 or mAP
        alias = next((c for c in TRUTH_COLUMNS if c in truth.columns), None)
        if alias is not None:
            truth = truth.rename({alias: "accuracy"})
    missing_cols = {"model", "accuracy"} - set(truth.columns)
    if missing_cols:
        raise ZooforgeError(f"truth needs columns model and accuracy; missing {sorted(missing_cols)} "
                            f"(it has {truth.columns}).")
    if "model" not in ranking.columns:
        raise ZooforgeError(f"the ranking has no `model` column (it has {ranking.columns[:8]}); give a table "
                            f"written by `zooforge rank --out`.")
    value = truth["accuracy"].cast(pl.Float64, strict=False)
    bad = truth.filter(value.is_null() | ~value.fill_null(0.0).is_finite())    # text, empty, NaN or inf
    if bad.height:
        raise ZooforgeError(f"truth `accuracy` must be a finite number for every model; got "
                            f"{['empty' if v is None else str(v) for v in bad['accuracy'].head(3).to_list()]} for model(s) "
                            f"{bad['model'].head(3).to_list()}: give each model its score, or leave the model out.")
    truth = truth.with_columns(value.alias("accuracy"))
    if truth["model"].is_duplicated().any():
        raise ZooforgeError(f"truth lists model(s) twice: {sorted(set(truth.filter(pl.col('model').is_duplicated())['model']))}.")
    unknown = sorted(set(truth["model"]) - set(ranking["model"]))
    if unknown:
        raise ZooforgeError(f"truth names model(s) not in the ranking: {', '.join(unknown)}.")
    chosen = metrics is not None
    metrics = metrics or [c for c in ranking.columns if f"{c}_rank" in ranking.columns] + (
        ["ensemble_z"] if "ensemble_z" in ranking.columns else [])
    if not metrics:
        raise ZooforgeError("the ranking has no estimator columns (<metric> with <metric>_rank); give a table "
                            "written by `zooforge rank --out`.")
    if not chosen and "ordering" in ranking.columns and "rank" in ranking.columns and ranking.height:
        # the order a user acts on, every model in it (missing scores already sorted last); the
        # ordering's name leaves the table with this, it is printed beside it
        ranking = ranking.with_columns((-pl.col("rank").cast(pl.Float64)).alias("ordering"))
        metrics = ["ordering", *metrics]
    joined = ranking.join(truth.select("model", "accuracy"), on="model", how="inner")
    acc = joined["accuracy"].to_numpy().astype(float)
    rows = []
    for m in metrics:
        score = joined[m].to_numpy().astype(float)
        ok = ~np.isnan(score)
        if ok.sum() < 2:
            rows.append({"metric": m, "n_models": int(ok.sum()), "kendall_tau": None, "weighted_tau": None,
                         "pearson_r": None, "top1_regret": None, "top3_hit": None})
            continue
        s, a = score[ok], acc[ok]
        top = np.argsort(-s, kind="stable")
        rows.append({
            "metric": m, "n_models": int(ok.sum()),
            "kendall_tau": float(stats.kendalltau(s, a).statistic),
            "weighted_tau": float(stats.weightedtau(s, a).statistic),
            "pearson_r": float(stats.pearsonr(s, a).statistic) if s.std() > 0 and a.std() > 0 else None,
            "top1_regret": float(a.max() - a[top[0]]),
            "top3_hit": bool(np.argmax(a) in top[:3]),
        })
    return pl.DataFrame(rows)
