"""Estimators for regression and multi-label targets: the forms that exist, and skips for the rest."""

import numpy as np
import pytest
from scipy.optimize import minimize

import zooforge.metrics as M
from zooforge.metrics import get_estimator, list_estimators


def _evidence(f, y_col, log_alpha, log_beta):
    """Log marginal likelihood / N of y ~ N(0, I/beta + F F^T/alpha), straight from its definition."""
    n = f.shape[0]
    cov = np.eye(n) / np.exp(log_beta) + f @ f.T / np.exp(log_alpha)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (logdet + y_col @ np.linalg.solve(cov, y_col) + n * np.log(2 * np.pi)) / n


@pytest.mark.parametrize("n, d", [(80, 6), (30, 50)])
def test_logme_regression_is_the_maximum_of_the_evidence(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d)) * np.exp(rng.uniform(-1, 1, d))
    y = np.stack([f @ rng.normal(size=d) + rng.normal(size=n), 3.0 * rng.normal(size=n) + 5.0], axis=1)
    fit = M.logme_fit(f, y, regression=True)
    for k in range(2):
        best = max((minimize(lambda p: -_evidence(f, y[:, k], *p), start, method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000})
                    for start in ([0.0, 0.0], [5.0, -3.0], [-3.0, 2.0])), key=lambda r: r.fun)
        assert fit.evidence[k] == pytest.approx(-best.fun, abs=1e-7)
    assert M.logme(f, y, task="regression") == pytest.approx(fit.evidence.mean(), rel=1e-12)


def test_logme_multilabel_is_classification_when_tags_are_exclusive():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 150)
    f = rng.normal(size=(150, 8)) + np.eye(4, 8)[y]
    onehot = np.eye(4, dtype=np.int8)[y]
    assert M.logme(f, onehot, task="multilabel") == pytest.approx(M.logme(f, y), rel=1e-9)


def test_linear_probe_regression_r2_and_multilabel_map():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 12))
    exact = f[:, :3] @ [1.0, -2.0, 0.5]
    assert M.linear_probe(f, exact[:, None], task="regression") > 0.999
    noisy = exact + rng.normal(size=300) * exact.std()                   # half the variance is noise
    assert M.linear_probe(f, noisy[:, None], task="regression") == pytest.approx(0.5, abs=0.08)
    assert M.linear_probe(f, rng.normal(size=(300, 1)), task="regression") < 0.02
    # R^2 is in the target's own terms: rescaling and shifting the target changes nothing
    assert M.linear_probe(f, 1e3 * noisy[:, None] + 7, task="regression") == pytest.approx(
        M.linear_probe(f, noisy[:, None], task="regression"), abs=1e-6)
    separable = (f[:, :3] > 0).astype(np.int8)
    assert M.linear_probe(f, separable, task="multilabel") > 0.97
    random_tags = (rng.random((300, 3)) < 0.3).astype(np.int8)
    assert M.linear_probe(f, random_tags, task="multilabel") < 0.45      # about the tags' rate, 0.3


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_influence_is_the_derivative_of_the_weighted_ap(ties):
    from sklearn.metrics import average_precision_score

    from zooforge.metrics.linear_probe import average_precision_influence

    rng = np.random.default_rng(3)
    positive = rng.random(50) < 0.3
    scores = rng.random(50)
    if ties:
        scores = np.round(scores * 4) / 4                  # tied scores share one threshold, as sklearn's
    ap, g = average_precision_influence(positive, scores)
    assert ap == pytest.approx(average_precision_score(positive, scores), abs=1e-12)
    assert abs(g.sum()) < 1e-12                              # scaling every weight leaves AP alone
    eps = 1e-6
    for m in range(50):
        up, down = np.ones(50), np.ones(50)
        up[m] += eps
        down[m] -= eps
        numeric = (average_precision_score(positive, scores, sample_weight=up)
                   - average_precision_score(positive, scores, sample_weight=down)) / (2 * eps)
        assert g[m] == pytest.approx(numeric, abs=1e-8)


def test_multilabel_probe_influence_is_the_tags_mean_on_the_out_of_fold_probabilities():
    from zooforge.metrics.linear_probe import (_out_of_fold, _tag_probabilities, average_precision_influence,
                                               multilabel_probe_influence)

    rng = np.random.default_rng(4)
    f = rng.normal(size=(90, 6))
    tags = np.stack([f[:, 0] > 0.3, f[:, 1] + rng.normal(size=90) > 0, rng.random(90) < 0.2], axis=1).astype(float)
    score, g = multilabel_probe_influence(f, tags, repeats=1)
    assert score == pytest.approx(M.linear_probe(f, tags, task="multilabel", repeats=1))
    y, p = _out_of_fold(f, tags, 5, 0, _tag_probabilities(1.0, 300))
    expected = np.mean([average_precision_influence(y[:, k] > 0.5, p[:, k])[1] for k in range(3)], axis=0)
    np.testing.assert_allclose(g, expected, atol=1e-12)
    est = get_estimator("linear_probe")                     # the registry's default: 5 draws, with intervals free
    score5, g5 = est.with_influence(tags, {"features": f}, task="multilabel")
    assert score5 == pytest.approx(est(tags, {"features": f}, task="multilabel"), abs=1e-12) and g5.shape == (90,)


def test_regression_probe_influence_matches_reweighting():
    from zooforge.metrics.linear_probe import _out_of_fold, _r2_columns, _ridge, regression_probe_influence

    rng = np.random.default_rng(1)
    f = rng.normal(size=(120, 5))
    y = (f @ rng.normal(size=5) + rng.normal(size=120))[:, None]
    score, g = regression_probe_influence(f, y, repeats=1)
    assert g.shape == (120,) and np.isfinite(g).all()
    targets, predicted = _out_of_fold(f, y, 5, 0, _ridge)
    r2, _, _ = _r2_columns(targets, predicted)
    assert score == pytest.approx(r2.mean())
    # with the predictions held fixed, g is the derivative of the weighted R^2 in each weight
    i, eps = 17, 1e-6
    w = np.ones(120)
    w[i] += eps
    mean = (w * targets[:, 0]).sum() / w.sum()
    weighted = 1 - (w * (targets[:, 0] - predicted[:, 0]) ** 2).sum() / (w * (targets[:, 0] - mean) ** 2).sum()
    assert (weighted - score) / eps == pytest.approx(g[i], rel=1e-4)


def test_the_registry_says_which_estimators_have_which_forms():
    assert list_estimators(task="regression") == ["linear_probe", "logme"]
    assert list_estimators(task="multilabel") == ["linear_probe", "logme"]
    leep = get_estimator("leep")
    assert leep.unsupported("classification") is None
    why = leep.unsupported("regression")
    assert "classification" in why and "linear_probe, logme" in why
    with pytest.raises(ValueError, match="'leep' is defined for classification targets, not regression"):
        leep(np.zeros((4, 1)), {"features": np.zeros((4, 2)), "source_probs": np.full((4, 2), 0.5)}, "regression")


def test_score_featureset_skips_with_the_reason():
    from zooforge.selection.rank import score_featureset
    from zooforge.zoo.features import FeatureSet

    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 4)).astype(np.float32)
    fs = FeatureSet(features=f, labels=(f[:, :1] * 2.0).astype(np.float64), classes=("t",), task="regression")
    out = score_featureset(fs, ["logme", "linear_probe", "parc", "leep"])
    assert out["logme"]["score"] is not None and out["linear_probe"]["score"] > 0.99
    assert out["parc"]["score"] is None and "not regression" in out["parc"]["skipped"]
    assert out["leep"]["score"] is None and "not regression" in out["leep"]["skipped"]
