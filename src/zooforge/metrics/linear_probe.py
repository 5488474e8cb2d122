"""Linear-probe accuracy: the empirical baseline every transferability paper compares against.

k-fold cross-validated accuracy of an L2-regularised multinomial logistic regression on standardised
features (scikit-learn), averaged over ``repeats`` different random fold assignments. Slower than
the closed-form estimators but directly interpretable. Higher = better.

Why repeats: on the small targets where a ranking matters most, which samples share a fold moves the
score by about as much as models differ. On benchmarks/selection.py's 12 targets, the fold seed alone
moved the probe's mean weighted tau between .721 and .787 and its mean top-1 regret between 0.9 and
4.4 points over five seeds, where their mean over five fold draws gave .775 and 0.9. Five is what the
cost allows (it is not tuned on those targets): the fold-draw SD falls to 0.42x that of one draw, and
the probe costs 4.3x the single lbfgs draw it replaced on demo features (each fit is Newton-CG, a
little cheaper than lbfgs there and far cheaper on nearly separable features; ``python
benchmarks/probe.py``, medians).

The same probe for the other target kinds, each scored as its task is judged:

* regression: ridge regression on standardised features and targets, its penalty chosen per fold by
  efficient leave-one-out (``RidgeCV``); the score is the R^2 of the out-of-fold predictions,
  averaged over targets;
* multi-label: one L2 logistic regression per tag (one-vs-rest); the score is the mean average
  precision (mAP) of the out-of-fold probabilities over tags. A tag that a training fold lacks
  entirely is predicted at that fold's rate (0). Its intervals come from an influence function
  (:func:`average_precision_influence`, the probes held fixed as for accuracy), so averaging the
  5 fold draws costs no re-fits per resample.

Shape: ``features`` (N, D); ``labels`` (N,) classes, or (N, K) targets / tag indicators.
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import canonical_order, check_features, check_labels
from zooforge.metrics.registry import register

__all__ = ["linear_probe", "linear_probe_influence", "average_precision_influence", "multilabel_probe_influence"]


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
    if len(x_train) < x_train.shape[1]:
        # Fewer samples than dimensions. The L2-penalised solution lies in the span of the training
        # rows (the penalty kills any component orthogonal to it, where the loss does not look), so
        # rotating both splits onto that span gives the same classifier in at most n dimensions.
        basis = _row_span_basis(x_train)
        if basis.shape[1] == 0:            # every training row is zero once standardised: no signal,
            values, counts = np.unique(y_train, return_counts=True)       # so the majority class
            return np.full(len(y_test), values[counts.argmax()]) == y_test
        x_train, x_test = x_train @ basis, x_test @ basis
    # Newton-CG: zoo features are nearly separable, so the optimum is held in place mostly by the
    # penalty and the problem is badly conditioned along the separating directions; lbfgs crawls
    # there (230-300 iterations on the demo zoo's features) where curvature steps converge in about
    # ten, to the same solution.
    model = LogisticRegression(C=inverse_reg, max_iter=max_iter, solver="newton-cg")
    return model.fit(x_train, y_train).predict(x_test) == y_test


def _check_repeats(folds: int, repeats: int) -> None:
    if folds < 2:
        raise ValueError(f"`folds` must be at least 2; got {folds}.")
    if repeats < 1:
        raise ValueError(f"`repeats` must be at least 1; got {repeats}.")


def _probe(features, labels, folds, inverse_reg, max_iter, seed, repeats) -> tuple[float, np.ndarray]:
    """(mean fold accuracy over every repeat's folds, each sample's held-out correctness averaged
    over the repeats, in the input order). Repeat r draws its folds with ``random_state=seed + r``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    _check_repeats(folds, repeats)
    y, _ = check_labels(labels, min_per_class=2)
    x = check_features(features, n_samples=len(y))
    order = canonical_order(x)
    x, y = np.asarray(x[order], dtype=np.float64), y[order]
    n_splits = int(min(folds, np.bincount(y).min()))
    correct = np.zeros(len(y))
    accuracies = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for r in range(repeats):
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed + r)
            for tr, te in splitter.split(x, y):
                hit = _fold_correct(x[tr], y[tr], x[te], y[te], inverse_reg=inverse_reg, max_iter=max_iter)
                correct[order[te]] += hit
                accuracies.append(float(np.mean(hit)))
    return float(np.mean(accuracies)), correct / repeats


RIDGE_ALPHAS = np.logspace(-3, 5, 17)      # the regression probe's penalties, for standardised features


def _out_of_fold(features, labels, folds: int, seed: int, fit_predict) -> tuple[np.ndarray, np.ndarray]:
    """(targets, out-of-fold predictions) of ``fit_predict(x_train, y_train, x_test)`` over k folds,
    rows in the input order (the folds are drawn over rows in content order, as the classifier's)."""
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

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


def average_precision_influence(positive: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """(AP, g): average precision as scikit-learn computes it (tied scores share one threshold), and
    g[m] = d AP / d w_m, its derivative in sample m's weight at equal weights, the scores held fixed.

    With weights w, n_P = sum_{i in P} w_i over the positives P and, at a threshold s, TP(s) and D(s)
    the weight of the positives and of all samples scoring >= s: AP = A / n_P, A = sum_{i in P} w_i
    TP(s_i) / D(s_i). Raising w_m moves TP(s_i) (m positive) and D(s_i) for every positive i with
    s_i <= s_m, so d A / d w_m = [m in P] p_m + sum_{i in P, s_i <= s_m} ([m in P] / D_i - TP_i / D_i^2),
    with p_i = TP_i / D_i, and d AP / d w_m = (d A / d w_m - [m in P] AP) / n_P. Two cumulative sums
    over the sorted scores give every g_m. AP is unchanged by scaling every weight, so sum_m g_m = 0.
    """
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, float)
    n_pos = positive.sum()
    if n_pos == 0:
        return 0.0, np.zeros(len(scores))
    desc = np.argsort(-scores, kind="stable")
    s_desc, pos_desc = scores[desc], positive[desc].astype(float)
    # the last index of each run of tied scores: D and TP count every sample at or above the score
    last = np.r_[np.flatnonzero(np.diff(s_desc) != 0), len(s_desc) - 1]
    run = np.repeat(np.arange(len(last)), np.diff(np.r_[-1, last]))
    d = (np.arange(len(s_desc)) + 1.0)[last][run]
    tp = np.cumsum(pos_desc)[last][run]
    ap = float(np.sum(pos_desc * tp / d) / n_pos)
    # per threshold run (ascending score): the sums over positives with s_i <= s, inclusive of ties
    term1 = np.bincount(run, weights=pos_desc / d, minlength=len(last))
    term2 = np.bincount(run, weights=pos_desc * tp / d ** 2, minlength=len(last))
    below1 = np.cumsum(term1[::-1])[::-1][run]        # runs are in descending order: sum the later ones
    below2 = np.cumsum(term2[::-1])[::-1][run]
    grad_a = pos_desc * (tp / d) + pos_desc * below1 - below2
    g = np.empty(len(scores))
    g[desc] = (grad_a - pos_desc * ap) / n_pos
    return ap, g


def multilabel_probe_influence(features, labels, *, folds: int = 5, repeats: int = 5, inverse_reg: float = 1.0,
                               max_iter: int = 300, seed: int = 0) -> tuple[float, np.ndarray]:
    """(mAP, g): the tags' mean of :func:`average_precision_influence` on the out-of-fold
    probabilities, the fitted probes held fixed (as the classifier's influence holds them), both
    averaged over the fold draws."""
    fit_predict = _tag_probabilities(inverse_reg, max_iter)

    def one_draw(draw_seed):
        y, predicted = _out_of_fold(features, labels, folds, draw_seed, fit_predict)
        parts = [average_precision_influence(y[:, k] > 0.5, predicted[:, k]) for k in range(y.shape[1])]
        return np.mean([a for a, _ in parts]), np.mean([g for _, g in parts], axis=0)

    _check_repeats(folds, repeats)
    score, g = _repeated(one_draw, repeats, seed)
    return float(score), g


def _linear_probe_influence(features, labels, task: str = "classification"):
    if task == "classification":
        return linear_probe_influence(features, labels)
    if task == "regression":
        return regression_probe_influence(features, labels)
    return multilabel_probe_influence(features, labels)


def _repeated(score, repeats: int, seed: int):
    """The mean of ``score(seed + r)`` over the repeats (each a tuple of arrays or floats)."""
    parts = [score(seed + r) for r in range(repeats)]
    return tuple(np.mean([p[i] for p in parts], axis=0) for i in range(len(parts[0])))


@register("linear_probe", needs=("features",), summary="k-fold logistic-regression accuracy (ridge R^2, tag mAP)",
          influence=_linear_probe_influence, tasks=("classification", "regression", "multilabel"),
          version=3)       # 2: the mean over 5 fold draws; 3: multi-label too (its influence is new)
def linear_probe(features, labels, *, folds: int = 5, repeats: int = 5, inverse_reg: float = 1.0,
                 max_iter: int = 300, seed: int = 0, task: str = "classification") -> float:
    """Mean held-out accuracy over ``folds`` stratified folds (fewer if a class is smaller), averaged
    over ``repeats`` fold draws; for ``task="regression"`` the out-of-fold R^2 of ridge regression,
    for ``"multilabel"`` the out-of-fold mAP of per-tag logistic regressions, each averaged over the
    draws too (see the module docstring)."""
    if task == "regression":
        return regression_probe_influence(features, labels, folds=folds, repeats=repeats, seed=seed)[0]
    if task == "multilabel":
        return multilabel_probe_influence(features, labels, folds=folds, repeats=repeats, inverse_reg=inverse_reg,
                                          max_iter=max_iter, seed=seed)[0]
    return _probe(features, labels, folds, inverse_reg, max_iter, seed, repeats)[0]


def regression_probe_influence(features, labels, *, folds: int = 5, repeats: int = 5,
                               seed: int = 0) -> tuple[float, np.ndarray]:
    """(R^2, g): with the out-of-fold predictions held fixed, R^2 = 1 - sum w e^2 / sum w (y - ybar)^2
    has d R^2 / d w_i = -(e_i^2 - (1 - R^2) (y_i - ybar)^2) / SST (ybar's own derivative vanishes),
    averaged over targets, then both averaged over the fold draws."""
    def one_draw(draw_seed):
        y, predicted = _out_of_fold(features, labels, folds, draw_seed, _ridge)
        r2, errors, total = _r2_columns(y, predicted)
        g = -(errors - (1.0 - r2) * (y - y.mean(axis=0)) ** 2) / total
        return r2.mean(), g.mean(axis=1)

    _check_repeats(folds, repeats)
    r2, g = _repeated(one_draw, repeats, seed)
    return float(r2), g


def linear_probe_influence(features, labels, *, folds: int = 5, repeats: int = 5, inverse_reg: float = 1.0,
                           max_iter: int = 300, seed: int = 0) -> tuple[float, np.ndarray]:
    """(accuracy, g) with g[i] = (correct_i - accuracy) / N: the accuracy's influence as the mean of
    the held-out correctness indicators (each averaged over the fold draws), the fitted probes held
    fixed (the usual binomial interval of a cross-validated accuracy; it leaves out how a sample
    moves the probes, a smaller term)."""
    score, correct = _probe(features, labels, folds, inverse_reg, max_iter, seed, repeats)
    return score, (correct - score) / len(correct)
