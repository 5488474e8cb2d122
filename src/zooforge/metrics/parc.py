"""PARC: Pairwise Annotation Representation Comparison.

Bolya, Mittapalli & Hoffman, "Scalable Diverse Model Selection for Accessible Transfer Learning",
NeurIPS 2021. https://arxiv.org/abs/2111.06977

Features are PCA-reduced to ``pca_dim`` (32) components, each component is standardised, and the
representation dissimilarity matrices RDM_f = 1 - corr(f_i, f_j) and
RDM_y = 1 - corr(onehot(y_i), onehot(y_j)) are compared by the Spearman correlation of their upper
triangles, times 100. Higher = better.

The order is the reference's (dbolya/parc ``feature_reduce`` then ``get_parc_correlation``, as the
SFDA repository runs it): reduce first, then standardise the components, which gives every kept
principal direction the same weight in the correlation. zooforge standardised the raw dimensions
and then projected without rescaling (so the top components dominated) until issue #16 measured a
median relative difference of 0.93 from the reference and a worse ranking (weighted tau .798 against
.834) on held-out features. The PCA here is exact; the reference's is randomised with one power
iteration, an approximation of the same components. Row-wise correlations change when a component's
sign flips, so the components take scikit-learn's sign convention (``svd_flip``), as the reference's do.

Cost is quadratic in N (two N x N matrices), so at most ``max_samples`` (5,000 by default:
12.5 M pairs) stratified samples are used; the reference code intends a 15,000 cap but, by a bug,
never applies it.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._sampling import stratified_subsample
from zooforge.metrics._validation import canonical_order, check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["parc", "parc_influence"]


def parc_influence(features, labels, *, pca_dim: int = 32, max_samples: int = 5000, seed: int = 0):
    """(PARC, g): PARC is a correlation over the N(N-1)/2 sample pairs, so a sample's weight acts
    through its N - 1 pairs; with the pairs' ranks held fixed, d rho / d w_pair is the influence of
    a pair on a correlation, (a b - rho (a^2 + b^2) / 2) / M for the standardised ranks a, b, and
    g[i] sums it over sample i's pairs. First order in the ranks only (it leaves out how a sample
    moves the PCA and every other pair's rank). When PARC subsamples (N > ``max_samples``), g is
    None and intervals come from resampling."""
    from scipy.stats import rankdata

    score, (rdm_f, rdm_y, upper, n) = _parc(features, labels, pca_dim, max_samples, seed)
    if n != len(np.asarray(labels)):
        return score, None
    a, b = rankdata(rdm_f), rankdata(rdm_y)
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    rho = score / 100.0
    pair = (a * b - rho * (a * a + b * b) / 2) / len(a)
    g = np.bincount(upper[0], pair, minlength=n) + np.bincount(upper[1], pair, minlength=n)
    out = np.empty(n)
    out[canonical_order(check_features(features))] = 100.0 * g      # PARC runs on rows in content order
    return score, out


@register("parc", needs=("features",), summary="Spearman of feature vs label dissimilarities (Bolya et al. 2021)",
          influence=parc_influence)
def parc(features, labels, *, pca_dim: int = 32, max_samples: int = 5000, seed: int = 0) -> float:
    """PARC score (x100); higher = better transfer."""
    return _parc(features, labels, pca_dim, max_samples, seed)[0]


def _parc(features, labels, pca_dim, max_samples, seed):
    from scipy.stats import spearmanr

    y, n_classes = check_labels(labels)
    x = check_features(features, n_samples=len(y))
    if x.shape[1] < 2 or x.shape[0] < 3:
        raise ValueError(f"`features` of shape {x.shape}: PARC correlates samples across feature dimensions "
                         f"and pairs of samples, so it needs at least 2 dimensions and 3 samples.")
    if np.bincount(y).max() < 2:
        raise ValueError(f"`labels`: PARC compares pairs of samples of one class with pairs of two, and every one "
                         f"of the {len(y)} samples is alone in its class; it needs 2 samples in some class.")
    x, y = stratified_subsample(x, y, max_samples, seed)
    keep = min(pca_dim, x.shape[0])                       # as the reference: at most N components
    if x.shape[1] > keep:
        from sklearn.decomposition import PCA

        # scikit-learn's PCA, as the reference uses, for its sign convention too: the row-wise
        # correlation is not invariant to flipping a component's sign
        x = PCA(n_components=keep, svd_solver="full").fit_transform(x)
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    # each kept component at unit variance; a direction with no variance (rank < pca_dim) stays at
    # zero instead of being blown up to unit-variance rounding noise
    x = x / np.where(std > 1e-12 * max(float(std.max()), 1e-300), std, np.inf)
    flat = int((~(x != 0).any(axis=1)).sum())
    if flat:                 # a row of zeros has no correlation with anything (constant features: all rows)
        raise ValueError(f"`features`: PARC correlates the samples' feature vectors, and {flat} of the {x.shape[0]} "
                         "samples do not differ from the mean in any dimension (constant features?).")
    rdm_features = 1.0 - np.corrcoef(x)
    upper = np.triu_indices(x.shape[0], k=1)
    # 1 - corr of two one-hot rows is exactly 0 (same class) or 1 + 1/(C-1) (different classes);
    # np.corrcoef gets those with rounding noise that breaks the ties Spearman must see as ties.
    rdm_labels = np.where(y[upper[0]] == y[upper[1]], 0.0, 1.0 + 1.0 / (n_classes - 1))
    rdm_features = rdm_features[upper]
    if np.ptp(rdm_features) == 0:
        raise ValueError(f"`features`: PARC is undefined on these {x.shape[0]} samples: every pair of them is "
                         "equally correlated, so there is no order of pairs to compare with the labels'.")
    rho = spearmanr(rdm_features, rdm_labels).statistic
    return float(rho * 100.0), (rdm_features, rdm_labels, upper, x.shape[0])
