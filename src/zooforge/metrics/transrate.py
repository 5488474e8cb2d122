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

__all__ = ["transrate", "coding_rate"]


def coding_rate(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """R(Z, eps) = 1/2 logdet(I + Z^T Z / (n eps)), via the smaller Gram matrix."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    eig = torch.linalg.eigvalsh(gram).clamp_min(0)
    return 0.5 * torch.log1p(eig / (n * eps)).sum()


@register("transrate", needs=("features",), summary="coding-rate mutual information (Huang et al. 2022)")
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
