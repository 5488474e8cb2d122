"""Helpers for the estimators that run on torch tensors (and so on GPU when given CUDA tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zooforge.metrics._validation import check_features

__all__ = ["feature_tensor", "onehot", "pca_project"]


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
    """Centred projection onto the top ``n_components`` principal axes (exact, via the DxD
    covariance's eigendecomposition, so the cost is O(N D^2) and no N x N matrix is formed)."""
    centred = x - x.mean(dim=0, keepdim=True)
    if n_components >= x.shape[1]:
        return centred
    _, vecs = torch.linalg.eigh(centred.T @ centred)      # ascending eigenvalues
    return centred @ vecs[:, -n_components:].flip(-1)
