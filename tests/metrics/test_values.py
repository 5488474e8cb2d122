"""Known values: hand derivations on tiny inputs and closed forms from the papers."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from zooforge import metrics as M


# ---- NCE ---------------------------------------------------------------------------------------
def test_nce_zero_when_target_is_function_of_source():
    # Tran et al.: H(Y|Z) = 0 when y = g(z); here y = z mod 2 over 3 source classes.
    z = np.array([0, 0, 1, 1, 2, 2])
    assert M.nce(z, z % 2) == 0.0


def test_nce_hand_derived():
    # z = [0,0,1,1], y = [0,1,0,0]: P(z=0,y=0)=P(z=0,y=1)=1/4, P(z=1,y=0)=1/2.
    # H(Y|Z) = P(z=0) H(1/2,1/2) + P(z=1) * 0 = 1/2 log 2, so NCE = -log(2)/2.
    assert M.nce([0, 0, 1, 1], [0, 1, 0, 0]) == pytest.approx(-math.log(2) / 2, rel=1e-12)
    # A constant source label: NCE = -H(Y) = -log 2 for balanced binary labels.
    assert M.nce([7, 7, 7, 7], ["a", "b", "a", "b"]) == pytest.approx(-math.log(2), rel=1e-12)


def test_nce_accepts_probabilities_and_takes_argmax():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert M.nce(probs, [0, 1, 0, 0]) == M.nce([0, 0, 1, 1], [0, 1, 0, 0])


# ---- LEEP --------------------------------------------------------------------------------------
def test_leep_hand_derived_uniform_source():
    # theta = (1/2, 1/2) for both samples, y = (0, 1): P(y, z) = 1/4 everywhere, P(y|z) = 1/2,
    # so each sample's expected prediction is 1/2 and LEEP = log(1/2).
    theta = np.full((2, 2), 0.5)
    assert M.leep(theta, [0, 1]) == pytest.approx(math.log(0.5), rel=1e-12)


def test_leep_equals_nce_for_one_hot_source_probabilities():
    # With deterministic theta, sum_z P(y|z) theta(z) = P(y | z_i): LEEP = mean log P(y_i|z_i) = NCE.
    rng = np.random.default_rng(0)
    z = rng.integers(0, 4, 50)
    y = rng.integers(0, 3, 50)
    theta = np.eye(4)[z]
    assert M.leep(theta, y) == pytest.approx(M.nce(z, y), rel=1e-12)


# ---- H-score -----------------------------------------------------------------------------------
def test_hscore_hand_derived_one_dimension():
    # f = [0,1,2,3], y = [0,0,1,1]: var(f) (ddof 1) = 5/3; E[f|y] = [.5,.5,2.5,2.5], var = 4/3.
    # H = (4/3) / (5/3) = 0.8.
    f = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert M.hscore(f, [0, 0, 1, 1]) == pytest.approx(0.8, rel=1e-12)


def test_ledoit_wolf_matches_sklearn():
    import torch
    from sklearn.covariance import ledoit_wolf_shrinkage

    from zooforge.metrics.hscore import ledoit_wolf_shrinkage as ours

    x = np.random.default_rng(1).normal(size=(40, 15))
    x -= x.mean(axis=0)
    assert ours(torch.from_numpy(x)) == pytest.approx(ledoit_wolf_shrinkage(x, assume_centered=True), rel=1e-10)


# ---- GBC ---------------------------------------------------------------------------------------
def test_gbc_hand_derived_two_gaussians():
    # Class 0 at {-1, 1} (mean 0, var 1), class 1 at {3, 5} (mean 4, var 1), one dimension:
    # D_B = (4^2)/(8*1) + 0 = 2, counted for both ordered pairs: GBC = -2 e^-2.
    f = np.array([[-1.0], [1.0], [3.0], [5.0]])
    assert M.gbc(f, [0, 0, 1, 1], pca_dim=None) == pytest.approx(-2 * math.exp(-2), rel=1e-12)
    # Unequal variances: var0 = 1, var1 = 4 (points 2, 6), mean gap 4, sigma = 2.5:
    # D_B = 16/(8*2.5) + 1/2 (log 2.5 - (log 1 + log 4)/2) = 0.8 + 0.5 log(1.25).
    f = np.array([[-1.0], [1.0], [2.0], [6.0]])
    expected = -2 * math.exp(-(0.8 + 0.5 * math.log(1.25)))
    assert M.gbc(f, [0, 0, 1, 1], pca_dim=None, gaussian="diagonal") == pytest.approx(expected, rel=1e-12)


def test_gbc_spherical_counts_the_log_determinant_once_as_the_reference_does():
    # 2-D. Class 0 at (-1, -sqrt 3), (1, sqrt 3): variances (1, 3), spherical sigma_0 = 2. Class 1 at
    # (3, -1), (5, 1): variances (1, 1), sigma_1 = 1. sigma = 1.5, |mu_0 - mu_1|^2 = 16. The reference
    # (stable_transfer gbc.py) reduces each class to one variance and sums the log term over that one
    # value: D_B = 16 / (8 * 1.5) + 1/2 (log 1.5 - (log 2 + log 1) / 2). The exact 2-D density would
    # double the second term.
    r3 = math.sqrt(3.0)
    f = np.array([[-1.0, -r3], [1.0, r3], [3.0, -1.0], [5.0, 1.0]])
    distance = 16 / (8 * 1.5) + 0.5 * (math.log(1.5) - 0.5 * math.log(2.0))
    assert M.gbc(f, [0, 0, 1, 1], pca_dim=None) == pytest.approx(-2 * math.exp(-distance), rel=1e-12)


def _reference_gbc(x, y, spherical=True):
    """A direct transcription of the reference's loops (per class: mean, population variance floored
    at 1e-4; spherical: the mean variance; then the pairwise distances), for comparison."""
    stats = {}
    for c in np.unique(y):
        xc = x[y == c]
        stats[c] = (xc.mean(0), np.maximum(xc.var(0), 1e-4))
    total = 0.0
    for c1 in stats:
        for c2 in stats:
            if c1 == c2:
                continue
            (m1, v1), (m2, v2) = stats[c1], stats[c2]
            if spherical:
                v1, v2 = v1.mean(), v2.mean()
            avg = (v1 + v2) / 2
            d = np.sum((m1 - m2) ** 2 / avg) / 8 + 0.5 * (np.sum(np.log(avg)) - 0.5 * np.sum(np.log(v1))
                                                          - 0.5 * np.sum(np.log(v2)))
            total += np.exp(-d)
    return -total


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_equals_the_reference_formula(gaussian):
    rng = np.random.default_rng(11)
    y = rng.integers(0, 5, 300)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.2, 3, 12) + 0.8 * np.eye(5, 12)[y]
    expected = _reference_gbc(x, y, spherical=gaussian == "spherical")
    assert M.gbc(x, y, pca_dim=None, gaussian=gaussian) == pytest.approx(expected, rel=1e-10)


# ---- PARC --------------------------------------------------------------------------------------
def _reference_parc(x, y, n_dims=32):
    """The reference's steps transcribed (PCA to n_dims, StandardScaler, 1 - corrcoef RDMs of the
    features and of the one-hot labels, Spearman of the upper triangles x 100), with exact PCA."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    if n_dims is not None and x.shape[1] > n_dims:
        x = PCA(n_components=min(n_dims, x.shape[0]), svd_solver="full").fit_transform(x)
    x = StandardScaler().fit_transform(x)
    onehot = np.eye(y.max() + 1)[y]
    upper = np.triu_indices(len(y), 1)
    return spearmanr((1 - np.corrcoef(x))[upper], (1 - np.corrcoef(onehot))[upper])[0] * 100


@pytest.mark.parametrize("d", [12, 80], ids=["D<32", "D>32"])
def test_parc_equals_the_reference_steps(d):
    rng = np.random.default_rng(12)
    y = rng.integers(0, 4, 150)
    x = rng.normal(size=(150, d)) * rng.uniform(0.1, 5, d) + 1.5 * np.eye(4, d)[y]
    assert M.parc(x, y) == pytest.approx(_reference_parc(x, y), rel=1e-6)


# ---- TransRate ---------------------------------------------------------------------------------
def test_transrate_matches_direct_logdet():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(60, 8))
    y = rng.integers(0, 3, 60)

    def rate(z, eps=1e-4):
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = f - f.mean(axis=0)
    expected = rate(z) - np.mean([rate(z[y == c]) for c in range(3)])
    assert M.transrate(f, y) == pytest.approx(expected, rel=1e-10)


# ---- LogME -------------------------------------------------------------------------------------
def _direct_evidence(f, y_col, alpha, beta):
    """The evidence at (alpha, beta) with an explicit inverse and log-determinant (slow, obvious)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.inv(a) @ f.T @ y_col
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * np.sum((f @ m - y_col) ** 2)
            - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1] - n / 2 * np.log(2 * np.pi)) / n


@pytest.mark.parametrize("n,d", [(200, 20), (30, 80)], ids=["N>D", "N<D"])
def test_logme_equals_direct_evidence(n, d):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, n)
    f = rng.normal(size=(n, d)) + 0.7 * np.eye(4, d)[y]
    fit = M.logme_fit(f, y)
    for c in range(4):
        direct = _direct_evidence(f, (y == c).astype(float), fit.alpha[c], fit.beta[c])
        assert fit.evidence[c] == pytest.approx(direct, rel=1e-8)
    # posterior mean agrees with the explicit formula too
    a = fit.alpha[0] * np.eye(d) + fit.beta[0] * f.T @ f
    np.testing.assert_allclose(fit.weights[0], fit.beta[0] * np.linalg.solve(a, f.T @ (y == 0)), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("n,d", [(200, 20), (30, 80)], ids=["N>D", "N<D"])
def test_logme_is_a_stationary_point_of_the_evidence(n, d):
    # alpha, beta maximise the evidence: nudging either by 1% lowers it.
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, n)
    f = rng.normal(size=(n, d)) + np.eye(3, d)[y]
    fit = M.logme_fit(f, y)
    col = (y == 1).astype(float)
    best = _direct_evidence(f, col, fit.alpha[1], fit.beta[1])
    for da, db in [(1.01, 1), (0.99, 1), (1, 1.01), (1, 0.99)]:
        assert _direct_evidence(f, col, fit.alpha[1] * da, fit.beta[1] * db) < best


def _marginal_evidence(f, y_col, alphas, betas):
    """Exact log marginal likelihood / N of y ~ N(0, I/beta + F F^T/alpha) on an (alpha, beta)
    grid, from the eigenvalues of F F^T: an independent route to the evidence."""
    n = f.shape[0]
    lam, u = np.linalg.eigh(f @ f.T)
    lam = np.clip(lam, 0, None)
    proj = (u.T @ y_col) ** 2
    var = 1 / betas[:, None, None] + lam / alphas[None, :, None]          # (B, A, N)
    return -0.5 * (np.log(var).sum(-1) + (proj / var).sum(-1) + n * np.log(2 * np.pi)) / n


def test_logme_finds_the_global_maximum_where_the_fixed_point_stops_low():
    # Issue #22's case: from alpha = beta = 1 the fixed point stops at alpha = 11.6 with -1.139615
    # for class 1, but the evidence keeps rising towards alpha -> infinity (-1.0977 at alpha = 1e6).
    rng = np.random.default_rng(1)
    n, d = 200, 10
    scales = np.exp(rng.uniform(-4, 3, d))
    x = rng.normal(size=(n, d)) * scales
    w = rng.normal(size=d) / scales * rng.uniform(0, 1, d) ** 3
    y = (x @ w + rng.normal(size=n) * 1.5 > 0).astype(int)
    fit = M.logme_fit(x, y)
    grid = _marginal_evidence(x, (y == 1).astype(float), np.logspace(-1, 6, 71), np.logspace(-1, 2, 31))
    assert grid.max() == pytest.approx(-1.097745, abs=1e-6)
    assert fit.evidence[1] >= grid.max() - 1e-9
    assert fit.evidence[1] > -1.1                       # the first fixed point's -1.1396 is gone
    # the reported (alpha, beta) are where that evidence is reached
    at_fit = _marginal_evidence(x, (y == 1).astype(float), fit.alpha[1:2], fit.beta[1:2])
    assert fit.evidence[1] == pytest.approx(at_fit[0, 0], rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 60), d=st.integers(2, 40),
       spread=st.floats(0.0, 4.0), signal=st.floats(0.0, 3.0), regression=st.booleans())
def test_logme_is_at_least_the_evidence_anywhere_on_a_dense_grid(seed, n, d, spread, signal, regression):
    # Random spectra (feature scales over up to 8 decades) and targets of any strength, N > D and
    # N < D alike: no (alpha, beta) on a 2-per-decade grid over 16 x 12 decades beats the fit.
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(-spread, spread, d))
    f = rng.normal(size=(n, d)) * scales
    # weights that favour the small-scale directions (as in #22's case) make two maxima likely
    w = rng.normal(size=d) / scales * rng.uniform(0, 1, d) ** 3
    latent = signal * (f @ w) / max((f @ w).std(), 1e-12) + rng.normal(size=n)
    if regression:
        y = latent
        cols = [y]
    else:
        y = (latent > np.median(latent)).astype(int)
        if len(np.unique(y)) < 2:
            return
        cols = [(y == c).astype(float) for c in range(2)]
    fit = M.logme_fit(f, y, regression=regression)
    alphas, betas = np.logspace(-8, 8, 33), np.logspace(-4, 8, 25)
    for c, col in enumerate(cols):
        grid = _marginal_evidence(f, col, alphas, betas)
        assert fit.evidence[c] >= grid.max() - 1e-9 * max(1.0, abs(grid.max()))


def test_logme_small_n_is_not_inflated_like_the_reference_bug():
    # thuml/LogME issue #23: with N < D the fixed-point code drops (D - rank)/2 log(alpha) and
    # reports about +15 at 100 x 512. The exact evidence of random features is negative.
    rng = np.random.default_rng(5)
    f = rng.normal(size=(100, 512))
    y = rng.integers(0, 5, 100)
    assert -2.0 < M.logme(f, y) < 0.0


def test_logme_invariances():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 120)
    f = rng.normal(size=(120, 10)) + np.eye(4, 10)[y]
    base = M.logme(f, y)
    rotation = ortho_group.rvs(10, random_state=0)
    assert M.logme(f @ rotation, y) == pytest.approx(base, rel=1e-9)       # orthogonal rotation
    perm = rng.permutation(120)
    assert M.logme(f[perm], y[perm]) == pytest.approx(base, rel=1e-9)      # sample order
    renamed = np.array(["d", "c", "b", "a"])[y]
    assert M.logme(f, renamed) == pytest.approx(base, rel=1e-9)            # class relabelling


def test_logme_regression_targets():
    rng = np.random.default_rng(7)
    f = rng.normal(size=(150, 6))
    good = f @ rng.normal(size=(6, 2)) + 0.1 * rng.normal(size=(150, 2))
    noise = rng.normal(size=(150, 2))
    assert M.logme(f, good, regression=True) > M.logme(f, noise, regression=True)


# ---- OTCE --------------------------------------------------------------------------------------
def test_otce_terms_on_identical_domains():
    rng = np.random.default_rng(8)
    f = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    domain, task = M.otce_terms(f, y, f, y)
    assert domain == pytest.approx(0.0, abs=1e-12)    # the identity coupling costs nothing
    assert task == pytest.approx(0.0, abs=1e-12)      # and maps every label to itself


def test_fit_otce_weights_recovers_a_linear_law():
    domain = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    task = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    accuracy = -0.2 * domain - 1.5 * task + 3.0
    assert M.fit_otce_weights(domain, task, accuracy) == pytest.approx((-0.2, -1.5, 3.0), rel=1e-9)
    # and otce() applies them
    f = np.random.default_rng(9).normal(size=(30, 4))
    y = np.arange(30) % 3
    w = (-0.2, -1.5, 3.0)
    d, t = M.otce_terms(f, y, f + 1.0, y)
    assert M.otce(f, y, f + 1.0, y, weights=w) == pytest.approx(-0.2 * d - 1.5 * t + 3.0)


@pytest.mark.parametrize("n, d", [(60, 200), (300, 40)])
def test_pca_project_matches_the_svd_in_both_regimes(n, d):
    """N < D goes through the N x N Gram matrix, N >= D through the D x D scatter: both must give
    the SVD's scores U S (columns up to the documented sign convention)."""
    from zooforge.metrics._torch import pca_project

    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) * np.linspace(3, 0.1, d)
    got = pca_project(torch.from_numpy(x), 10).numpy()
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    want = u[:, :10] * s[:10]
    want *= np.sign(want[np.abs(want).argmax(0), np.arange(10)])
    np.testing.assert_allclose(got, want, atol=1e-8 * np.abs(want).max())


@pytest.mark.parametrize("n, d", [(80, 300), (500, 30)])
def test_shrinkage_hscore_equals_the_pseudo_inverse_formula(n, d):
    """tr(S_shrunk^+ (1 - a) cov(E[f|y])) computed the slow way, with the same Ledoit-Wolf a."""
    from zooforge.metrics.hscore import ledoit_wolf_shrinkage, regularized_hscore

    rng = np.random.default_rng(2)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(4, d))[y]
    xc = x - x.mean(0)
    a = ledoit_wolf_shrinkage(torch.from_numpy(xc))
    cov = xc.T @ xc / n
    shrunk = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
    g = np.stack([xc[y == c].mean(0) for c in range(4)])[y]
    want = np.trace(np.linalg.pinv(shrunk, hermitian=True) @ ((1 - a) * g.T @ g / n))
    assert regularized_hscore(x, y) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n, d", [(40, 120), (300, 30)])
def test_hscore_equals_the_pseudo_inverse_formula_in_both_regimes(n, d):
    """N < D goes through a thin SVD of the features, N >= D through pinv of the covariance."""
    rng = np.random.default_rng(3)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)) * np.linspace(2, 0.5, d) + rng.normal(size=(3, d))[y]
    x[:, 0] = 1.0                                              # a constant direction: no variance
    cov = np.cov(x, rowvar=False)
    g = np.stack([x[y == c].mean(0) for c in range(3)])[y]
    want = np.trace(np.linalg.pinv(cov, hermitian=True) @ np.cov(g, rowvar=False))
    assert M.hscore(x, y) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("n, d", [(90, 400), (300, 20)])
def test_linear_probe_equals_a_converged_standard_pipeline(n, d):
    """Same folds, same L2 logistic regression: the N < D route (rotation onto the training rows'
    span) and the N >= D route, both solved by Newton-CG, must give the probabilities of
    scikit-learn's StandardScaler + LogisticRegression solved by lbfgs to a tight tolerance, hence
    the same accuracy."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from zooforge.metrics._validation import canonical_order
    from zooforge.metrics.linear_probe import _fold_correct

    rng = np.random.default_rng(4)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)) * np.linspace(2, 0.2, d) + 0.4 * rng.normal(size=(3, d))[y]
    x[:, 1] = 5.0                                             # a constant column, as dead ReLU units give
    order = canonical_order(x)
    xs, ys = x[order], y[order]
    accs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(xs, ys):
            ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=20000, tol=1e-10)).fit(xs[tr], ys[tr])
            accs.append(ref.score(xs[te], ys[te]))
            assert _fold_correct(xs[tr], ys[tr], xs[te], ys[te], inverse_reg=1.0, max_iter=300).mean() == accs[-1]
    assert M.linear_probe(x, y, repeats=1) == pytest.approx(np.mean(accs), abs=1e-12)


def test_linear_probe_averages_its_fold_draws():
    """repeats=r is the mean of the r single-draw probes with seeds seed..seed+r-1 (every draw has the
    same number of folds), for every task kind, and the influences average the same way."""
    from zooforge.metrics.linear_probe import linear_probe_influence, regression_probe_influence

    rng = np.random.default_rng(2)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 8)) + 0.8 * rng.normal(size=(3, 8))[y]
    singles = [M.linear_probe(x, y, repeats=1, seed=s) for s in (4, 5, 6)]
    assert len(set(singles)) > 1                               # the fold draw does move the score
    assert M.linear_probe(x, y, repeats=3, seed=4) == pytest.approx(np.mean(singles), abs=1e-12)
    score, g = linear_probe_influence(x, y, repeats=3, seed=4)
    parts = [linear_probe_influence(x, y, repeats=1, seed=s) for s in (4, 5, 6)]
    assert score == pytest.approx(np.mean([p[0] for p in parts]), abs=1e-12)
    assert np.allclose(g, np.mean([p[1] for p in parts], axis=0), atol=1e-12)
    r = (x @ rng.normal(size=8) + rng.normal(size=60))[:, None]
    assert M.linear_probe(x, r, task="regression", repeats=3, seed=4) == pytest.approx(
        np.mean([regression_probe_influence(x, r, repeats=1, seed=s)[0] for s in (4, 5, 6)]), abs=1e-12)
    tags = np.stack([y == 0, y != 1], axis=1).astype(float)
    assert M.linear_probe(x, tags, task="multilabel", repeats=3, seed=4) == pytest.approx(
        np.mean([M.linear_probe(x, tags, task="multilabel", repeats=1, seed=s) for s in (4, 5, 6)]), abs=1e-12)
    with pytest.raises(ValueError, match="repeats"):
        M.linear_probe(x, y, repeats=0)


def test_row_span_basis_is_orthonormal_and_spans_the_rows():
    from zooforge.metrics.linear_probe import _row_span_basis

    rng = np.random.default_rng(5)
    a = rng.normal(size=(12, 3)) @ rng.normal(size=(3, 50))     # rank 3
    q = _row_span_basis(a)
    assert q.shape == (50, 3)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(a @ q @ q.T, a, atol=1e-9 * np.abs(a).max())


def _reference_sfda(x, y):
    """SFDA as the paper's code computes it: shrunk within and total scatters, the generalised
    eigenproblem S_b v = w S_w v with every direction kept, the LDA posterior in that space,
    ConfMix, and a refit with the same shrinkage."""
    from scipy import linalg
    from scipy.special import softmax

    classes = np.unique(y)
    d = x.shape[1]

    def fit(x, shrinkage):
        priors = np.array([np.mean(y == c) for c in classes])
        means = np.stack([x[y == c].mean(0) for c in classes])
        within = sum(p * np.cov(x[y == c], rowvar=False, bias=True) for p, c in zip(priors, classes))
        if shrinkage is None:
            shrinkage = max(np.exp(-5 * np.linalg.eigvalsh(within)[-1]), 1e-10)
        shrink = lambda s: (1 - shrinkage) * s + shrinkage * np.trace(s) / d * np.eye(d)  # noqa: E731
        within_s, total_s = shrink(within), shrink(np.cov(x, rowvar=False, bias=True))
        _, vecs = linalg.eigh(total_s - within_s, within_s)
        coef = means @ vecs @ vecs.T
        intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        return softmax(x @ coef.T + intercept, axis=1), shrinkage, means

    probs, shrinkage, means = fit(x, None)
    conf = softmax(probs, axis=1)[np.arange(len(y)), y][:, None]
    others = (means.sum(0) - means) / (len(classes) - 1)
    probs, _, _ = fit(conf * x + (1 - conf) * others[y], shrinkage)
    return float(np.mean(probs[np.arange(len(y)), y]))


@pytest.mark.parametrize("n, d, scale", [(60, 150, 0.05), (60, 150, 1.0), (300, 20, 0.3)])
def test_sfda_equals_the_reference_eigenproblem(n, d, scale):
    """N < D goes through the N x N Woodbury side, N >= D through a D x D Cholesky; both must give
    the reference's generalised-eigenvector score, with real shrinkage (small features) and with
    the 1e-10 floor (unit features)."""
    rng = np.random.default_rng(6)
    y = np.arange(n) % 3
    x = scale * (rng.normal(size=(n, d)) + 0.7 * rng.normal(size=(3, d))[y])
    assert M.sfda(x, y) == pytest.approx(_reference_sfda(x, y), rel=1e-7)


@pytest.mark.parametrize("n, d", [(30, 80), (80, 30)])
def test_shrunk_solve_matches_a_dense_solve(n, d):
    from zooforge.metrics._torch import shrunk_solve

    rng = np.random.default_rng(7)
    a, rhs = rng.normal(size=(n, d)), rng.normal(size=(d, 3))
    want = np.linalg.solve(0.7 * a.T @ a + 0.05 * np.eye(d), rhs)
    got = shrunk_solve(torch.from_numpy(a), 0.7, 0.05, torch.from_numpy(rhs)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_parc_names_features_it_cannot_correlate_instead_of_returning_nan():
    # constant features made every row of the correlation matrix NaN: a NaN score and numpy's warnings
    from zooforge.metrics import REGISTRY

    with pytest.raises(ValueError, match=r"12 of the 12 samples do not differ from the mean.*constant features"):
        REGISTRY["parc"].fn(np.ones((12, 5)), np.repeat([0, 1, 2], 4))
    with pytest.raises(ValueError, match="every one of the 4 samples is alone in its class"):
        REGISTRY["parc"].fn(np.random.default_rng(0).normal(size=(4, 5)), np.arange(4))   # one-shot: no same-class pair
    x = np.random.default_rng(0).normal(size=(12, 5))
    x[:4] = 7.0                                              # four samples alike are fine: the rest differ
    assert np.isfinite(REGISTRY["parc"].fn(x, np.repeat([0, 1, 2], 4)))
