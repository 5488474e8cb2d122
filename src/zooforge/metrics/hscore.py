"""H-score and its shrinkage-regularised variant.

Bao, Li, Huang, Zhang, Zheng & Tong, "An Information-Theoretic Approach to Transferability in Task
Transfer Learning", ICIP 2019. https://ieeexplore.ieee.org/document/8803726

.. math::
    H(f) = \\operatorname{tr}\\big(\\operatorname{cov}(f)^{+}\\, \\operatorname{cov}(\\mathbb E[f \\mid y])\\big)

with sample covariances (ddof = 1) and the pseudo-inverse. Higher = better.

Regularised H-score: Ibrahim, Ponomareva & Mazumder, "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022
(https://arxiv.org/abs/2110.06893). cov(f) is replaced by the Ledoit-Wolf shrinkage estimate
(1 - a) S + a tr(S)/D I of the centred features and the between-class term is scaled by (1 - a), which
keeps the score stable when D is large relative to N.

Convention that differs from reference code: the between-class covariance of the shrinkage variant is
sum_c (n_c / N) m_c m_c^T, over N as in the paper's definition of the class-conditional expectation;
tllib's ``regularized_h_score`` takes ``np.cov`` of the class-mean rows, which divides by N - 1. The
two differ by the factor N / (N - 1), the same for every model on one target, so rankings agree.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import math

import torch

from zooforge.metrics._torch import feature_tensor, onehot, shrunk_solve
from zooforge.metrics._validation import check_labels
from zooforge.metrics.registry import register

__all__ = ["hscore", "regularized_hscore", "ledoit_wolf_shrinkage"]


def _class_means(x: torch.Tensor, y, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(class means (C, D), class counts (C,)) in ``x``'s dtype and device."""
    member = onehot(y, n_classes, x)
    counts = member.sum(dim=0)
    return member.T @ x / counts[:, None], counts


def _class_mean_rows(x: torch.Tensor, y, n_classes: int) -> torch.Tensor:
    return _class_means(x, y, n_classes)[0][torch.as_tensor(y, device=x.device)]   # E[f | y_i] per sample


def _cov(x: torch.Tensor, ddof: int = 1) -> torch.Tensor:
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - ddof)


@register("hscore", needs=("features",), summary="tr(cov(f)^+ cov(E[f|y])) (Bao et al. 2019)")
def hscore(features, labels) -> float:
    """H-score; higher = better transfer."""
    y, n_classes = check_labels(labels)
    x = feature_tensor(features, n_samples=len(y))
    if x.shape[0] < 2:
        raise ValueError("`features` needs at least 2 samples for a covariance.")
    n, d = x.shape
    if n < d:
        # Fewer samples than dimensions: with X_c = U S V^T (thin SVD), cov_f^+ = (N-1) V S^-2 V^T, so
        # tr(cov_f^+ cov_g) = |G_c V S^-1|_F^2 with G_c the centred class-mean rows: an N x D SVD
        # instead of a D x D pseudo-inverse. Same cutoff as pinv's (eigenvalues below D * eps of the
        # largest are dropped; eigenvalues are s^2 / (N-1)).
        centred = x - x.mean(dim=0, keepdim=True)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        keep = s.square() > d * torch.finfo(x.dtype).eps * s[0].square()
        g = _class_mean_rows(x, y, n_classes)
        projected = (g - g.mean(dim=0, keepdim=True)) @ vh[keep].T / s[keep]
        return float(projected.square().sum())
    cov_f = _cov(x)
    cov_g = _cov(_class_mean_rows(x, y, n_classes))
    # Default cutoff (max(N, D) * eps relative): directions with no variance are ignored, as pinv should.
    inv = torch.linalg.pinv(cov_f, hermitian=True)
    return float(torch.trace(inv @ cov_g))


def ledoit_wolf_shrinkage(x: torch.Tensor) -> float:
    """Ledoit & Wolf (2004) optimal shrinkage a of the covariance of already-centred ``x`` towards
    tr(S)/D I, S = x^T x / N. Same estimate as ``sklearn.covariance.ledoit_wolf_shrinkage``."""
    n, d = x.shape
    sq = x.square()
    trace_terms = sq.sum(dim=0) / n                          # diag(S)
    mu = trace_terms.sum() / d
    gram = x @ x.T if n < d else x.T @ x                       # |X^T X|_F = |X X^T|_F: the smaller one
    frob_s = gram.square().sum() / n**2                      # |S|_F^2
    spread = sq.sum(dim=1).square().sum()                    # sum_i |x_i|^4
    beta = (spread / n - frob_s) / (d * n)
    delta = (frob_s - 2 * mu * trace_terms.sum() + d * mu**2) / d   # |S - mu I|_F^2 / d
    beta = torch.minimum(beta, delta)
    return 0.0 if float(delta) == 0.0 else float(beta / delta)


@register("hscore_shrink", needs=("features",), summary="H-score with Ledoit-Wolf covariance (Ibrahim et al. 2022)")
def regularized_hscore(features, labels) -> float:
    """Shrinkage-regularised H-score; higher = better transfer."""
    y, n_classes = check_labels(labels)
    x = feature_tensor(features, n_samples=len(y))
    x = x - x.mean(dim=0, keepdim=True)
    a = ledoit_wolf_shrinkage(x)
    n, d = x.shape
    # S = (1 - a) X^T X / n + a tr(S)/d I. tr(S^-1 cov_g) with cov_g = sum_c (n_c / n) m_c m_c^T
    # (m_c the centred class means) is sum_c (n_c / n) m_c^T S^-1 m_c: C solves against S
    # (through the N x N side when N < D) instead of a D x D pseudo-inverse and a D x D product.
    means, counts = _class_means(x, y, n_classes)                          # (C, D), (C,)
    ridge = a * float(x.square().sum()) / (n * d)
    solved = shrunk_solve(x / math.sqrt(n), 1 - a, ridge, means.T)         # (D, C)
    return float((1 - a) * ((means.T * solved).sum(dim=0) * counts).sum() / n)
