"""PARC: Pairwise Annotation Representation Comparison.

Bolya, Mittapalli & Hoffman, "Scalable Diverse Model Selection for Accessible Transfer Learning",
NeurIPS 2021. https://arxiv.org/abs/2111.06977

Features are standardised and PCA-reduced to ``pca_dim`` (32); the representation dissimilarity
matrices RDM_f = 1 - corr(f_i, f_j) and RDM_y = 1 - corr(onehot(y_i), onehot(y_j)) are compared by the
Spearman correlation of their upper triangles, times 100. Higher = better.

Cost is quadratic in N (two N x N matrices), so at most ``max_samples`` (5,000 by default:
12.5 M pairs) stratified samples are used; the reference code intends a 15,000 cap but, by a bug,
never applies it.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._sampling import stratified_subsample
from zooforge.metrics._validation import check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["parc"]


@register("parc", needs=("features",), summary="Spearman of feature vs label dissimilarities (Bolya et al. 2021)")
def parc(features, labels, *, pca_dim: int = 32, max_samples: int = 5000, seed: int = 0) -> float:
    """PARC score (x100); higher = better transfer."""
    from scipy.stats import spearmanr

    y, n_classes = check_labels(labels)
    x = check_features(features, n_samples=len(y))
    x, y = stratified_subsample(x, y, max_samples, seed)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if x.shape[1] > pca_dim:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:pca_dim].T
    rdm_features = 1.0 - np.corrcoef(x)
    upper = np.triu_indices(x.shape[0], k=1)
    # 1 - corr of two one-hot rows is exactly 0 (same class) or 1 + 1/(C-1) (different classes);
    # np.corrcoef gets those with rounding noise that breaks the ties Spearman must see as ties.
    rdm_labels = np.where(y[upper[0]] == y[upper[1]], 0.0, 1.0 + 1.0 / (n_classes - 1))
    rho = spearmanr(rdm_features[upper], rdm_labels).statistic
    return float(rho * 100.0)
