"""How much does each part of the default ordering's stacker matter, on zoos it was not fitted on?

    python benchmarks/selection.py report      # the single estimators, the rule's picks, the default's rule held out
    python benchmarks/stacking.py              # this: the stacker's variants, leave-one-zoo-out

The default ordering (``zooforge.selection.ordering.DEFAULT_ORDERING``) is a pairwise stacker: each
estimator's scores are z-scored within a target, and a logistic model without intercept learns
weights from every pair of models of the training targets, predicting which of the two fine-tunes
better from the difference of their z-scores (``fit_stack``). Here every variant is fitted on all
zoos but one of ``benchmarks/selection_data.json`` and scored on the one held out, in every rotation,
as the report scores an ordering (weighted tau, top-1 regret):

* non-negative weights (``fit_stack``, the default's) or unconstrained ones (scikit-learn's
  ``LogisticRegression``, where correlated estimators may get opposite signs);
* with or without a lead (linear_probe's first model first, the stack ordering the rest);
* over the default estimators (what ``rank`` computes) or every estimator of the benchmark;
* the penalty ``c`` (loss = c * summed log-loss + |w|^2 / 2) at 0.1, 1 (the default's) and 10.

None is picked here: choosing among them on these held-out numbers would make them in-sample. The
reference row is linear_probe alone, which the single-estimator rule picks in every rotation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import selection  # noqa: E402

from zooforge.selection.ordering import Ordering, fit_stack, judge, order, z_table  # noqa: E402
from zooforge.selection.rank import DEFAULT_METRICS  # noqa: E402

LEAD = "linear_probe"


def fit_unconstrained(tables, use: list[str], c: float) -> tuple[float, ...]:
    """The same pairwise model without the sign constraint (scikit-learn; pairs in both directions)."""
    from sklearn.linear_model import LogisticRegression

    xs, ys = [], []
    for scores, acc in tables:
        z = z_table(scores, use, len(acc))
        better, worse = np.nonzero(np.subtract.outer(acc, acc) > 0)
        xs += [z[better] - z[worse], z[worse] - z[better]]
        ys += [np.ones(len(better)), np.zeros(len(better))]
    model = LogisticRegression(C=c / 2, fit_intercept=False, max_iter=5000)   # both directions: c/2 is the same penalty
    return tuple(model.fit(np.concatenate(xs), np.concatenate(ys)).coef_[0])


def ordered(scores: dict, use: list[str], weights, lead: bool) -> np.ndarray:
    """Positions under w . z (any sign), linear_probe's first model first when ``lead``."""
    value = z_table(scores, use, len(next(iter(scores.values())))) @ np.asarray(weights)
    if lead:
        value[order(scores, Ordering((LEAD,)))["position"].argmin()] = np.inf
    position = np.empty(len(value), int)
    position[np.argsort(-value, kind="stable")] = np.arange(len(value))
    return position


def held_out(cells, budgets, use, fitter, c, lead) -> dict[str, tuple[float, float]]:
    out = {}
    for zoo in sorted({z for z, _ in cells}):
        weights = fitter([(s, a) for (z, _), (_, a, _, s) in cells.items() if z != zoo], use, c)
        rows = [judge(ordered(s, use, weights, lead), a, g, budgets[zoo])
                for (z, _), (_, a, g, s) in cells.items() if z == zoo]
        out[zoo] = (float(np.mean([r["weighted_tau"] for r in rows])), float(np.mean([r["regret"] for r in rows])))
    return out


def main() -> None:
    cells, budgets = selection.tables(json.loads(selection.DATA.read_text()))
    every = sorted({m for cell in cells.values() for m in cell[3]})
    zoos = sorted({z for z, _ in cells})
    print(f"held-out weighted tau / top-1 regret (points) per zoo; {len(cells)} targets over {len(zoos)} zoos")

    def line(name: str, r: dict) -> None:
        cols = "  ".join(f"{z} {t:.3f}/{g:4.1f}" for z, (t, g) in r.items())
        print(f"{name:50s} {cols}  | mean {np.mean([t for t, _ in r.values()]):.3f} / "
              f"{np.mean([g for _, g in r.values()]):.2f}")

    probe = {}
    for zoo in zoos:
        rows = [judge(order(s, Ordering((LEAD,)))["position"], a, g, budgets[zoo])
                for (z, _), (_, a, g, s) in cells.items() if z == zoo]
        probe[zoo] = (np.mean([r["weighted_tau"] for r in rows]), np.mean([r["regret"] for r in rows]))
    line(f"{LEAD} alone (reference)", probe)
    for pool, use in (("default estimators", list(DEFAULT_METRICS)), ("every estimator", every)):
        for name, fitter in (("non-negative", lambda t, u, c: fit_stack(t, u, c)), ("unconstrained", fit_unconstrained)):
            for lead in (True, False):
                for c in (0.1, 1.0, 10.0):
                    line(f"{name}, {pool}, c={c:g}{', probe leads' if lead else ''}",
                         held_out(cells, budgets, use, fitter, c, lead))


if __name__ == "__main__":
    main()
