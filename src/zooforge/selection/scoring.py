"""Score one model's features with every estimator asked: the step between extraction and the table.

Each estimator gives a point score and, with resamples, one draw per resample: from its influence
function where it has one (next to free), else by re-scoring on every subsample (only for the
estimators asked to). An estimator that cannot feed on the model's inputs, cannot score the task or
returns a score that is not finite is *skipped* with the reason, never given a number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from zooforge.errors import first_line
from zooforge.metrics import get_estimator

if TYPE_CHECKING:
    from zooforge.selection.intervals import Resamples

__all__ = ["score_featureset"]


def score_featureset(fs, metrics: Sequence[str], *, resamples: "Resamples | None" = None,
                     resample: Sequence[str] | None = None, progress: bool = False,
                     description: str = "score") -> dict[str, dict]:
    """{metric: {"score", "samples" (one draw of the score per resample), "skipped"}} for one FeatureSet.

    With ``resamples``, every estimator with an influence function gets draws (they cost next to
    nothing); one without gets them by re-scoring on every subsample, only if it is in ``resample``
    (None: all). ``progress``: a bar (labelled ``description`` and the estimator at work) that counts
    one step per point score and one per re-scored subsample."""
    from zooforge.zoo.features import progress_bar

    rounds = 0 if resamples is None else len(resamples.indices)
    steps = {name: 1 + (rounds if get_estimator(name).influence is None and (resample is None or name in resample)
                        else 0) for name in metrics}
    with progress_bar(progress, description, sum(steps.values())) as advance:
        return _score_each(fs, metrics, resamples, resample, steps, advance, description)


def _score_each(fs, metrics, resamples, resample, steps, advance, description) -> dict[str, dict]:
    inputs = fs.inputs()
    available = {k for k, v in inputs.items() if v is not None}
    task = getattr(fs, "task", "classification")
    out: dict[str, dict] = {}
    for name in metrics:
        advance(0, f"{description}: {name}")
        budget = [steps[name] - 1]              # the steps counted for this estimator's re-scoring

        def rescore(idx, est=get_estimator(name)):
            if budget[0] > 0:                   # (an influence that was not finite re-scores unannounced)
                budget[0] -= 1
                advance(1)
            return _resampled(est, fs, inputs, idx, task)

        out[name] = _score_one(name, fs.labels, inputs, available, task, resamples, resample, rescore)
        advance(1 + budget[0])                  # the point score, and re-scoring a skip left undone
    return out


def _score_one(name, labels, inputs, available, task, resamples, resample, rescore) -> dict:
    est = get_estimator(name)
    unsupported = est.unsupported(task)
    if unsupported:
        return {"score": None, "samples": None, "skipped": unsupported}
    lacking = est.missing(available)
    if lacking:
        return {"score": None, "samples": None,
                "skipped": f"needs {', '.join(lacking)} (model has no {'classifier head' if 'source_probs' in lacking else 'source data'})"}
    try:
        influence = None
        if resamples is not None and est.influence is not None:
            score, influence = est.with_influence(labels, inputs, task)
        else:
            score = est(labels, inputs, task)
        if score is None or not np.isfinite(score):
            return {"score": None, "samples": None, "skipped": _not_finite(score, labels, task)}
        samples = None
        if resamples is not None and (influence is not None or resample is None or name in resample):
            samples = resamples.draw(score, influence, rescore)
        return {"score": score, "samples": samples, "skipped": None}
    except ValueError as exc:
        return {"score": None, "samples": None, "skipped": first_line(exc)}


def _not_finite(score, labels, task: str = "classification") -> str:
    """Why a score is missing when the estimator returned one that is not a number."""
    if task != "classification":
        return f"returned {score} (not a finite score) on {len(labels)} samples of a {task} target"
    counts = np.bincount(np.asarray(labels))
    counts = counts[counts > 0]
    return (f"returned {score} (not a finite score) on {len(labels)} samples, smallest class "
            f"{int(counts.min()) if counts.size else 0}: too few samples per class for this estimator?")


def _resampled(est, fs, inputs, idx, task: str) -> float:
    try:
        return est(fs.labels[idx], {k: (v[idx] if v is not None else None) for k, v in inputs.items()}, task)
    except ValueError:
        return float("nan")   # a resample that lost a class: excluded from the interval
