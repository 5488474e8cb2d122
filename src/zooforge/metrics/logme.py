"""LogME: logarithm of the maximum (marginalised) evidence of a linear model on the features.

You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021 (https://arxiv.org/abs/2102.11005); fixed-point algorithm from You, Liu, Wang, Jordan &
Long, "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR 2022
(https://arxiv.org/abs/2110.10545).

For each class c, the one-vs-rest target y = 1[labels == c] is modelled as y = F w + e with
w ~ N(0, 1/alpha I_D), e ~ N(0, 1/beta I_N). With A = alpha I + beta F^T F and m = beta A^-1 F^T y the
log evidence is

.. math::
    \\mathcal L(\\alpha, \\beta) = \\tfrac{D}{2}\\log\\alpha + \\tfrac{N}{2}\\log\\beta
        - \\tfrac{\\beta}{2}\\lVert Fm - y\\rVert^2 - \\tfrac{\\alpha}{2}\\lVert m\\rVert^2
        - \\tfrac12 \\log\\lvert A\\rvert - \\tfrac{N}{2}\\log 2\\pi

maximised over alpha, beta by the fixed-point updates alpha = gamma / |m|^2,
beta = (N - gamma) / |Fm - y|^2, gamma = sum_i beta sigma_i / (alpha + beta sigma_i). The score is the
mean over classes of the maximum evidence divided by N. Higher = better; a log-density, so it is
unbounded, of either sign, and only comparable across models on the same data.

Exactness. Everything comes from ONE eigendecomposition shared by all classes: of F^T F (D x D) when
N > D, of F F^T (N x N) otherwise, in float64. log|A| = sum over all D eigenvalues of
log(alpha + beta sigma_i), zero eigenvalues included: the reference code sums over the rank only and
so drops (D - rank)/2 log alpha when N < D (thuml/LogME issue #23), inflating scores by orders of
magnitude. Iteration runs to a relative tolerance of 1e-10 on alpha/beta, not the reference's 1e-3.

Shape: ``features`` (N, D); ``labels`` (N,) classes, or (N, K) real targets with ``regression=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from zooforge.metrics._torch import feature_tensor, onehot
from zooforge.metrics._validation import check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["logme", "logme_fit", "LogMEFit"]

# Eigenvalues below RANK_RTOL * max eigenvalue are treated as exact zeros (numpy's matrix_rank uses
# max(N, D) * eps; the Gram matrix squares the condition number, so we use a looser 1e-12).
RANK_RTOL = 1e-12
# Fixed-point stopping rule on t = alpha / beta (relative change), and the iteration cap.
T_RTOL = 1e-10
MAX_ITER = 200
# Floor on |m|^2 and |Fm - y|^2 so that a class with no linear signal (or a perfect fit) yields a
# huge-but-finite alpha (or beta) instead of a division by zero.
_FLOOR = 1e-300


@dataclass(frozen=True)
class LogMEFit:
    """Per-target results of a LogME fit (K = classes, or regression targets)."""

    evidence: np.ndarray   # (K,) maximum log evidence / N
    alpha: np.ndarray      # (K,) prior precision at the maximum
    beta: np.ndarray       # (K,) noise precision at the maximum
    weights: np.ndarray    # (K, D) posterior mean m of each target's weights

    @property
    def score(self) -> float:
        return float(np.mean(self.evidence))


def _spectrum(f: torch.Tensor, y: torch.Tensor):
    """Nonzero eigenvalues sigma (k,), squared projections z = (u_i^T y)^2 (k, K), and a function
    mapping per-eigenvalue coefficients (k, K) to weights in feature space (D, K)."""
    n, d = f.shape
    if n > d:
        sigma, vecs = torch.linalg.eigh(f.T @ f)          # F^T F = V diag(sigma) V^T
        keep = sigma > RANK_RTOL * sigma.max().clamp_min(0)
        sigma, vecs = sigma[keep], vecs[:, keep]
        proj = vecs.T @ (f.T @ y)                          # v_i^T F^T y = sqrt(sigma_i) u_i^T y
        z = proj.square() / sigma[:, None]

        def to_weights(coef):                              # m = V diag(c) V^T F^T y
            return vecs @ (coef * proj)
    else:
        sigma, vecs = torch.linalg.eigh(f @ f.T)          # F F^T = U diag(sigma) U^T
        keep = sigma > RANK_RTOL * sigma.max().clamp_min(0)
        sigma, vecs = sigma[keep], vecs[:, keep]
        proj = vecs.T @ y                                  # u_i^T y
        z = proj.square()

        def to_weights(coef):                              # m = F^T U diag(c) U^T y (push-through)
            return f.T @ (vecs @ (coef * proj))
    return sigma, z, to_weights


def logme_fit(features, labels, *, regression: bool = False) -> LogMEFit:
    """Fit LogME for every class (or regression target) at once; see the module docstring."""
    if regression:
        raw = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        targets = check_features(raw[:, None] if raw.ndim == 1 else raw, "labels")
        f = feature_tensor(features, n_samples=targets.shape[0])
        y = torch.as_tensor(targets, dtype=f.dtype, device=f.device)
    else:
        codes, n_classes = check_labels(labels)
        f = feature_tensor(features, n_samples=len(codes))
        y = onehot(codes, n_classes, f)
    n, d = f.shape
    sigma, z, to_weights = _spectrum(f, y)
    s = sigma[:, None]                                     # (k, 1)
    y_sq = y.square().sum(dim=0)                           # (K,)
    outside = (y_sq - z.sum(dim=0)).clamp_min(0)           # |y|^2 outside the column space of F

    def moments(t):
        denom = s + t                                      # (k, K)
        gamma = (s / denom).sum(dim=0)                     # effective number of parameters
        m_sq = (s * z / denom.square()).sum(dim=0)         # |m|^2
        resid = (z * (t / denom).square()).sum(dim=0) + outside   # |F m - y|^2
        return gamma, m_sq.clamp_min(_FLOOR), resid.clamp_min(_FLOOR)

    alpha = torch.ones_like(y_sq)
    beta = torch.ones_like(y_sq)
    active = torch.ones_like(y_sq, dtype=torch.bool)
    for _ in range(MAX_ITER):
        gamma, m_sq, resid = moments(alpha / beta)
        new_alpha, new_beta = gamma / m_sq, (n - gamma) / resid
        change = ((new_alpha / new_beta) - (alpha / beta)).abs() / (alpha / beta)
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        active = active & (change > T_RTOL)
        if not bool(active.any()):
            break
    t = alpha / beta
    _, m_sq, resid = moments(t)
    # log|A| over all D eigenvalues: the (D - k) zero ones contribute log(alpha) each.
    log_det = torch.log(alpha + beta * s).sum(dim=0) + (d - sigma.shape[0]) * torch.log(alpha)
    evidence = (d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - beta / 2 * resid
                - alpha / 2 * m_sq - log_det / 2 - n / 2 * math.log(2 * math.pi)) / n
    weights = to_weights(1.0 / (s + t))                    # (D, K)
    as_np = lambda v: v.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    return LogMEFit(as_np(evidence), as_np(alpha), as_np(beta), as_np(weights.T))


@register("logme", needs=("features",), summary="log maximum evidence of a linear model (You et al. 2021)")
def logme(features, labels, *, regression: bool = False) -> float:
    """Mean per-sample maximum log evidence over classes; higher = better transfer."""
    return logme_fit(features, labels, regression=regression).score
