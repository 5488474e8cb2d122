"""Orderings: how ``rank`` turns several estimators' scores into the one order a user acts on.

An :class:`Ordering` names estimators and how to combine them: their mean rank (``"rank"``), their
mean z-score (``"z"``) or a weighted sum of z-scores (``"stack"``), optionally with a ``lead``
estimator whose first model goes first. Models are ordered by

0. the lead's first model, when there is a lead,
1. how many of the ordering's estimators gave them no score (a model missing a score never outranks
   one that has it; estimators that scored no model at all in the table are left out first; in a
   stack one missing score counts as the table's mean, and only a model with none of them is last),
2. the combined value,
3. the mean rank over every estimator in the table (ties).

When none of the ordering's estimators scored any model (say LEEP and NCE on headless text
models), the mean rank over the table's estimators orders alone.

Which ordering is the default is not a matter of taste: :func:`stacked_default` is the rule (the
single estimator :func:`choose_ordering` picks leads, :func:`fit_stack` weighs the default
estimators for the rest), and ``benchmarks/selection.py`` applies it leave-one-zoo-out to fine-tune
truth (fitted on the other zoos, scored on the one held out, each rotation) and then to every zoo
for the default that ships; the test ``tests/selection/test_ordering.py`` reproduces it from the
stored data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["Ordering", "DEFAULT_ORDERING", "RULE_MAX_SIZE", "SETTLE", "settled", "metric_ranks", "z_table", "order",
           "judge", "candidates", "choose_ordering", "fit_stack", "stacked_default"]


@dataclass(frozen=True)
class Ordering:
    """Estimators and how their scores are combined into one order (see the module docstring).

    ``combine="stack"`` weighs each estimator's within-table z-score by ``weights`` (one each; a
    missing score counts as the table's mean). ``lead`` names one of ``metrics`` whose first model
    goes first whatever the combination says; the combination orders the rest.
    """

    metrics: tuple[str, ...]
    combine: Literal["rank", "z", "stack"] = "rank"
    weights: tuple[float, ...] = ()
    lead: str | None = None

    def __post_init__(self):
        if not self.metrics:
            raise ValueError("an ordering needs at least one estimator.")
        if self.combine not in ("rank", "z", "stack"):
            raise ValueError(f"combine must be 'rank', 'z' or 'stack'; got {self.combine!r}.")
        if self.combine == "stack" and (len(self.weights) != len(self.metrics)
                                        or not all(np.isfinite(w) and w >= 0 for w in self.weights)):
            raise ValueError(f"a stacked ordering needs one finite weight >= 0 per estimator; got {self.weights} "
                             f"for {self.metrics}.")
        if self.combine != "stack" and self.weights:
            raise ValueError("only a stacked ordering has weights.")
        if self.lead is not None and self.lead not in self.metrics:
            raise ValueError(f"the lead estimator {self.lead!r} must be one of the ordering's {self.metrics}.")

    @property
    def name(self) -> str:
        if self.combine == "stack":
            body = f"stack({'+'.join(f'{w:.6g}*{m}' for w, m in zip(self.weights, self.metrics))})"
        else:
            body = self.metrics[0] if len(self.metrics) == 1 else f"{self.combine}({'+'.join(self.metrics)})"
        return body if self.lead is None else f"{self.lead}>{body}"

    @property
    def first_decided_by(self) -> tuple[str, ...]:
        """The estimators that decide which model comes first (what P(top-1) resamples)."""
        return (self.lead,) if self.lead is not None else self.metrics

    @classmethod
    def parse(cls, text: str) -> "Ordering":
        """``logme``, ``rank(logme+nce)``, ``z(logme+nce)``, ``stack(2*logme+0.5*nce)``, each optionally
        after ``lead>`` (what :attr:`name` writes)."""
        text = text.strip()
        lead, sep, rest = text.partition(">")
        if sep:
            inner = cls.parse(rest)
            return cls(inner.metrics, inner.combine, inner.weights, lead.strip())
        if text.startswith("stack(") and text.endswith(")"):
            terms = [t.partition("*") for t in text[6:-1].split("+") if t.strip()]
            try:
                weights = tuple(float(w) for w, star, _ in terms if star)
            except ValueError:
                weights = ()
            if len(weights) != len(terms) or not terms:
                raise ValueError(f"a stacked ordering is written stack(2*logme+0.5*nce); got {text!r}.")
            return cls(tuple(m.strip() for _, _, m in terms), "stack", weights)
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
# regret; over the 584 the rule holds out at .784 and 4.9 points over the four zoos (.751 and 4.6
# over six, .772 and 3.1 over seven).
RULE_MAX_SIZE = 1

# The default (stacked_default on every stored zoo; ``tests/selection/test_ordering.py`` refits it):
# linear_probe, what choose_ordering picks from that pool in every rotation, leads, so the model a
# user fine-tunes is the probe's; a non-negative pairwise stacker over the default estimators orders
# the rest. Designed after four zoos, it lost to the probe alone on the fifth built to test it
# (timm4) and won on the sixth (timm5) and on the seventh (timm6, built after this rule and its
# six-zoo weights were fixed: .817 tau_w against the probe's .800, same regret). Leave-one-zoo-out
# over seven it holds out at .821 mean tau_w against the probe's .782 with the same regret
# (``python benchmarks/selection.py report``); these weights are its fit on all seven.
DEFAULT_ORDERING = Ordering(("linear_probe", "parc", "transrate", "leep", "hscore_shrink", "gbc", "sfda"), "stack",
                            (1.8669, 0.098, 0.3876, 0.0785, 0.2505, 0.3071, 0.4654), lead="linear_probe")


# Scores of one table closer than this share of its largest magnitude are one score: a smaller
# difference is floating-point noise (H-score on 2 samples a class is C - 1 for every model, give or
# take 1e-15), and ranking or z-scoring it would order equal scores at random.
SETTLE = 1e-9


def settled(values) -> np.ndarray:
    """``values`` with each run of scores whose neighbours (in sorted order) lie within ``SETTLE`` of
    the largest magnitude set to the run's highest: ties that floating-point noise had broken. NaN
    stays NaN."""
    v = np.asarray(values, dtype=float).copy()
    idx = np.flatnonzero(np.isfinite(v))
    if idx.size < 2:
        return v
    tol = SETTLE * np.abs(v[idx]).max()
    idx = idx[np.argsort(-v[idx], kind="stable")]
    starts = np.concatenate([[True], -np.diff(v[idx]) > tol])      # where a new run begins, best first
    v[idx] = v[idx][starts][np.cumsum(starts) - 1]                  # each score becomes its run's first
    return v


def metric_ranks(values: np.ndarray) -> np.ndarray:
    """1 = highest; NaN stays NaN; ties (:func:`settled`) share the lower rank's order (stable)."""
    values = settled(values)
    order_ = (-np.nan_to_num(values, nan=-np.inf)).argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order_] = np.arange(1, len(values) + 1)
    ranks[np.isnan(values)] = np.nan
    return ranks


def _tied_ranks(values: np.ndarray) -> np.ndarray:
    """1 = highest, equal scores (:func:`settled`) share their mean rank; NaN stays NaN."""
    values = settled(values)
    out = np.full(len(values), np.nan)
    finite = ~np.isnan(values)
    out[finite] = stats.rankdata(-values[finite], method="average")
    return out


def _zscores(values: np.ndarray) -> np.ndarray:
    values = settled(values)
    finite = values[~np.isnan(values)]
    if finite.size < 2 or finite.std() == 0:
        return np.where(np.isnan(values), np.nan, 0.0)
    return (values - finite.mean()) / finite.std()


def z_table(scores: Mapping[str, np.ndarray], metrics: Sequence[str], n: int) -> np.ndarray:
    """(models, metrics) z-scores within one table, a missing score (or estimator) at the mean: what
    :func:`fit_stack` learns from and a stack weighs."""
    return np.array([np.nan_to_num(_zscores(np.asarray(scores.get(m, np.full(n, np.nan)), float)))
                     for m in metrics]).reshape(len(metrics), n).T


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
            if ordering.combine == "stack":
                missing = np.isnan(cols).all(axis=0).astype(int)     # one missing score counts as the mean
                weight = dict(zip(ordering.metrics, ordering.weights))
                per = -(z_table(scores, used, n) @ np.array([weight[m] for m in used]))[None, :]
            elif len(used) == 1:
                per = -settled(cols[0])[None, :]                # one estimator: its own score
            elif ordering.combine == "rank":
                per = np.array([_tied_ranks(c) for c in cols])
            else:
                per = -np.array([_zscores(c) for c in cols])
            value = np.nanmean(per, axis=0)
    keys = (np.nan_to_num(overall, nan=np.inf), np.nan_to_num(value, nan=np.inf), missing)
    if ordering.lead is not None and np.isfinite(np.asarray(scores.get(ordering.lead, []), float)).any():
        first = order(scores, Ordering((ordering.lead,)))["position"].argmin()
        keys += (np.arange(n) != first,)                          # the lead's first model, then the rest
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


def fit_stack(tables: Iterable[tuple[Mapping[str, np.ndarray], np.ndarray]], metrics: Sequence[str],
              c: float = 1.0) -> tuple[float, ...]:
    """Weights for ``Ordering(metrics, "stack", weights)`` learned from fine-tune truth.

    ``tables``: one (scores by estimator, fine-tuned accuracy) per target. Each estimator's scores are
    z-scored within the target (a missing score is the mean), and for every pair of models whose
    accuracies differ a logistic model without intercept predicts which one fine-tunes better from the
    difference of their z-scores (learning to rank by pairs). The loss is ``c`` times the summed
    log-loss plus half the squared norm of the weights, minimised with every weight >= 0: each
    estimator is meant to grow with transferability, and a negative weight would only play one
    correlated estimator against another, which does not carry to a new zoo.
    """
    from scipy.optimize import minimize

    diffs = []
    for scores, accuracy in tables:
        z = z_table(scores, metrics, len(accuracy))
        better, worse = np.nonzero(np.subtract.outer(np.asarray(accuracy, float), accuracy) > 0)
        diffs.append(z[better] - z[worse])
    x = np.concatenate(diffs) if diffs else np.empty((0, len(metrics)))
    if not len(x):
        raise ValueError("no pair of models with different accuracies to learn from.")

    def loss(w):
        margin = x @ w
        return c * np.logaddexp(0.0, -margin).sum() + 0.5 * w @ w, -c * x.T @ stats.logistic.cdf(-margin) + w

    fit = minimize(loss, np.zeros(len(metrics)), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * len(metrics))
    return tuple(float(w) for w in fit.x)


def stacked_default(tables, singles: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str]) -> Ordering:
    """The default ordering's rule: the single estimator :func:`choose_ordering` picks from
    ``singles`` leads (its first model goes first), and :func:`fit_stack` over ``metrics`` on
    ``tables`` orders the rest; estimators that get no weight are left out."""
    lead = choose_ordering(singles).metrics[0]
    weights = dict(zip(metrics, fit_stack(tables, metrics)))
    kept = [lead] + [m for m in metrics if m != lead and round(weights[m], 4) > 0]
    return Ordering(tuple(kept), "stack", tuple(round(weights[m], 4) for m in kept), lead)
