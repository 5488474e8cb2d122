"""Properties every registered estimator must have, driven from the registry (sklearn's test_common)."""

import numpy as np
import pytest
import torch

from zooforge import metrics as M

NAMES = sorted(M.REGISTRY)


def _task(seed=0, n=120, d=12, classes=3, separation=3.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    f = rng.normal(size=(n, d))
    f[:, :classes] += separation * np.eye(classes)[y]
    logits = 2.0 * f[:, :classes] + rng.normal(size=(n, classes))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return f, y, probs


def _source_domain(d=12):
    # A different task in the same feature space: 5 unbalanced source classes.
    rng = np.random.default_rng(99)
    ys = np.repeat(np.arange(5), [30, 20, 25, 15, 10])
    xs = rng.normal(size=(len(ys), d))
    xs[:, :5] += 4.0 * np.eye(5)[ys]
    return xs, ys


def _inputs(f, probs, y):
    xs, ys = _source_domain(f.shape[1])
    return {"features": f, "source_probs": probs, "source_features": xs, "source_labels": ys}


def _score(name, f, y, probs):
    return M.REGISTRY[name](y, _inputs(f, probs, y))


@pytest.mark.parametrize("name", NAMES)
def test_returns_python_float(name):
    f, y, probs = _task()
    out = _score(name, f, y, probs)
    assert type(out) is float and np.isfinite(out)


@pytest.mark.parametrize("name", NAMES)
def test_sample_order_invariance(name):
    f, y, probs = _task(1)
    perm = np.random.default_rng(0).permutation(len(y))
    base = _score(name, f, y, probs)
    inputs = _inputs(f, probs, y)
    permuted = dict(inputs, features=f[perm], source_probs=probs[perm])
    assert M.REGISTRY[name](y[perm], permuted) == pytest.approx(base, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_label_renaming_invariance(name):
    f, y, probs = _task(2)
    base = _score(name, f, y, probs)
    renamed = np.array(["zebra", "apple", "mango"])[y]   # permutes the sorted class order too
    inputs = _inputs(f, probs, y)
    inputs["source_labels"] = np.array(["q", "p", "r", "a", "m"])[inputs["source_labels"]]
    assert M.REGISTRY[name](renamed, inputs) == pytest.approx(base, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_separable_scores_higher_than_noise(name):
    f, y, probs = _task(3, separation=4.0)
    noise_f, _, noise_probs = _task(3, separation=0.0)
    shuffled = np.random.default_rng(1).permutation(noise_probs)
    good = _score(name, f, y, probs)
    bad = M.REGISTRY[name](y, dict(_inputs(noise_f, shuffled, y)))
    assert good > bad


@pytest.mark.parametrize("name", ["logme", "gbc", "hscore", "hscore_shrink", "transrate"])
def test_torch_tensors_give_numpy_results(name):
    f, y, probs = _task(4)
    expected = _score(name, f, y, probs)
    got = M.REGISTRY[name](torch.as_tensor(y), {"features": torch.as_tensor(f)})
    assert got == pytest.approx(expected, rel=1e-9)
    # float32 tensors (what extraction produces) agree to float32 precision
    got32 = M.REGISTRY[name](y, {"features": torch.as_tensor(f, dtype=torch.float32)})
    assert got32 == pytest.approx(expected, rel=1e-5)


def test_registry_lists_and_needs():
    assert {"nce", "leep", "nleep", "logme", "gbc", "hscore", "hscore_shrink", "transrate", "parc",
            "sfda", "f_otce", "jc_otce", "otce_self", "linear_probe"} <= set(M.REGISTRY)
    assert M.REGISTRY["leep"].needs == {"source_probs"}
    assert M.REGISTRY["f_otce"].missing({"features"}) == ["source_features"]
    assert M.list_estimators("*otce*") == ["f_otce", "jc_otce", "otce_self"]


def test_registry_is_read_only_and_rejects_duplicates():
    with pytest.raises(TypeError):
        M.REGISTRY["x"] = None  # type: ignore[index]
    with pytest.raises(ValueError, match="'logme' is already registered"):
        M.register("logme", needs=("features",), summary="dup")(lambda features, labels: 0.0)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown estimator 'logmee'.*valid estimators: .*logme"):
        M.get_estimator("logmee")


def test_registry_calls_run_blas_single_threaded_beside_a_multithreaded_torch():
    """Two spinning thread pools on the same cores slow scoring several-fold: an estimator called
    through the registry sees one BLAS thread while torch has more, and the limit is lifted after."""
    from threadpoolctl import threadpool_info

    seen = []

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    est = M.Estimator("probe", lambda labels, features: seen.append(blas_threads()) or 0.0,
                      frozenset({"features"}), "records the BLAS pools' threads")
    before, threads = blas_threads(), torch.get_num_threads()
    if not before or max(before) == 1:
        pytest.skip("BLAS already runs one thread here: nothing to limit")
    try:
        torch.set_num_threads(2)
        est(np.arange(4) % 2, {"features": np.eye(4)})
        torch.set_num_threads(1)
        est(np.arange(4) % 2, {"features": np.eye(4)})
    finally:
        torch.set_num_threads(threads)
    assert seen[0] and all(n == 1 for n in seen[0])
    assert seen[1] == before and blas_threads() == before


def test_canonical_order_survives_rounding_noise_and_ignores_the_given_order():
    # The same images through two loaders give features equal to ~1e-6; the folds (and subsamples)
    # drawn over this order must not be reshuffled by that, or the probe's accuracy jumps.
    import numpy as np

    from zooforge.metrics._validation import canonical_order

    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 64)).astype(np.float32)
    noisy = f + rng.normal(scale=3e-6, size=f.shape).astype(np.float32)
    order, again = canonical_order(f), canonical_order(noisy)
    assert np.mean(order == again) > 0.95
    perm = rng.permutation(400)
    np.testing.assert_array_equal(perm[canonical_order(f[perm])], order)
