"""TransRate: mutual information between features and labels, estimated by coding rates.

Huang, Huang, Rong, Yang & Wei, "Frustratingly Easy Transferability Estimation", ICML 2022.
https://proceedings.mlr.press/v162/huang22d.html

With Z the centred features and the rate-distortion estimate of entropy

.. math::
    R(Z, \\epsilon) = \\tfrac12 \\log\\det\\big(I_D + \\tfrac{1}{n\\epsilon} Z^\\top Z\\big), \\qquad
    \\mathrm{TrR} = R(Z, \\epsilon) - \\frac1C \\sum_c R(Z_c, \\epsilon)

where Z_c holds the n_c rows of class c (the class term is averaged uniformly over classes, as in the
authors' released code). eps = 1e-4. Higher = better. The log-determinant is computed from the
eigenvalues of the smaller of Z^T Z and Z Z^T (Sylvester's identity), so cost is O(N D min(N, D)).

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import torch

from zooforge.metrics._torch import feature_tensor
from zooforge.metrics._validation import check_labels
from zooforge.metrics.registry import register

__all__ = ["transrate", "transrate_influence", "coding_rate"]


def coding_rate(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """R(Z, eps) = 1/2 logdet(I + Z^T Z / (n eps)), via the smaller Gram matrix."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    eig = torch.linalg.eigvalsh(gram).clamp_min(0)
    return 0.5 * torch.log1p(eig / (n * eps)).sum()


def _weighted_transrate(z: torch.Tensor, labels_t: torch.Tensor, n_classes: int, w: torch.Tensor, eps: float):
    """TransRate with sample weights ``w`` (all 1: the plain score), differentiable in ``w``: every
    sample's row of Z counts w times, in the centring, in each Gram matrix and in each n."""
    mean = (w[:, None] * z).sum(0) / w.sum()
    a = (z - mean) * w.sqrt()[:, None]

    def rate(rows: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        gram = rows.T @ rows if rows.shape[1] <= rows.shape[0] else rows @ rows.T
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        return 0.5 * torch.linalg.slogdet(eye + gram / (n * eps))[1]

    per_class = torch.stack([rate(a[labels_t == c], w[labels_t == c].sum()) for c in range(n_classes)])
    return rate(a, w.sum()) - per_class.mean()


def transrate_influence(features, labels, *, eps: float = 1e-4):
    """(TransRate, g) with g[i] = d TransRate / d w_i at equal weights, by autograd through the
    weighted form (:func:`_weighted_transrate`): exact, about three times one score's cost."""
    y, n_classes = check_labels(labels)
    z = feature_tensor(features, n_samples=len(y))
    labels_t = torch.as_tensor(y, device=z.device)
    w = torch.ones(len(y), dtype=z.dtype, device=z.device, requires_grad=True)
    with torch.enable_grad():
        value = _weighted_transrate(z, labels_t, n_classes, w, eps)
        (grad,) = torch.autograd.grad(value, w)
    return transrate(features, labels, eps=eps), grad.detach().cpu().double().numpy()


@register("transrate", needs=("features",), summary="coding-rate mutual information (Huang et al. 2022)",
          influence=transrate_influence)
def transrate(features, labels, *, eps: float = 1e-4) -> float:
    """TransRate; higher = better transfer."""
    if eps <= 0:
        raise ValueError(f"`eps` must be positive; got {eps}.")
    y, n_classes = check_labels(labels)
    z = feature_tensor(features, n_samples=len(y))
    z = z - z.mean(dim=0, keepdim=True)
    labels_t = torch.as_tensor(y, device=z.device)
    per_class = torch.stack([coding_rate(z[labels_t == c], eps) for c in range(n_classes)])
    return float(coding_rate(z, eps) - per_class.mean())
