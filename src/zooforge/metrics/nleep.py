"""N-LEEP: LEEP over a Gaussian mixture fitted on PCA-reduced features.

Li, Jia, Zhou, Bie, Jin & Fan, "Ranking Neural Checkpoints", CVPR 2021. https://arxiv.org/abs/2011.11200

The features are reduced by PCA to the components that keep ``variance_kept`` (0.8) of the variance,
a Gaussian mixture with ``components_per_class`` x C components is fitted, and LEEP is computed with
the mixture's posteriors :math:`p(k \\mid x_i)` in place of a source head's probabilities. Needs only
features, so it also ranks models without a classifier head. Higher = better.

Reproducibility: the mixture is fitted by EM from a seeded k-means start (``random_state``), on the
rows in a canonical content order (so the score does not depend on the order the samples arrive in).
The fit is still a local optimum: on held-out features N-LEEP's weighted tau moved by about +-0.025
from one seed to another, so two models whose N-LEEP scores differ by less than their seed-to-seed
spread are not told apart by it; average over seeds (call with several ``random_state``) when that
matters.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations


from zooforge.metrics._validation import canonical_order, check_features, check_labels
from zooforge.metrics.leep import log_expected_empirical_prediction
from zooforge.metrics.registry import register

__all__ = ["nleep"]


@register("nleep", needs=("features",), summary="LEEP on a GMM over PCA features (Li et al. 2021)")
def nleep(features, labels, *, variance_kept: float = 0.8, components_per_class: int = 5,
          covariance_type: str = "full", random_state: int = 123) -> float:
    """N-LEEP score; the mixture is seeded and fitted on rows in canonical order (reproducible)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    if not 0.0 < variance_kept <= 1.0:
        raise ValueError(f"`variance_kept` must be in (0, 1]; got {variance_kept}.")
    y, n_classes = check_labels(labels)
    x = check_features(features, n_samples=len(y))
    order = canonical_order(x)
    x, y = x[order], y[order]
    if variance_kept < 1.0 and x.shape[1] > 1:
        x = PCA(n_components=variance_kept, svd_solver="full").fit_transform(x)
    n_components = min(components_per_class * n_classes, x.shape[0])
    gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                          reg_covar=1e-6, random_state=random_state)
    theta = gmm.fit(x).predict_proba(x)
    return log_expected_empirical_prediction(theta, y, n_classes)
