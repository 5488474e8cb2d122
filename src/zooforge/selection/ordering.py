"""Orderings: how ``rank`` turns several estimators' scores into the one order a user acts on.

An :class:`Ordering` names estimators and how to combine them: their mean rank (``"rank"``) or their
mean z-score (``"z"``). Models are ordered by

1. how many of the ordering's estimators gave them no score (a model missing a score never outranks
   one that has it; estimators that scored no model at all in the table are left out first),
2. the combined value,
3. the mean rank over every estimator in the table (ties).

When none of the ordering's estimators scored any model (say LEEP and NCE on headless text
models), the mean rank over the table's estimators orders alone.

Which ordering is the default is not a matter of taste: :func:`choose_ordering` is the rule, and
``benchmarks/selection.py`` applies it leave-one-zoo-out to fine-tune truth on four zoos (chosen
on the others, scored on the one held out, each rotation) and then to all four for the default that ships; the
test ``tests/selection/test_ordering.py`` reproduces that choice from the stored data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["Ordering", "DEFAULT_ORDERING", "RULE_MAX_SIZE", "metric_ranks", "order", "judge", "candidates", "choose_ordering"]


@dataclass(frozen=True)
class Ordering:
    """Estimators and how their scores are combined into one order (see the module docstring)."""

    metrics: tuple[str, ...]
    combine: Literal["rank", "z"] = "rank"

    def __post_init__(self):
        if not self.metrics:
            raise ValueError("an ordering needs at least one estimator.")
        if self.combine not in ("rank", "z"):
            raise ValueError(f"combine must be 'rank' or 'z'; got {self.combine!r}.")

    @property
    def name(self) -> str:
        return self.metrics[0] if len(self.metrics) == 1 else f"{self.combine}({'+'.join(self.metrics)})"

    @classmethod
    def parse(cls, text: str) -> "Ordering":
        """``logme``, ``rank(logme+nce)`` or ``z(logme+nce)`` (what :attr:`name` writes)."""
        text = text.strip()
        for combine in ("rank", "z"):
            if text.startswith(combine + "(") and text.endswith(")"):
                return cls(tuple(m.strip() for m in text[len(combine) + 1:-1].split("+") if m.strip()), combine)
        return cls((text,))


# Which orderings the rule chooses among: single estimators only (``candidates(..., RULE_MAX_SIZE)``).
# ``python benchmarks/selection.py report`` scores the rule leave-one-zoo-out over both pools. On the
# first three zoos, over every mean-rank and mean-z combination of up to 3 estimators (584
# candidates) it held out at mean weighted tau .708 and mean top-1 regret 8.4 points; over the 12
# single estimators at .783 and 1.2 (linear_probe in every rotation). Three zoos cannot choose among
# 584 orderings: a pick's in-sample lead mostly vanished on the zoo held out, and the model a user
# fine-tunes was worse. That comparison of two pools was itself made on those zoos, so a fourth zoo
# (timm3) was built after this choice: over the 12 the rule still picks linear_probe in every
# rotation, and on timm3, which nothing was chosen on, the probe scores .748 tau and 0 points of
# regret; over the 584 the rule holds out at .784 and 4.9 points over the four zoos.
RULE_MAX_SIZE = 1

# What the rule picks on all four zoos from that pool (``tests/selection/test_ordering.py`` checks).
DEFAULT_ORDERING = Ordering(("linear_probe",))


def metric_ranks(values: np.ndarray) -> np.ndarray:
    """1 = highest; NaN stays NaN; ties share the lower rank's order (stable)."""
    values = np.asarray(values, dtype=float)
    order_ = (-np.nan_to_num(values, nan=-np.inf)).argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order_] = np.arange(1, len(values) + 1)
    ranks[np.isnan(values)] = np.nan
    return ranks


def _tied_ranks(values: np.ndarray) -> np.ndarray:
    """1 = highest, equal scores share their mean rank; NaN stays NaN."""
    out = np.full(len(values), np.nan)
    finite = ~np.isnan(values)
    out[finite] = stats.rankdata(-values[finite], method="average")
    return out


def _zscores(values: np.ndarray) -> np.ndarray:
    finite = values[~np.isnan(values)]
    if finite.size < 2 or finite.std() == 0:
        return np.where(np.isnan(values), np.nan, 0.0)
    return (values - finite.mean()) / finite.std()


def order(scores: Mapping[str, np.ndarray], ordering: Ordering) -> dict[str, np.ndarray]:
    """Sort keys for the models of one table: ``missing`` (the ordering's estimators without a
    score), ``value`` (the combined value, lower is better) and ``position`` (0 = first)."""
    import warnings

    n = len(next(iter(scores.values()))) if scores else 0
    table_ranks = np.array([_tied_ranks(np.asarray(v, float)) for v in scores.values()]) if scores else np.empty((0, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)            # all-NaN columns stay NaN
        overall = np.nanmean(table_ranks, axis=0) if len(table_ranks) else np.zeros(n)
        used = [m for m in ordering.metrics if m in scores and np.isfinite(np.asarray(scores[m], float)).any()]
        if not used:
            missing = np.isnan(table_ranks).sum(axis=0) if len(table_ranks) else np.zeros(n)
            value = overall
        else:
            cols = np.array([np.asarray(scores[m], float) for m in used])
            missing = np.isnan(cols).sum(axis=0)
            if len(used) == 1:
                per = -cols                                     # one estimator: its own score
            elif ordering.combine == "rank":
                per = np.array([_tied_ranks(c) for c in cols])
            else:
                per = -np.array([_zscores(c) for c in cols])
            value = np.nanmean(per, axis=0)
    keys = (np.nan_to_num(overall, nan=np.inf), np.nan_to_num(value, nan=np.inf), missing)
    position = np.empty(n, dtype=int)
    position[np.lexsort(keys)] = np.arange(n)                      # last key sorts first
    return {"missing": missing.astype(int), "value": value, "position": position}


def judge(position: np.ndarray, accuracy: np.ndarray, gmacs: np.ndarray | None = None,
          budgets: Sequence[float] = ()) -> dict[str, float]:
    """How good one order is against fine-tuned accuracies: weighted tau (scipy's, hyperbolic weights
    on the rank), Kendall tau, top-1 regret in accuracy points, and top-1 regret among the models
    within each GMACs budget (``regret_b<i>``)."""
    position, accuracy = np.asarray(position), np.asarray(accuracy, float)
    score = -position.astype(float)
    out = {"weighted_tau": float(stats.weightedtau(score, accuracy).statistic),
           "kendall_tau": float(stats.kendalltau(score, accuracy).statistic),
           "regret": 100 * float(accuracy.max() - accuracy[position.argmin()])}
    for i, budget in enumerate(budgets):
        inside = np.flatnonzero(np.asarray(gmacs) <= budget)
        out[f"regret_b{i}"] = (100 * float(accuracy[inside].max() - accuracy[inside[position[inside].argmin()]])
                               if inside.size else float("nan"))
    return out


def candidates(metrics: Iterable[str], max_size: int = 3) -> list[Ordering]:
    """Every single estimator, and the mean rank and mean z-score of every 2..``max_size`` of them."""
    metrics = sorted(metrics)
    out = [Ordering((m,)) for m in metrics]
    for k in range(2, max_size + 1):
        for combo in itertools.combinations(metrics, k):
            out += [Ordering(combo, "rank"), Ordering(combo, "z")]
    return out


def choose_ordering(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Ordering:
    """The rule that picks the default, fixed before it was run on any data.

    ``results[ordering name][zoo]`` holds that ordering's mean weighted tau (``weighted_tau``) and
    mean top-1 regret (``regret``) over the zoo's targets. The pick maximises the mean over zoos of
    weighted tau (each zoo counts once, however many targets it has); near-ties (within 0.01) go to
    the lower mean regret, then to fewer estimators.
    """
    def mean(name, key):
        return float(np.mean([z[key] for z in results[name].values()]))

    taus = {name: mean(name, "weighted_tau") for name in results}
    best = max(taus.values())
    close = [name for name in results if taus[name] >= best - 0.01]
    pick = min(close, key=lambda name: (mean(name, "regret"), len(Ordering.parse(name).metrics), -taus[name], name))
    return Ordering.parse(pick)
