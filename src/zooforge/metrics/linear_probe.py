"""Linear-probe accuracy: the empirical baseline every transferability paper compares against.

k-fold cross-validated accuracy of an L2-regularised multinomial logistic regression on standardised
features (scikit-learn). Slower than the closed-form estimators but directly interpretable.
Higher = better.

The same probe for the other target kinds, each scored as its task is judged:

* regression: ridge regression on standardised features and targets, its penalty chosen per fold by
  efficient leave-one-out (``RidgeCV``); the score is the R^2 of the out-of-fold predictions,
  averaged over targets;
* multi-label: one L2 logistic regression per tag (one-vs-rest); the score is the mean average
  precision (mAP) of the out-of-fold probabilities over tags. A tag that a training fold lacks
  entirely is predicted at that fold's rate (0).

Shape: ``features`` (N, D); ``labels`` (N,) classes, or (N, K) targets / tag indicators.
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
        if basis.shape[1] == 0:            # every training row is zero once standardised: no signal,
            values, counts = np.unique(y_train, return_counts=True)       # so the majority class
            return np.full(len(y_test), values[counts.argmax()]) == y_test
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


RIDGE_ALPHAS = np.logspace(-3, 5, 17)      # the regression probe's penalties, for standardised features


def _out_of_fold(features, labels, folds: int, seed: int, fit_predict) -> tuple[np.ndarray, np.ndarray]:
    """(targets, out-of-fold predictions) of ``fit_predict(x_train, y_train, x_test)`` over k folds,
    rows in the input order (the folds are drawn over rows in content order, as the classifier's)."""
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    if folds < 2:
        raise ValueError(f"`folds` must be at least 2; got {folds}.")
    y = check_features(np.asarray(labels, dtype=np.float64).reshape(len(labels), -1), "labels")
    x = check_features(features, n_samples=len(y))
    if len(y) < 4:
        raise ValueError(f"a cross-validated probe needs at least 4 samples; got {len(y)}.")
    order = canonical_order(x)
    x, y = np.asarray(x[order], dtype=np.float64), y[order]
    predicted = np.zeros_like(y)
    for tr, te in KFold(n_splits=min(folds, len(y) // 2), shuffle=True, random_state=seed).split(x):
        scaler = StandardScaler().fit(x[tr])
        predicted[te] = fit_predict(scaler.transform(x[tr]), y[tr], scaler.transform(x[te]))
    out_y, out_p = np.empty_like(y), np.empty_like(predicted)
    out_y[order], out_p[order] = y, predicted
    return out_y, out_p


def _ridge(x_train, y_train, x_test):
    from sklearn.linear_model import RidgeCV

    mean, std = y_train.mean(axis=0), y_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    model = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(x_train, (y_train - mean) / std)
    return model.predict(x_test).reshape(len(x_test), -1) * std + mean


def _tag_probabilities(inverse_reg: float, max_iter: int):
    def fit_predict(x_train, y_train, x_test):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        out = np.empty((len(x_test), y_train.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k in range(y_train.shape[1]):
                column = y_train[:, k] > 0.5
                if column.all() or not column.any():          # the fold has one value: predict it
                    out[:, k] = float(column[0])
                    continue
                model = LogisticRegression(C=inverse_reg, max_iter=max_iter).fit(x_train, column)
                out[:, k] = model.predict_proba(x_test)[:, 1]
        return out
    return fit_predict


def _r2_columns(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R^2 per target, squared errors (N, K), total sum of squares per target)."""
    errors = (y - predicted) ** 2
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - errors.sum(axis=0) / total, errors, total


def _mean_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(y[:, k] > 0.5, scores[:, k]) for k in range(y.shape[1])]))


def _linear_probe_influence(features, labels, task: str = "classification"):
    if task == "classification":
        return linear_probe_influence(features, labels)
    if task == "regression":
        return regression_probe_influence(features, labels)
    return linear_probe(features, labels, task=task), None        # mAP: intervals by resampling


@register("linear_probe", needs=("features",), summary="k-fold logistic-regression accuracy (ridge R^2, tag mAP)",
          influence=_linear_probe_influence, tasks=("classification", "regression", "multilabel"))
def linear_probe(features, labels, *, folds: int = 5, inverse_reg: float = 1.0, max_iter: int = 300,
                 seed: int = 0, task: str = "classification") -> float:
    """Mean held-out accuracy over ``folds`` stratified folds (fewer if a class is smaller); for
    ``task="regression"`` the out-of-fold R^2 of ridge regression, for ``"multilabel"`` the
    out-of-fold mAP of per-tag logistic regressions (see the module docstring)."""
    if task == "regression":
        return float(_r2_columns(*_out_of_fold(features, labels, folds, seed, _ridge))[0].mean())
    if task == "multilabel":
        y, scores = _out_of_fold(features, labels, folds, seed, _tag_probabilities(inverse_reg, max_iter))
        return _mean_average_precision(y, scores)
    return _probe(features, labels, folds, inverse_reg, max_iter, seed)[0]


def regression_probe_influence(features, labels, *, folds: int = 5, seed: int = 0) -> tuple[float, np.ndarray]:
    """(R^2, g): with the out-of-fold predictions held fixed, R^2 = 1 - sum w e^2 / sum w (y - ybar)^2
    has d R^2 / d w_i = -(e_i^2 - (1 - R^2) (y_i - ybar)^2) / SST (ybar's own derivative vanishes),
    averaged over targets."""
    y, predicted = _out_of_fold(features, labels, folds, seed, _ridge)
    r2, errors, total = _r2_columns(y, predicted)
    g = -(errors - (1.0 - r2) * (y - y.mean(axis=0)) ** 2) / total
    return float(r2.mean()), g.mean(axis=1)


def linear_probe_influence(features, labels, *, folds: int = 5, inverse_reg: float = 1.0, max_iter: int = 300,
                           seed: int = 0) -> tuple[float, np.ndarray]:
    """(accuracy, g) with g[i] = (correct_i - accuracy) / N: the accuracy's influence as the mean of
    the held-out correctness indicators, the fitted probes held fixed (the usual binomial interval
    of a cross-validated accuracy; it leaves out how a sample moves the probes, a smaller term)."""
    score, correct = _probe(features, labels, folds, inverse_reg, max_iter, seed)
    return score, (correct - score) / len(correct)
