"""Influence functions (d score / d sample weight) behind the resample-free intervals.

Checked three ways: against the derivative of the paper's formula written out with sample weights
(autograd, at the fitted alpha and beta: the envelope theorem says that is the whole derivative),
against the finite difference of adding a copy of a sample (weight 1 -> 2: equal to first order),
and by the spread of the draws they give against the true sampling spread over fresh datasets.
"""

import math

import numpy as np
import pytest
import torch

from zooforge.metrics import get_estimator
from zooforge.metrics.leep import leep, leep_influence
from zooforge.metrics.logme import logme, logme_fit
from zooforge.metrics.nce import nce, nce_influence


def _features(n, d, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = rng.normal(size=(n, d))
    x[:, :c] += 1.5 * np.eye(c)[y]
    return x, y


def _probs(n, z, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, z))
    logits[np.arange(n), y % z] += 1.5
    theta = np.exp(logits)
    return theta / theta.sum(axis=1, keepdims=True), y


def _weighted_evidence(f, y, w, alpha, beta):
    """Mean over targets of log p(y_k | F, alpha_k, beta_k) / sum(w) with sample weights w (the
    likelihood's terms each count w_i times), written out directly from the paper's formula."""
    n_w = w.sum()
    out = []
    for k in range(y.shape[1]):
        a, b = alpha[k], beta[k]
        A = a * torch.eye(f.shape[1], dtype=f.dtype) + b * f.T @ (w[:, None] * f)
        m = b * torch.linalg.solve(A, f.T @ (w * y[:, k]))
        resid = (w * (y[:, k] - f @ m).square()).sum()
        ev = (f.shape[1] / 2 * torch.log(a) + n_w / 2 * torch.log(b) - b / 2 * resid - a / 2 * m.square().sum()
              - torch.logdet(A) / 2 - n_w / 2 * math.log(2 * math.pi))
        out.append(ev / n_w)
    return torch.stack(out).mean()


@pytest.mark.parametrize("n, d", [(200, 12), (40, 90)])       # both regimes: N > D and N < D
def test_logme_influence_is_the_derivative_of_the_weighted_evidence(n, d):
    x, y = _features(n, d, 3, seed=n)
    fit = logme_fit(x, y, influence=True)
    assert fit.score == pytest.approx(logme(x, y), abs=1e-12)
    f = torch.as_tensor(x, dtype=torch.float64)
    targets = torch.nn.functional.one_hot(torch.as_tensor(y), 3).to(torch.float64)
    w = torch.ones(n, dtype=torch.float64, requires_grad=True)
    value = _weighted_evidence(f, targets, w, torch.as_tensor(fit.alpha), torch.as_tensor(fit.beta))
    assert value.item() == pytest.approx(fit.score, rel=1e-8)
    (grad,) = torch.autograd.grad(value, w)
    np.testing.assert_allclose(fit.influence, grad.numpy(), rtol=1e-5, atol=1e-9)


def _duplicate_differences(score_fn, arrays, y, rows):
    base = score_fn(*arrays, y)
    return np.array([score_fn(*[np.vstack([a, a[i:i + 1]]) for a in arrays], np.append(y, y[i])) - base for i in rows])


@pytest.mark.parametrize("name", ["logme", "leep", "nce"])
def test_influence_predicts_the_effect_of_adding_a_copy_of_a_sample(name):
    rows = range(10)
    if name == "logme":
        x, y = _features(400, 10, 3, seed=1)
        g = logme_fit(x, y, influence=True).influence
        diff = _duplicate_differences(logme, [x], y, rows)
    else:
        theta, y = _probs(400, 5, 3, seed=2)
        fn, infl = (leep, leep_influence) if name == "leep" else (nce, nce_influence)
        score, g = infl(theta, y)
        assert score == pytest.approx(fn(theta, y), abs=1e-12)
        diff = _duplicate_differences(fn, [theta], y, rows)
    # first order: the difference of one extra copy is g_i + O(1/N^2); the N^-1 terms must agree
    np.testing.assert_allclose(diff, g[list(rows)], rtol=0.15, atol=2e-5)


def test_registered_influences_run_through_the_registry():
    x, y = _features(120, 8, 3, seed=3)
    theta, _ = _probs(120, 5, 3, seed=3)
    inputs = {"features": x, "source_probs": theta}
    for name in ("logme", "leep", "nce", "linear_probe", "parc", "transrate"):
        est = get_estimator(name)
        score, g = est.with_influence(y, inputs)
        assert score == pytest.approx(est(y, inputs), abs=1e-12) and g.shape == (120,)
    with pytest.raises(ValueError, match="no influence function"):
        get_estimator("hscore").with_influence(y, inputs)


def test_transrate_influence_is_the_derivative_of_its_weighted_form():
    from zooforge.metrics.transrate import _weighted_transrate, transrate, transrate_influence

    x, y = _features(150, 6, 3, seed=4)
    z = torch.as_tensor(x, dtype=torch.float64)
    labels = torch.as_tensor(y)
    ones = torch.ones(150, dtype=torch.float64)
    assert float(_weighted_transrate(z, labels, 3, ones, 1e-4)) == pytest.approx(transrate(x, y), rel=1e-9)
    score, g = transrate_influence(x, y)
    for i in (0, 7, 81):
        step = torch.zeros(150, dtype=torch.float64)
        step[i] = 1e-5
        numeric = (_weighted_transrate(z, labels, 3, ones + step, 1e-4) - _weighted_transrate(z, labels, 3, ones - step, 1e-4)) / 2e-5
        assert g[i] == pytest.approx(float(numeric), rel=1e-4, abs=1e-9)


def test_parc_influence_follows_adding_a_copy_and_keeps_the_input_order():
    from zooforge.metrics.parc import parc, parc_influence

    x, y = _features(200, 10, 3, seed=5)
    score, g = parc_influence(x, y)
    assert score == pytest.approx(parc(x, y), abs=1e-12)
    diff = _duplicate_differences(parc, [x], y, range(12))
    # first order in the pairs' ranks only: the sign and size of most samples' effect
    assert np.corrcoef(diff, g[:12])[0, 1] > 0.8
    perm = np.random.default_rng(0).permutation(200)
    np.testing.assert_allclose(parc_influence(x[perm], y[perm])[1], g[perm], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, tolerance", [("logme", 0.25), ("leep", 0.25), ("nce", 0.25), ("linear_probe", 0.25),
                                             ("transrate", 0.25), ("parc", 0.4)])
def test_resample_free_draws_spread_like_the_score_over_fresh_datasets(name, tolerance):
    """The coverage check: the spread of the draws on one dataset estimates the spread of the score
    over independent datasets of the same distribution (here 60 of them, so the reference SD is
    known to ~10%); the draws' SD must land within 25% of it on average (stratified draws keep the
    class counts, fresh datasets do not, so they spread a little less). PARC's influence holds the
    pairs' ranks fixed, a cruder first order: its draws are wider (1.3x here), so 40%."""
    from zooforge.selection.intervals import resamples

    scores, spreads = [], []
    for seed in range(60):
        if name in ("logme", "linear_probe", "parc", "transrate"):
            x, y = _features(300, 8, 3, seed=100 + seed)
            arrays = {"features": x}
        else:
            x, y = _probs(300, 6, 3, seed=100 + seed)
            arrays = {"source_probs": x}
        score, g = get_estimator(name).with_influence(y, arrays)
        draws = resamples(y, 200, seed).draw(score, g, None)
        scores.append(score)
        spreads.append(draws.std())
    assert np.mean(spreads) / np.std(scores, ddof=1) == pytest.approx(1.0, abs=tolerance)


def test_multilabel_probe_draws_spread_like_its_map_over_fresh_datasets():
    """The same coverage check for the multi-label probe's mAP, whose draws come from the average
    precision's influence (the out-of-fold probabilities held fixed) instead of re-fitting every
    tag's probes on each subsample."""
    from zooforge.selection.intervals import resamples
    from zooforge.zoo.targets import strata

    scores, spreads = [], []
    for seed in range(60):
        rng = np.random.default_rng(500 + seed)
        x = rng.normal(size=(300, 6))
        tags = np.stack([x[:, 0] + rng.normal(size=300) > 0.5, x[:, 1] - x[:, 2] + rng.normal(size=300) > 0,
                         x[:, 3] + 2 * rng.normal(size=300) > 1.0], axis=1).astype(float)
        score, g = get_estimator("linear_probe").with_influence(tags, {"features": x}, task="multilabel")
        draws = resamples(strata(tags, "multilabel"), 200, seed).draw(score, g, None)
        scores.append(score)
        spreads.append(draws.std())
    assert np.mean(spreads) / np.std(scores, ddof=1) == pytest.approx(1.0, abs=0.25)
