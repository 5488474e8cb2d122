"""Helpers for the estimators that run on torch tensors (and so on GPU when given CUDA tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zooforge.metrics._validation import check_features

__all__ = ["feature_tensor", "onehot", "pca_project", "shrunk_solve"]


def feature_tensor(features: Any, name: str = "features", *, n_samples: int | None = None) -> torch.Tensor:
    """Validated (N, D) tensor in the working dtype, on the input's device (CPU for numpy input)."""
    if isinstance(features, torch.Tensor):
        return check_features(features, name, n_samples=n_samples, keep_torch=True)
    return torch.from_numpy(check_features(features, name, n_samples=n_samples))


def onehot(y: np.ndarray, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """(N, C) one-hot matrix of codes ``y`` with ``like``'s dtype and device."""
    out = torch.zeros(len(y), n_classes, dtype=like.dtype, device=like.device)
    out[torch.arange(len(y), device=like.device), torch.as_tensor(y, device=like.device)] = 1.0
    return out


def pca_project(x: torch.Tensor, n_components: int) -> torch.Tensor:
    """Centred projection onto the top ``n_components`` principal axes, exact: from the D x D
    scatter's eigendecomposition when N >= D, else from the N x N Gram matrix (X X^T = U L U^T
    gives the scores U sqrt(L) directly), whichever is smaller. Each axis is defined up to its
    sign; the sign is fixed so that the largest-magnitude score on each axis is positive."""
    centred = x - x.mean(dim=0, keepdim=True)
    n, d = centred.shape
    if n_components >= d:
        return centred
    if n >= d:
        _, vecs = torch.linalg.eigh(centred.T @ centred)          # ascending eigenvalues
        scores = centred @ vecs[:, -n_components:].flip(-1)
    else:
        vals, vecs = torch.linalg.eigh(centred @ centred.T)
        k = min(n_components, n)
        scores = vecs[:, -k:].flip(-1) * vals[-k:].flip(-1).clamp(min=0).sqrt()
        if k < n_components:                                       # rank < n_components: zero axes
            scores = torch.cat([scores, scores.new_zeros(n, n_components - k)], dim=1)
    pivot = scores.abs().argmax(dim=0)
    signs = torch.sign(scores[pivot, torch.arange(scores.shape[1], device=scores.device)])
    return scores * torch.where(signs == 0, torch.ones_like(signs), signs)


def shrunk_solve(a: torch.Tensor, scale: float, ridge: float, rhs: torch.Tensor) -> torch.Tensor:
    """(scale A^T A + ridge I)^-1 rhs for A (N, D) and rhs (D, K), without forming a D x D matrix
    when N < D.

    Shrinkage estimators (Ledoit-Wolf H-score, SFDA's regularised LDA) solve against a scatter
    matrix of rank <= N plus a multiple of the identity. When N < D the Woodbury identity
    (ridge I + scale A^T A)^-1 = (I - A^T (ridge/scale I + A A^T)^-1 A) / ridge
    needs one N x N Cholesky factor: O(N^2 D) instead of O(N D^2 + D^3), about D/N times less work
    (6x at N = 320, D = 2048). With ``ridge`` = 0 (no shrinkage) the matrix may be singular and the
    pseudo-inverse is used, as for any matrix that is not numerically positive definite.
    """
    n, d = a.shape
    if ridge > 0 and scale > 0 and n < d:
        inner = a @ a.T
        inner.diagonal().add_(ridge / scale)
        factor, info = torch.linalg.cholesky_ex(inner)
        if int(info) == 0:
            return (rhs - a.T @ torch.cholesky_solve(a @ rhs, factor)) / ridge
    matrix = scale * (a.T @ a)
    matrix.diagonal().add_(ridge)
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.pinv(matrix, hermitian=True) @ rhs
