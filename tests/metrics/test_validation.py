"""Every input error has its own message naming the argument, the expectation and what was got."""

import numpy as np
import pytest
import torch

from zooforge import metrics as M

F = np.random.default_rng(0).normal(size=(6, 3))
Y = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("fn", [M.logme, M.hscore, M.gbc, M.transrate, M.sfda, M.parc])
def test_nan_in_features(fn):
    bad = F.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"`features` contains 1 NaN or infinite value\(s\) \(first in row 4\)"):
        fn(bad, Y)


def test_nan_in_torch_features():
    bad = torch.tensor(F)
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"first in row 2"):
        M.logme(bad, Y)


def test_length_mismatch():
    with pytest.raises(ValueError, match=r"`features` has 6 rows but `labels` has 5;"):
        M.logme(F, Y[:5])


def test_one_class():
    with pytest.raises(ValueError, match=r"`labels` has a single class \('cat'\)"):
        M.hscore(F, ["cat"] * 6)


def test_empty_and_zero_dimensional():
    with pytest.raises(ValueError, match=r"`labels` is empty"):
        M.logme(np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match=r"`features` has no columns \(shape \(6, 0\)\)"):
        M.logme(np.zeros((6, 0)), Y)
    with pytest.raises(ValueError, match=r"`features` must be a 2-D array of shape \(N, D\); got shape \(6,\)"):
        M.logme(np.zeros(6), Y)


def test_too_few_per_class_where_needed():
    with pytest.raises(ValueError, match=r"at least 2 samples per class; too few in class 'b' \(1\)"):
        M.linear_probe(F, ["a", "a", "a", "b", "c", "c"])


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match=r"`source_probs` rows must sum to 1 .* row 0 sums to 2"):
        M.leep(np.full((6, 2), 1.0), Y)
    with pytest.raises(ValueError, match=r"negative entries .* not logits"):
        M.leep(np.full((6, 2), -0.5), Y)


def test_source_features_dimension_mismatch():
    with pytest.raises(ValueError, match=r"`source_features` has 4 columns but `features` has 3"):
        M.f_otce(F, Y, np.zeros((6, 4)), Y)


def test_estimator_call_names_missing_inputs():
    with pytest.raises(ValueError, match=r"estimator 'leep' needs source_probs"):
        M.REGISTRY["leep"](Y, {"features": F})


def test_length_errors_name_the_arrays_actually_compared():
    """Issue #19: OTCE compares source_features with source_labels and NCE compares source_preds with
    labels; the message names those, not a generic `labels` or "the features"."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), np.arange(12) % 3
    with pytest.raises(ValueError, match=r"`source_features` has 12 rows but `source_labels` has 11;"):
        M.f_otce(x, y, x, y[:11])
    with pytest.raises(ValueError, match=r"`source_preds` has 11 entries but `labels` has 12;"):
        M.nce(np.arange(11) % 2, y)
