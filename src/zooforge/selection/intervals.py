"""The randomness behind a ranking's intervals and P(top-1): one set of draws shared by every model
of a table, so that comparisons between models are paired (see :class:`Resamples`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Resamples", "resamples", "bootstrap_indices", "delete_d_calibrate", "interval_note", "IntervalWarning",
           "SUBSAMPLE_FRACTION"]


class IntervalWarning(UserWarning):
    """Resampling cannot vary some strata (classes) of the data, each a single sample: the intervals
    understate the uncertainty, or, where every stratum is one sample, there are none
    (:func:`interval_note`)."""


# What a stratum of the resampling is called for each target kind (zooforge.zoo.targets.strata).
STRATA_NAMES = {"classification": ("class", "classes"), "regression": ("bin of the target", "bins of the target"),
                "multilabel": ("rarest-tag group", "rarest-tag groups")}


def interval_note(labels: np.ndarray, task: str = "classification") -> str | None:
    """What the intervals and P(top-1) cannot show on data with strata ``labels`` (one code per
    sample, a ``task`` target's :func:`~zooforge.zoo.targets.strata`), or None. Resampling within a
    stratum cannot vary one that has a single sample, so such a stratum is held fixed in every draw:
    where every stratum is a single sample (one-shot data) there is no interval at all
    (:func:`resamples` gives none); where some are, the intervals leave out what those samples would
    change."""
    word, words = STRATA_NAMES.get(task, ("stratum", "strata"))
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    single = int((counts < 2).sum())
    if single and single == len(counts):
        return (f"no intervals or P(top-1): every {word} has a single sample, and resampling within a {word} "
                f"cannot vary one; with at least 2 samples in a {word} they are estimated")
    if single:
        return (f"the intervals and P(top-1) hold fixed the {single} of {len(counts)} {words} with a single "
                f"sample (resampling within a {word} cannot vary one), so they understate the uncertainty")
    return None


def delete_d_calibrate(samples: np.ndarray, score: float, m: int, n: int) -> np.ndarray:
    """Map scores on subsamples of size ``m`` (without replacement) to draws of the full-data score.

    Subsample scores spread too little and sit off-centre: with d = n - m left out, their spread is
    sqrt(d/m) of the full score's (the delete-d jackknife, Shao & Wu, Ann. Stat. 1989; 1/2 at 80%),
    and size-dependent estimators (LogME's evidence, OT costs) shift with m. Centring them on their
    mean and scaling by sqrt(m/d) gives draws around ``score`` with the jackknife's variance.
    """
    if n <= m:
        return samples
    finite = np.isfinite(samples)
    if not finite.any():
        return samples
    return score + np.sqrt(m / (n - m)) * (samples - samples[finite].mean())


@dataclass(frozen=True)
class Resamples:
    """The randomness one table's intervals share, so that comparisons between models are paired.

    An estimator with an influence function (LogME, LEEP, NCE) gets its draws without re-scoring:
    score + draws @ g, the linearisation of the stratified bootstrap (the "infinitesimal jackknife",
    Jaeckel 1972, Efron 1982 ch. 6): ``draws`` are standard normals centred within each class, so a
    draw's variance is sum over classes of sum_i (g_i - mean of g in the class)^2, the bootstrap's
    to first order. The others are re-scored on each stratified 80% subsample of ``indices`` and
    calibrated by :func:`delete_d_calibrate`. Both estimate the spread of the full-data score.
    """

    indices: np.ndarray          # (R, m) sample indices of each subsample
    draws: np.ndarray            # (R, N) class-centred standard normals

    def draw(self, score: float, influence, rescore) -> np.ndarray:
        """R draws of the full-data score: from the influence when given and finite, else by ``rescore``
        (subsample indices -> score) on every subsample."""
        if influence is not None:
            g = np.asarray(influence, dtype=float)
            if g.shape == (self.draws.shape[1],) and np.isfinite(g).all():
                return score + self.draws @ g
        if self.indices.shape[1] == self.draws.shape[1]:      # no class could leave a sample out: no spread to see
            return np.full(len(self.indices), np.nan)
        raw = np.array([rescore(idx) for idx in self.indices])
        return delete_d_calibrate(raw, score, self.indices.shape[1], self.draws.shape[1])


def resamples(labels: np.ndarray, rounds: int, seed: int) -> Resamples | None:
    """The :class:`Resamples` of ``rounds`` draws for a dataset with ``labels``; None for 0 rounds."""
    labels = np.asarray(labels)
    if rounds <= 0 or np.unique(labels).size == labels.size:     # every stratum one sample: nothing can vary
        return None
    rng = np.random.default_rng([seed, 1])
    draws = rng.standard_normal((rounds, len(labels)))
    for c in np.unique(labels):
        members = labels == c
        draws[:, members] -= draws[:, members].mean(axis=1, keepdims=True)
    return Resamples(bootstrap_indices(labels, rounds, seed), draws)


# Share of each class kept per resample. Resampling *with* replacement duplicates samples, which
# shrinks within-class variance and biases separability estimators (H-score, GBC, SFDA) upwards so
# far that intervals miss the point estimate; subsampling without replacement has no such bias.
SUBSAMPLE_FRACTION = 0.8


def bootstrap_indices(labels: np.ndarray, rounds: int, seed: int) -> np.ndarray | None:
    """Stratified subsamples without replacement (every class keeps 80% of its samples)."""
    if rounds <= 0:
        return None
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    # at least 2 of a class (estimators of within-class spread need them), and one left out of a class
    # of 3 or 4, which 80% rounded up would keep whole: a class kept whole never varies
    sizes = [min(max(2, int(np.ceil(SUBSAMPLE_FRACTION * g.size))), g.size - 1) if g.size >= 3 else g.size
             for g in groups]
    return np.stack([np.sort(np.concatenate([rng.choice(g, size=k, replace=False) for g, k in zip(groups, sizes)]))
                     for _ in range(rounds)])
