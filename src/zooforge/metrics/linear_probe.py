"""Linear-probe accuracy: the empirical baseline every transferability paper compares against.

k-fold cross-validated accuracy of an L2-regularised multinomial logistic regression on standardised
features (scikit-learn, lbfgs). Slower than the closed-form estimators but directly interpretable.
Higher = better.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import canonical_order, check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["linear_probe"]


@register("linear_probe", needs=("features",), summary="k-fold logistic-regression accuracy")
def linear_probe(features, labels, *, folds: int = 5, inverse_reg: float = 1.0, max_iter: int = 300,
                 seed: int = 0) -> float:
    """Mean held-out accuracy over ``folds`` stratified folds (fewer if a class is smaller)."""
    import warnings

    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if folds < 2:
        raise ValueError(f"`folds` must be at least 2; got {folds}.")
    y, _ = check_labels(labels, min_per_class=2)
    x = check_features(features, n_samples=len(y))
    order = canonical_order(x)
    x, y = x[order], y[order]
    n_splits = int(min(folds, np.bincount(y).min()))
    steps = [StandardScaler()]
    if len(y) < x.shape[1]:
        # Fewer samples than dimensions: an L2-penalised solution lies in the span of the training
        # rows, so rotating onto that span (PCA without whitening keeps norms) gives the same
        # classifier in at most N dimensions, several times faster.
        steps.append(PCA(svd_solver="full"))
    model = make_pipeline(*steps, LogisticRegression(C=inverse_reg, max_iter=max_iter))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(np.mean(cross_val_score(model, x, y, cv=splitter)))
