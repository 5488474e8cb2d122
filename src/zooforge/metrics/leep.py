"""LEEP: log expected empirical prediction.

Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned
Representations", ICML 2020. https://arxiv.org/abs/2002.12462

With :math:`\\theta_i = p(z \\mid x_i)` the source model's probabilities over its Z classes:

.. math::
    \\hat P(y, z) = \\frac{1}{N} \\sum_{i: y_i = y} \\theta_i(z), \\qquad
    \\hat P(y \\mid z) = \\frac{\\hat P(y, z)}{\\sum_{y'} \\hat P(y', z)}, \\qquad
    \\mathrm{LEEP} = \\frac{1}{N} \\sum_i \\log \\sum_z \\hat P(y_i \\mid z)\\, \\theta_i(z)

This is the paper's definition, *with* the log (SFDA's and ETran's code drop it; their values are not
comparable). LEEP <= 0; higher = better transfer.

Shape: ``source_probs`` (N, Z) rows summing to 1; ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import check_labels, check_probs
from zooforge.metrics.registry import register

__all__ = ["leep", "leep_influence", "log_expected_empirical_prediction"]


def log_expected_empirical_prediction(theta: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """LEEP from validated inputs: probabilities ``theta`` (N, Z), codes ``y`` in 0..C-1."""
    n = theta.shape[0]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    joint = onehot.T @ theta / n                           # (C, Z): P(y, z)
    marginal_z = joint.sum(axis=0, keepdims=True)           # (1, Z): P(z)
    # A source class no sample puts mass on has P(z) = 0 and theta[:, z] = 0: it adds nothing.
    conditional = joint / np.where(marginal_z > 0, marginal_z, 1.0)   # (C, Z): P(y | z)
    expected = np.einsum("nz,nz->n", theta, conditional[y])          # (N,): sum_z P(y_i|z) theta_i(z)
    return float(np.mean(np.log(expected)))


def leep_influence(source_probs, labels) -> tuple[float, np.ndarray]:
    """(LEEP, g): g[j] = d LEEP / d w_j, sample j's weight, at equal weights. Besides its own term
    (log p_j - LEEP) / N, a sample moves the empirical conditional P(y | z) that every prediction uses:
    d P(y|z) / d w_j = theta_j(z) (1[y_j = y] - P(y|z)) / Q(z), with Q(z) = sum_i theta_i(z)."""
    y, n_classes = check_labels(labels)
    theta = check_probs(source_probs, n_samples=len(y))
    n = theta.shape[0]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    mass = theta.sum(axis=0)                                           # (Z,): Q(z)
    safe = np.where(mass > 0, mass, 1.0)
    conditional = (onehot.T @ theta) / safe                            # (C, Z): P(y | z)
    expected = np.einsum("nz,nz->n", theta, conditional[y])           # (N,): p_i
    score = float(np.mean(np.log(expected)))
    pull = onehot.T @ (theta / expected[:, None])                      # (C, Z): G(y, z)
    centred = pull - (conditional * pull).sum(axis=0, keepdims=True)   # G(y, z) - sum_y' P(y'|z) G(y', z)
    indirect = np.einsum("nz,nz->n", theta / safe, centred[y])
    return score, (np.log(expected) - score + indirect) / n


@register("leep", needs=("source_probs",), summary="log expected empirical prediction (Nguyen et al. 2020)",
          influence=leep_influence)
def leep(source_probs, labels) -> float:
    """LEEP score of a source model's probabilities on a target task; higher = better."""
    y, n_classes = check_labels(labels)
    theta = check_probs(source_probs, n_samples=len(y))
    return log_expected_empirical_prediction(theta, y, n_classes)
