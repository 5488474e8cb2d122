"""SFDA: Self-challenging Fisher Discriminant Analysis.

Shao, Zhao, Tang, Chen, Yuan, Chen & Wang, "Not All Models Are Equal: Predicting Model
Transferability in a Self-challenging Fisher Space", ECCV 2022. https://arxiv.org/abs/2207.03036
Reported above LogME in weighted Kendall tau on the 11-model x 11-dataset benchmark (e.g. CIFAR-10
0.949 vs 0.852, Pets 0.734 vs 0.411).

1. Regularised FDA: within-class scatter S_w (prior-weighted class covariances), shrinkage
   lambda = exp(-5 * largest eigenvalue of S_w) towards tr(S)/D I for both S_w and the total
   covariance S_t; S_b = S_t - S_w(lambda); the Fisher directions solve S_b v = w S_w(lambda) v. The
   class posterior p(y | x) is the softmax of the LDA discriminant in that space. As the reference
   keeps all D directions, that discriminant is means S_w(lambda)^-1 x, computed by one Cholesky
   solve (S_t and S_b drop out; see ``_fisher_posterior``).
2. ConfMix (self-challenge): each sample moves towards the mean of the other classes' means by its
   softened confidence, x' = p x + (1 - p) mu_{-y}, with p = softmax(p(y | x))_y.
3. The FDA is refitted on x' with the same lambda; the score is mean_i p(y_i | x'_i) (no log, as in
   the paper's code). Higher = better.

Convention that differs from the reference code: the largest eigenvalue of S_w that sets lambda is
computed exactly (``eigvalsh``); the reference runs three power iterations from a fixed start, which
can fall short of it when the top eigenvalues are close (and then give a larger lambda). We keep the exact
value because it is the quantity the paper defines and it does not depend on the start vector.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from scipy.special import softmax

from zooforge.metrics._torch import shrunk_solve
from zooforge.metrics._validation import check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["sfda"]

# Lower bound on the shrinkage strength (the reference's), so S_w(lambda) is always invertible.
MIN_SHRINKAGE = 1e-10


def _fisher_posterior(x: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float | None):
    """(posterior p(y|x) (N, C), shrinkage used) of the regularised FDA classifier."""
    counts = np.bincount(y, minlength=n_classes)
    priors = counts / len(y)
    onehot = np.eye(n_classes)[y]
    means = onehot.T @ x / counts[:, None]                     # (C, D)
    scaled = (x - means[y]) * np.sqrt(priors[y] / counts[y])[:, None]    # S_w = A^T A, prior-weighted (ddof 0)
    if shrinkage is None:
        # S_w = A^T A shares its largest eigenvalue with the smaller of A^T A and A A^T
        gram = scaled @ scaled.T if scaled.shape[0] < scaled.shape[1] else scaled.T @ scaled
        largest = linalg.eigvalsh(gram, subset_by_index=[gram.shape[0] - 1] * 2)[0]
        shrinkage = max(float(np.exp(-5.0 * largest)), MIN_SHRINKAGE)
    # S_w(lambda) = (1 - lambda) S_w + lambda tr(S_w)/D I. The reference solves S_b v = w S_w v and
    # keeps *every* direction: coef = means V V^T. The eigenvectors are S_w-orthonormal
    # (V^T S_w V = I), so V V^T = S_w^-1 whatever S_b is, and coef = means S_w^-1: one solve
    # (N x N when N < D) instead of a generalised eigendecomposition, the same numbers.
    ridge = shrinkage * float(np.square(scaled).sum()) / x.shape[1]
    coef = shrunk_solve(torch.from_numpy(scaled), 1.0 - shrinkage, ridge, torch.from_numpy(means.T)).numpy().T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return softmax(x @ coef.T + intercept, axis=1), shrinkage


@register("sfda", needs=("features",), summary="self-challenging Fisher discriminant (Shao et al. 2022)")
def sfda(features, labels) -> float:
    """SFDA score in (0, 1]; higher = better transfer."""
    y, n_classes = check_labels(labels)
    x = check_features(features, n_samples=len(y))
    probs, shrinkage = _fisher_posterior(x, y, n_classes, None)
    confidence = softmax(probs, axis=1)[np.arange(len(y)), y][:, None]   # softened, as the paper
    counts = np.bincount(y, minlength=n_classes)
    means = np.eye(n_classes)[y].T @ x / counts[:, None]
    others = (means.sum(axis=0, keepdims=True) - means) / (n_classes - 1)   # mean of other classes
    mixed = confidence * x + (1.0 - confidence) * others[y]
    probs, _ = _fisher_posterior(mixed, y, n_classes, shrinkage)
    return float(np.mean(probs[np.arange(len(y)), y]))
