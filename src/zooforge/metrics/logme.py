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

maximised over alpha and beta (below). The score is the mean over classes of the maximum evidence
divided by N. Higher = better; a log-density, so it is unbounded, of either sign, and only comparable
across models on the same data.

The global maximum, not the first fixed point. The references iterate MacKay's fixed point
alpha = gamma / |m|^2, beta = (N - gamma) / |Fm - y|^2 from alpha = beta = 1 and stop at the first
stationary point; where a target's evidence has two local maxima it can stop at the lower one (or
miss the alpha -> infinity limit, "no linear signal"), by several percent on one class. Here the
evidence is maximised over beta in closed form: with t = alpha / beta and k nonzero eigenvalues,

.. math::
    \\mathcal L(t\\beta, \\beta) = \\tfrac{k}{2}\\log t - \\tfrac12 \\textstyle\\sum_i \\log(t + \\sigma_i)
        + \\tfrac{N}{2}\\log\\beta - \\tfrac{\\beta}{2} E(t) - \\tfrac{N}{2}\\log 2\\pi,
    \\qquad E(t) = \\lVert Fm - y\\rVert^2 + t\\lVert m\\rVert^2,

so beta* = N / E(t), and what is left is a smooth function of one variable. It is scanned on a log
grid of t (GRID_PER_DECADE points a decade, from GRID_BELOW decades under the smallest nonzero
eigenvalue to GRID_ABOVE decades over the largest, where the alpha -> infinity limit is reached to
about 1e-8 nats), and the best grid point of each target is refined by successively finer grids
around it; the result is never below the grid's best point. All points of a level are evaluated in
one batched pass, so the search costs a few tensor operations rather than hundreds of small ones. Every term is a
smooth function of log t that varies on the scale of a decade (a sum of rational functions of
t / sigma_i), so a quarter-decade grid brackets the global maximum; the property tests check the
result against dense (alpha, beta) grids in both regimes (N > D, N < D), and the cost over the
fixed point is printed by benchmarks/metrics.py.

Shape: ``features`` (N, D); ``labels`` (N,) classes, or (N, K) real targets with ``regression=True``
(``task="regression"``; ``task="multilabel"`` for (N, K) 0/1 tag indicators: the classification form
is the same evidence over one-hot columns, so a tag's indicator column is one more target).
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
# The scan of t = alpha / beta: points a decade, and decades below the smallest / above the largest
# nonzero eigenvalue. Then REFINE_LEVELS grids of REFINE_POINTS points, each spanning +-1 spacing of
# the previous one around its best point: 0.25 / 8^5 ~ 8e-6 of a decade, where the evidence is flat
# to ~1e-11 (it is quadratic at the maximum). PROFILE_CHUNK bounds the (points x k x K) temporaries.
GRID_PER_DECADE = 4
GRID_BELOW = 6.0
GRID_ABOVE = 8.0
REFINE_POINTS = 17
REFINE_LEVELS = 5
PROFILE_CHUNK = 4_000_000
# Floor on E(t) so that a perfect fit yields a huge-but-finite beta instead of a division by zero.
_FLOOR = 1e-300


@dataclass(frozen=True)
class LogMEFit:
    """Per-target results of a LogME fit (K = classes, or regression targets)."""

    evidence: np.ndarray   # (K,) maximum log evidence / N
    alpha: np.ndarray      # (K,) prior precision at the maximum
    beta: np.ndarray       # (K,) noise precision at the maximum
    weights: np.ndarray    # (K, D) posterior mean m of each target's weights
    influence: np.ndarray | None = None   # (N,) d score / d sample weight (logme_fit(..., influence=True))

    @property
    def score(self) -> float:
        return float(np.mean(self.evidence))


def _spectrum(f: torch.Tensor, y: torch.Tensor):
    """Nonzero eigenvalues sigma (k,), squared projections z = (u_i^T y)^2 (k, K), a function
    mapping per-eigenvalue coefficients (k, K) to weights in feature space (D, K), and one giving
    each sample's squared coordinates on the eigenvectors of F^T F (N, k)."""
    n, d = f.shape
    if n > d:
        sigma, vecs = torch.linalg.eigh(f.T @ f)          # F^T F = V diag(sigma) V^T
        keep = sigma > RANK_RTOL * sigma.max().clamp_min(0)
        sigma, vecs = sigma[keep], vecs[:, keep]
        proj = vecs.T @ (f.T @ y)                          # v_i^T F^T y = sqrt(sigma_i) u_i^T y
        z = proj.square() / sigma[:, None]

        def to_weights(coef):                              # m = V diag(c) V^T F^T y
            return vecs @ (coef * proj)

        def leverage_basis():                              # (f_i . v_j)^2
            return (f @ vecs).square()
    else:
        sigma, vecs = torch.linalg.eigh(f @ f.T)          # F F^T = U diag(sigma) U^T
        keep = sigma > RANK_RTOL * sigma.max().clamp_min(0)
        sigma, vecs = sigma[keep], vecs[:, keep]
        proj = vecs.T @ y                                  # u_i^T y
        z = proj.square()

        def to_weights(coef):                              # m = F^T U diag(c) U^T y (push-through)
            return f.T @ (vecs @ (coef * proj))

        def leverage_basis():                              # (f_i . v_j)^2 = sigma_j u_ij^2
            return vecs.square() * sigma
    return sigma, z, to_weights, leverage_basis


def logme_fit(features, labels, *, regression: bool = False, influence: bool = False) -> LogMEFit:
    """Fit LogME for every class (or regression target) at once; see the module docstring.

    ``influence`` also returns each sample's influence on the score: the derivative of the score
    with respect to the sample's weight, all weights 1. At the maximum the evidence is stationary in
    alpha, beta and the posterior mean m, so (envelope theorem) only the explicit dependence counts:
    d L_k / d w_i = 1/2 log beta - 1/2 log 2 pi - beta/2 r_ik^2 - beta/2 f_i^T A^-1 f_i, with r the
    residual y - F m and the last term the sample's leverage; the score is the mean over k of L_k / N.
    """
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
    sigma, z, to_weights, leverage_basis = _spectrum(f, y)
    s = sigma[:, None]                                     # (k, 1)
    k = sigma.shape[0]
    outside = (y.square().sum(dim=0) - z.sum(dim=0)).clamp_min(0)   # |y|^2 outside F's column space

    def energy(t):
        """E(t) = |F m - y|^2 + t |m|^2, and |m|^2 and |Fm - y|^2, for t of shape (K,)."""
        denom = s + t                                      # (k, K)
        m_sq = (s * z / denom.square()).sum(dim=0)
        resid = (z * (t / denom).square()).sum(dim=0) + outside
        return (resid + t * m_sq).clamp_min(_FLOOR), m_sq, resid

    const = n / 2 + n / 2 * math.log(2 * math.pi)
    chunk = max(1, PROFILE_CHUNK // max(1, k * y.shape[1]))

    def profile(log_t):
        """Evidence * N at beta = beta*(t) for log_t of shape (P, K) or (P, 1): P points per target,
        evaluated together (chunked to bound memory) since each evaluation is tiny."""
        out = []
        for part in torch.split(log_t, chunk):
            t = torch.exp(part)[:, None, :]                # (p, 1, K or 1)
            denom = s + t                                  # (p, k, K)
            m_sq = (s * z / denom.square()).sum(dim=1)     # (p, K)
            resid = (z * (t / denom).square()).sum(dim=1) + outside
            e = (resid + t[:, 0, :] * m_sq).clamp_min(_FLOOR)
            out.append(k / 2 * part - torch.log(denom).sum(dim=1) / 2 + n / 2 * torch.log(n / e) - const)
        return torch.cat(out)

    # A log-t grid shared by all targets, then REFINE_LEVELS finer grids around each target's best
    # point; every level contains the previous best, so the result never falls below the grid's.
    ln10 = math.log(10.0)
    lo = math.log(float(sigma.min())) - GRID_BELOW * ln10 if k else -GRID_BELOW * ln10
    hi = math.log(float(sigma.max())) + GRID_ABOVE * ln10 if k else GRID_ABOVE * ln10
    step = ln10 / GRID_PER_DECADE
    grid = torch.arange(lo, hi + step, step, dtype=f.dtype, device=f.device)[:, None]    # (G, 1)
    values = profile(grid)                                 # (G, K)
    log_t = grid[:, 0][values.argmax(dim=0)]               # (K,)
    offsets = torch.linspace(-1.0, 1.0, REFINE_POINTS, dtype=f.dtype, device=f.device)[:, None]
    width = step
    for _ in range(REFINE_LEVELS):
        points = log_t[None, :] + width * offsets          # (P, K), the middle point is log_t itself
        log_t = points.gather(0, profile(points).argmax(dim=0, keepdim=True))[0]
        width = 2 * width / (REFINE_POINTS - 1)
    t = torch.exp(log_t)
    energy_t, m_sq, resid = energy(t)
    beta = n / energy_t
    alpha = t * beta
    # log|A| over all D eigenvalues: the (D - k) zero ones contribute log(alpha) each.
    log_det = torch.log(alpha + beta * s).sum(dim=0) + (d - k) * torch.log(alpha)
    evidence = (d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - beta / 2 * resid
                - alpha / 2 * m_sq - log_det / 2 - n / 2 * math.log(2 * math.pi)) / n
    weights = to_weights(1.0 / (s + t))                    # (D, K)
    as_np = lambda v: v.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    grad = None
    if influence:
        resid_i = (y - f @ weights).square()               # (N, K)
        lev = leverage_basis() @ (1.0 / (alpha + beta * s))            # (N, K): f_i^T A_k^-1 f_i
        d_l = 0.5 * torch.log(beta) - 0.5 * math.log(2 * math.pi) - beta / 2 * (resid_i + lev)
        grad = as_np(d_l.mean(dim=1) / n - evidence.mean() / n)
    return LogMEFit(as_np(evidence), as_np(alpha), as_np(beta), as_np(weights.T), grad)


def _logme_influence(features, labels, task: str = "classification") -> tuple[float, np.ndarray]:
    fit = logme_fit(features, labels, regression=task != "classification", influence=True)
    return fit.score, fit.influence


@register("logme", needs=("features",), summary="log maximum evidence of a linear model (You et al. 2021)",
          influence=_logme_influence, tasks=("classification", "regression", "multilabel"))
def logme(features, labels, *, regression: bool = False, task: str = "classification") -> float:
    """Mean per-sample maximum log evidence over classes, or over the columns of (N, K) targets
    (``task="regression"``, or ``regression=True``; the JMLR version's regression form) or of tag
    indicators (``task="multilabel"``: each tag's 0/1 column is a target, as each class's one-hot
    column is); higher = better transfer."""
    return logme_fit(features, labels, regression=regression or task != "classification").score
