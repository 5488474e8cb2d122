"""Linear CKA between representations (Kornblith et al., ICML 2019), full and minibatch.

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   K = X Xᵀ, L = Y Yᵀ (linear kernels)

With centred X, Y the biased estimator reduces to ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), computed in the
feature dimension (no N × N matrix). For large N, :func:`minibatch_cka` accumulates the *unbiased*
HSIC estimator of Song et al. (JMLR 2012) over minibatches, as in Nguyen et al. (ICLR 2021): the sums
of unbiased HSICs over batches estimate the population quantities, so the ratio converges to the
full-data CKA as batches grow, without ever holding an N × N kernel. DeRy computes its block
similarities this way on 2048-sample batches.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["linear_cka", "hsic_unbiased", "minibatch_cka", "cka_matrix"]


def _as64(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 2:
        t = t.reshape(t.shape[0], -1)
    if not torch.isfinite(t).all():
        raise ValueError("CKA input contains NaN or inf.")
    return t.to(torch.float64)


def linear_cka(x, y) -> float:
    """Biased linear CKA of (N, D1) and (N, D2) representations of the same N inputs."""
    x, y = _as64(x), _as64(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: x has {x.shape[0]} rows, y has {y.shape[0]}.")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / denom) if denom > 0 else 0.0


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012, eq. 5) of two n × n kernels, n > 3."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples; got {n}.")
    k = k.clone()
    l = l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones_k, ones_l = k.sum(), l.sum()
    term = (k * l).sum() + ones_k * ones_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k.sum(0) @ l.sum(1))
    return term / (n * (n - 3))


def minibatch_cka(x, y, batch_size: int = 2048, seed: int | None = 0) -> float:
    """Linear CKA from unbiased HSICs summed over minibatches (a shuffled order when ``seed``)."""
    x, y = _as64(x), _as64(y)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"CKA needs the same inputs: x has {n} rows, y has {y.shape[0]}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    xy = xx = yy = 0.0
    for start in range(0, n - 3, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 4:
            break
        k, l = x[idx] @ x[idx].T, y[idx] @ y[idx].T
        xy = xy + hsic_unbiased(k, l)
        xx = xx + hsic_unbiased(k, k)
        yy = yy + hsic_unbiased(l, l)
    denom = torch.sqrt(torch.as_tensor(xx * yy))
    return float(xy / denom) if denom > 0 else 0.0


def cka_matrix(reps: list, others: list | None = None) -> np.ndarray:
    """Pairwise linear CKA between lists of (N, D_i) representations of the same N inputs.

    Each representation becomes its normalised centred Gram matrix once; all pairs are then one
    matrix product, so hundreds of blocks cost little more than their Gram matrices.
    """
    def grams(items):
        out = []
        for r in items:
            r = _as64(r)
            r = r - r.mean(0)
            g = r @ r.T
            norm = torch.linalg.matrix_norm(g)
            out.append((g / norm if norm > 0 else g).reshape(-1))
        return torch.stack(out)

    a = grams(reps)
    b = a if others is None else grams(others)
    return (a @ b.T).clamp(0.0, 1.0).numpy()
