"""NCE: negative conditional entropy of target labels given source labels.

Tran, Nguyen & Hassner, "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019.
https://arxiv.org/abs/1908.08142

.. math::
    \\mathrm{NCE}(Y \\mid Z) = -H(Y \\mid Z)
        = \\sum_{z, y} \\hat P(z, y) \\log \\frac{\\hat P(z, y)}{\\hat P(z)}

where Z is the source model's predicted class of each target sample and :math:`\\hat P` the empirical
joint distribution over the N samples. Range (-log C, 0]; 0 exactly when the target label is a
function of the source label. Higher = better transfer.

Shape: ``source_preds`` (N,) predicted source classes, or (N, Z) source probabilities (the argmax is
taken); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import check_categorical, check_labels, check_probs
from zooforge.metrics.registry import register

__all__ = ["nce", "nce_influence", "negative_conditional_entropy"]


def negative_conditional_entropy(joint: np.ndarray) -> float:
    """-H(B|A) for a joint distribution ``joint[a, b]`` (rows: the conditioning variable)."""
    marginal = joint.sum(axis=1, keepdims=True)
    mask = joint > 0  # 0 log 0 = 0; a row with P(a) = 0 has no mass at all
    return float(np.sum(joint[mask] * np.log((joint / np.where(marginal > 0, marginal, 1.0))[mask])))


def _source_classes(source_preds, n_samples: int) -> np.ndarray:
    arr = np.asarray(source_preds.detach().cpu() if hasattr(source_preds, "detach") else source_preds)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return check_probs(arr, "source_preds", n_samples=n_samples).argmax(axis=1)
    return check_categorical(arr, "source_preds", n_samples=n_samples)[0]


def nce_influence(source_probs, labels) -> tuple[float, np.ndarray]:
    """(NCE, g): g[i] = d NCE / d w_i at equal weights = (log P(y_i | z_i) - NCE) / N (the counts'
    own derivative: d/dn_zy of sum n_zy log n_zy - sum n_z log n_z is log(n_zy / n_z))."""
    y, n_classes = check_labels(labels)
    z = _source_classes(source_probs, len(y))
    _, z = np.unique(z, return_inverse=True)
    counts = np.zeros((z.max() + 1, n_classes))
    np.add.at(counts, (z, y), 1.0)
    score = negative_conditional_entropy(counts / len(y))
    log_conditional = np.log(counts[z, y] / counts.sum(axis=1)[z])
    return score, (log_conditional - score) / len(y)


@register("nce", needs=("source_probs",), summary="-H(Y|Z) with Z the source head's argmax (Tran et al. 2019)",
          influence=nce_influence)
def _nce_registered(source_probs, labels) -> float:
    return nce(source_probs, labels)


def nce(source_preds, labels) -> float:
    """Negative conditional entropy -H(Y|Z); 0 is perfect, higher = better."""
    y, n_classes = check_labels(labels)
    z = _source_classes(source_preds, len(y))
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((z.max() + 1, n_classes))
    np.add.at(joint, (z, y), 1.0)
    return negative_conditional_entropy(joint / len(y))
