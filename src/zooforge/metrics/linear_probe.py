"""Linear-probe accuracy: the empirical baseline every transferability paper compares against.

k-fold cross-validated accuracy of an L2-regularised multinomial logistic regression on standardised
features (scikit-learn). Slower than the closed-form estimators but directly interpretable.
Higher = better.

Shape: ``features`` (N, D); ``labels`` (N,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import canonical_order, check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["linear_probe", "linear_probe_influence"]


def _row_span_basis(train: np.ndarray) -> np.ndarray:
    """An orthonormal basis (D, r) of the span of the rows of ``train`` (n, D), n < D, from the
    n x n Gram matrix: A A^T = U L U^T gives the right singular vectors A^T U L^-1/2."""
    vals, vecs = np.linalg.eigh(train @ train.T)
    keep = vals > vals[-1] * train.shape[1] * np.finfo(train.dtype).eps
    return train.T @ (vecs[:, keep] / np.sqrt(vals[keep]))


def _fold_correct(x_train, y_train, x_test, y_test, *, inverse_reg: float, max_iter: int) -> np.ndarray:
    """Whether each test sample is classified correctly by the probe fitted on the training fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    solver = "lbfgs"
    if len(x_train) < x_train.shape[1]:
        # Fewer samples than dimensions. The L2-penalised solution lies in the span of the training
        # rows (the penalty kills any component orthogonal to it, where the loss does not look), so
        # rotating both splits onto that span gives the same classifier in at most n dimensions.
        # The rows are then linearly separable: the optimum is held in place by the penalty alone,
        # the problem is badly conditioned along the separating directions, and lbfgs crawls there
        # (270-300 iterations on 320 x 320 zoo features) where Newton-CG's curvature steps
        # converge in about ten.
        basis = _row_span_basis(x_train)
        x_train, x_test = x_train @ basis, x_test @ basis
        solver = "newton-cg"
    model = LogisticRegression(C=inverse_reg, max_iter=max_iter, solver=solver)
    return model.fit(x_train, y_train).predict(x_test) == y_test


def _probe(features, labels, folds, inverse_reg, max_iter, seed) -> tuple[float, np.ndarray]:
    """(mean fold accuracy, each sample's held-out correctness in the input order)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise ValueError(f"`folds` must be at least 2; got {folds}.")
    y, _ = check_labels(labels, min_per_class=2)
    x = check_features(features, n_samples=len(y))
    order = canonical_order(x)
    x, y = np.asarray(x[order], dtype=np.float64), y[order]
    n_splits = int(min(folds, np.bincount(y).min()))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    correct = np.zeros(len(y))
    accuracies = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tr, te in splitter.split(x, y):
            hit = _fold_correct(x[tr], y[tr], x[te], y[te], inverse_reg=inverse_reg, max_iter=max_iter)
            correct[order[te]] = hit
            accuracies.append(float(np.mean(hit)))
    return float(np.mean(accuracies)), correct


@register("linear_probe", needs=("features",), summary="k-fold logistic-regression accuracy",
          influence=lambda features, labels: linear_probe_influence(features, labels))
def linear_probe(features, labels, *, folds: int = 5, inverse_reg: float = 1.0, max_iter: int = 300,
                 seed: int = 0) -> float:
    """Mean held-out accuracy over ``folds`` stratified folds (fewer if a class is smaller)."""
    return _probe(features, labels, folds, inverse_reg, max_iter, seed)[0]


def linear_probe_influence(features, labels, *, folds: int = 5, inverse_reg: float = 1.0, max_iter: int = 300,
                           seed: int = 0) -> tuple[float, np.ndarray]:
    """(accuracy, g) with g[i] = (correct_i - accuracy) / N: the accuracy's influence as the mean of
    the held-out correctness indicators, the fitted probes held fixed (the usual binomial interval
    of a cross-validated accuracy; it leaves out how a sample moves the probes, a smaller term)."""
    score, correct = _probe(features, labels, folds, inverse_reg, max_iter, seed)
    return score, (correct - score) / len(correct)
