"""Does the best of several challengers beat the incumbent? A paired test on held-out samples.

Two places ask it: DeRy's screen (does the best mix beat the single model?) and ``select`` (does a
short-fine-tuned challenger beat the model the ranking put first?). Both compare candidates that
were scored on the *same* validation samples, so the evidence is the per-sample difference (0/1
correctness for classes, see :meth:`~zooforge.tuning.objectives.Objective.per_sample` for the
other tasks), and both pick the best of several noisy leads, which is biased upwards: the lead must
clear a one-sided threshold at level ``ALPHA`` with a Bonferroni correction over the challengers.

``ALPHA`` was chosen once, on DeRy's screen (by leave-one-target-out from 0.5 ... 0.01 over 32 demo
runs; on all four targets the best level, ties to the smaller, is 0.05), and ``select`` takes it; it
was not chosen on select's data, and the level of a test that guards the user's ranking is not
loosened on a second look. DeRy's screen has since chosen its own test on its own data, six image
zoos leave-one-zoo-out (``zooforge.reassembly.screen``: minus the Brier score at level 0.5); nothing
in that recording speaks for select's trials, so select keeps 0.05 on 0/1 (or its task's) evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ALPHA", "keep", "keep_margin"]

ALPHA = 0.05


def keep_margin(challengers: int, alpha: float = ALPHA) -> float:
    """How many standard errors of the paired difference the best of ``challengers`` must lead the
    incumbent by: z_(1 - alpha / challengers), the one-sided Bonferroni threshold."""
    from scipy.stats import norm

    if not 0 < alpha <= 0.5:
        raise ValueError(f"`alpha` must be in (0, 0.5] (above 0.5 a challenger that is worse could be kept); "
                         f"got {alpha}.")
    return float(norm.ppf(1 - alpha / max(1, challengers)))


def keep(evidence: list[torch.Tensor], incumbent: int | None, alpha: float = ALPHA) -> tuple[int, int | None,
                                                                                             float | None]:
    """Which candidate to keep from their per-sample validation evidence (higher is better; 0/1
    correctness for classes): the best challenger (earliest on ties) if there is no ``incumbent`` or
    it beats ``evidence[incumbent]`` by more than :func:`keep_margin` (challengers compared,
    ``alpha``) standard errors of the paired difference; else the incumbent. With a validation set
    of a hundred samples a challenger that merely ties the incumbent is as likely to be worse.
    Returns (kept, best challenger or None, its lead over the incumbent in standard errors or None)."""
    challengers = [i for i in range(len(evidence)) if i != incumbent]
    if not challengers:
        return incumbent, None, None
    best = max(challengers, key=lambda i: (float(evidence[i].double().mean()), -i))
    if incumbent is None:
        return best, best, None
    diff = (evidence[best].double() - evidence[incumbent].double())
    gain = float(diff.mean())
    se = float(diff.std() / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    margin = gain / se if se > 0 else (0.0 if gain == 0 else float(np.sign(gain)) * np.inf)
    return (best if gain > keep_margin(len(challengers), alpha) * se else incumbent), best, margin
