"""Can a fitted stacker over the estimators' scores beat the best single estimator on a zoo it never saw?

    python benchmarks/selection.py report      # the single estimators and the rank/z combinations
    python benchmarks/stacking.py              # this: a pairwise logistic stacker, leave-one-zoo-out

Issue "Pick the right model" allows a fitted stacker as the default ordering. This fits one in the
way learning-to-rank does: each estimator's scores are z-scored within a target (a missing score is
the target's mean), and a logistic regression without intercept learns weights w from every pair
of models of the training targets, predicting which of the two fine-tunes better from the
difference of their z-scores (optionally weighted by the accuracy gap). It is fitted on all zoos but one of
``benchmarks/selection_data.json`` and orders the one held out by w . z, in every rotation, scored as the
report scores an ordering (weighted tau, top-1 regret). Every setting of a small fixed grid is
printed, none is picked: choosing among them on these held-out numbers would make them in-sample.
The reference row is the shipped default, ``linear_probe`` alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import selection  # noqa: E402

from zooforge.selection.ordering import DEFAULT_ORDERING, judge, order  # noqa: E402

HEADLESS = ("leep", "nce", "nleep")       # need a source head: no score on text models


def z_features(scores: dict, use: list[str]) -> np.ndarray:
    n = len(next(iter(scores.values())))
    cols = []
    for m in use:
        v = np.asarray(scores.get(m, np.full(n, np.nan)), float)
        finite = v[np.isfinite(v)]
        z = (v - finite.mean()) / finite.std() if finite.size > 1 and finite.std() > 0 else np.zeros(n)
        cols.append(np.nan_to_num(z, nan=0.0))
    return np.array(cols).T


def fit(cells: dict, keys: list, use: list[str], c: float, weighted: bool) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    xs, ys, ws = [], [], []
    for k in keys:
        _, acc, _, scores = cells[k]
        x = z_features(scores, use)
        for i in range(len(acc)):
            for j in range(len(acc)):
                if acc[i] != acc[j]:
                    xs.append(x[i] - x[j])
                    ys.append(int(acc[i] > acc[j]))
                    ws.append(abs(acc[i] - acc[j]) if weighted else 1.0)
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=5000)
    return model.fit(np.array(xs), np.array(ys), sample_weight=np.array(ws)).coef_[0]


def held_out(cells: dict, budgets: dict, use: list[str], c: float, weighted: bool) -> dict[str, tuple[float, float]]:
    out = {}
    for zoo in sorted({z for z, _ in cells}):
        w = fit(cells, [k for k in cells if k[0] != zoo], use, c, weighted)
        rows = []
        for k in (k for k in cells if k[0] == zoo):
            _, acc, gmacs, scores = cells[k]
            value = z_features(scores, use) @ w
            position = np.empty(len(value), int)
            position[np.argsort(-value, kind="stable")] = np.arange(len(value))
            rows.append(judge(position, acc, gmacs, budgets[zoo]))
        out[zoo] = (float(np.mean([r["weighted_tau"] for r in rows])), float(np.mean([r["regret"] for r in rows])))
    return out


def main() -> None:
    cells, budgets = selection.tables(json.loads(selection.DATA.read_text()))
    every = sorted({m for cell in cells.values() for m in cell[3]})
    pools = {"every estimator": every, "without the head-based": [m for m in every if m not in HEADLESS]}
    zoos = sorted({z for z, _ in cells})
    print(f"held-out weighted tau / top-1 regret (points) per zoo; {len(cells)} targets")
    reference = {}
    for zoo in zoos:
        rows = [judge(order(s, DEFAULT_ORDERING)["position"], a, g, budgets[zoo])
                for (z, _), (_, a, g, s) in cells.items() if z == zoo]
        reference[zoo] = (np.mean([r["weighted_tau"] for r in rows]), np.mean([r["regret"] for r in rows]))
    def line(name: str, r: dict) -> None:
        cols = "  ".join(f"{z} {t:.3f}/{g:4.1f}" for z, (t, g) in r.items())
        print(f"{name:54s} {cols}  | mean {np.mean([t for t, _ in r.values()]):.3f} / "
              f"{np.mean([g for _, g in r.values()]):.2f}")

    line(f"{DEFAULT_ORDERING.name} (shipped default)", reference)
    for label, use in pools.items():
        for c in (0.01, 0.1, 1.0):
            for weighted in (False, True):
                line(f"stacker, {label}, C={c:g}{', gap-weighted' if weighted else ''}",
                     held_out(cells, budgets, use, c, weighted))


if __name__ == "__main__":
    main()
