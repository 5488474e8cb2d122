"""Score vs GMACs with bootstrap error bars and the Pareto front; ``select``'s validation accuracy by
round (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from zooforge.errors import ZooforgeError
from zooforge.selection.rank import pareto_front

__all__ = ["plot_ranking", "plot_rounds"]


def plot_ranking(table: pl.DataFrame, out: str | Path, metric: str | None = None,
                 budget_gmacs: float | None = None, title: str | None = None) -> Path:
    """Write a PNG/PDF/SVG of ``metric`` (default: the first estimator in the table) against GMACs.

    Error bars are the table's 90% bootstrap interval for that metric; the line joins the models on
    the score-vs-GMACs Pareto front of that metric (no cheaper model scores higher).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if metric is None:
        metric = next((c[:-len("_rank")] for c in table.columns if c.endswith("_rank") and c != "mean_rank"), None)
    if metric is None or metric not in table.columns:
        raise ZooforgeError(f"the ranking has no column {metric!r} to plot; it has {table.columns}.")
    rows = table.filter(pl.col(metric).is_not_null() & pl.col("gmacs").is_not_null())
    if rows.height == 0:
        raise ZooforgeError(f"no model has both a {metric} score and a GMACs count to plot.")
    x = rows["gmacs"].to_numpy().astype(float)
    y = rows[metric].to_numpy().astype(float)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if f"{metric}_lo" in rows.columns and rows[f"{metric}_lo"].null_count() < rows.height:
        lo = np.nan_to_num(rows[f"{metric}_lo"].to_numpy().astype(float), nan=0.0)
        hi = np.nan_to_num(rows[f"{metric}_hi"].to_numpy().astype(float), nan=0.0)
        err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        err[:, np.isnan(rows[f"{metric}_lo"].to_numpy().astype(float))] = 0.0
        ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, color="tab:blue", label=f"{metric} (90% interval)")
    else:
        ax.plot(x, y, "o", ms=4, color="tab:blue", label=metric)
    front = pareto_front(y, x)
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "-", color="tab:orange", label="Pareto front")
    for xi, yi, name in zip(x, y, rows["model"].to_list()):
        ax.annotate(name.split("/")[-1], (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if budget_gmacs is not None:
        ax.axvline(budget_gmacs, ls="--", color="grey", label=f"budget {budget_gmacs:g} GMACs")
    ax.set_xscale("log")
    ax.set_xlabel("GMACs at input size")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs cost")
    ax.legend(fontsize=7)
    return _save(fig, out)


def plot_rounds(rounds: list[dict], out: str | Path, title: str | None = None, chosen: str | None = None) -> Path:
    """Validation accuracy of each model by successive-halving round (x: epochs trained, log 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rounds:
        raise ZooforgeError("no rounds to plot: select ran no trial.")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    by_model: dict[str, list[dict]] = {}
    for r in rounds:
        by_model.setdefault(r["model"], []).append(r)
    for model, rows in by_model.items():
        rows = sorted(rows, key=lambda r: r["round"])
        ax.plot([r["epochs"] for r in rows], [r["val_accuracy"] for r in rows], "o-", ms=4,
                lw=2.5 if model == chosen else 1, label=model.split("/")[-1] + (" (chosen)" if model == chosen else ""))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs trained in the round")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "successive halving")
    ax.legend(fontsize=7)
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
