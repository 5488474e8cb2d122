"""Target kinds: inference from the labels, encoding, refusals, strata, and the demo's own tasks."""

import numpy as np
import pytest

from zooforge.errors import DatasetError
from zooforge.zoo import load_dataset
from zooforge.zoo.data import encode_targets
from zooforge.zoo.targets import encode_multilabel, encode_regression, infer_task, strata


def _csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_the_labels_say_the_task():
    assert infer_task(["cat", "dog"]) == "classification"
    assert infer_task([1, 2, 3]) == "classification"                 # integers are classes unless asked
    assert infer_task(["1", "2.5"]) == "regression"
    assert infer_task([[0.5, 1.0], [2.0, 3.0]]) == "regression"
    assert infer_task([["a"], ["a", "b"], []]) == "multilabel"
    assert infer_task([[0, 1], [1, 1]]) == "multilabel"
    assert infer_task([[3, 0], [1, 7]]) == "regression"            # counts per sample are numbers, not tags
    assert infer_task([["3"], ["1", "7"]]) == "multilabel"         # strings are tag names


def test_csv_float_labels_are_regression_and_tags_are_multilabel(tmp_path):
    reg = load_dataset(_csv(tmp_path / "r.csv", [f"sentence {i},{i * 0.5 + 0.25}" for i in range(6)]))
    assert reg.task == "regression" and reg.labels.shape == (6, 1) and reg.labels.dtype == np.float64
    assert "regression on 1 target" in reg.summary()
    tags = load_dataset(_csv(tmp_path / "m.csv", ["a,x|y", "b,y", "c,x|z", "d,z"]), task="multilabel")
    assert tags.classes == ("x", "y", "z") and tags.labels.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]]
    # the same rows read as classes keep the old behaviour and fingerprint
    classes = load_dataset(_csv(tmp_path / "c.csv", ["a,1", "b,2", "c,1"]))
    assert classes.task == "classification"
    assert load_dataset(tmp_path / "c.csv", task="regression").fingerprint != classes.fingerprint


def test_npz_matrices_are_targets_or_tags(tmp_path):
    images = np.zeros((6, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "tags.npz", images=images, labels=np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1],
                                                                      [1, 1, 0], [0, 1, 0], [0, 0, 1]]))
    tags = load_dataset(tmp_path / "tags.npz")
    assert tags.task == "multilabel" and tags.classes == ("tag0", "tag1", "tag2")
    np.savez(tmp_path / "reg.npz", images=images, labels=np.random.default_rng(0).normal(size=(6, 2)))
    reg = load_dataset(tmp_path / "reg.npz")
    assert reg.task == "regression" and reg.classes == ("target0", "target1")


def test_bad_targets_are_named():
    with pytest.raises(DatasetError, match=r"line\(s\) have a regression target that is not a finite number.*line 3"):
        encode_regression(["1.5", "2", "lots", "4"], "x.csv", rows=[1, 2, 3, 4], row_word="line")
    with pytest.raises(DatasetError, match="same value for every sample"):
        encode_regression([2.0, 2.0, 2.0], "x")
    with pytest.raises(DatasetError, match=r"tag\(s\) \['a'\] are on every sample"):
        encode_multilabel([["a"], ["a", "b"], ["a"]], "x")
    with pytest.raises(DatasetError, match="unknown task 'ranking'"):
        load_dataset("demo:shapes?n=2", task="ranking")
    with pytest.raises(DatasetError, match=r"1 row\(s\) have an empty or missing label \(row 1\)"):
        encode_targets(["1.5", "", "2"], "x", "regression", row_word="row")


def test_strata_spread_every_kind_over_both_sides_of_a_split():
    y = np.random.default_rng(0).uniform(0, 100, size=(200, 1))
    groups = strata(y, "regression")
    assert len(np.unique(groups)) == 10 and np.bincount(groups).min() >= 19      # deciles
    tags = np.zeros((30, 3), dtype=np.int8)
    tags[:, 0] = 1
    tags[:3, 2] = 1                                                             # a rare tag
    assert (strata(tags, "multilabel")[:3] == 2).all()                         # its samples group by it
    ds = load_dataset("demo:tags?n=200")
    train, test = ds.split(0.8, seed=0)
    assert train.labels.sum(0).min() > 0 and test.labels.sum(0).min() > 0


def test_demo_regression_and_multilabel_tasks():
    size = load_dataset("demo:size?n=300")
    assert size.task == "regression" and size.classes == ("radius",)
    assert 3.0 <= size.labels.min() and size.labels.max() <= 13.0
    # a bigger shape covers more pixels that differ from the background
    covered = (np.abs(size.items.astype(int) - size.items[:, :1, :1].astype(int)).max(-1) > 60).sum((1, 2))
    assert np.corrcoef(covered, size.labels[:, 0])[0, 1] > 0.8
    tags = load_dataset("demo:tags?n=120")
    assert tags.task == "multilabel" and tags.classes == ("circle", "square", "triangle", "cross")
    assert 1 <= tags.labels.sum(1).min() and tags.labels.sum(1).max() <= 3
    assert load_dataset("demo:size?n=100").fingerprint == load_dataset("demo:size?n=100").fingerprint
    assert load_dataset("demo:size?n=50").labels.tolist() == size.labels[:50].tolist()    # n extends
    # a class task of numbers read as a number
    count = load_dataset("demo:counting?n=4", task="regression")
    assert sorted(set(count.labels[:, 0])) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert load_dataset("demo:size?n=100", max_per_class=3).labels.shape == (30, 1)   # 3 a decile


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_partition_the_data_and_deal_each_class_out_evenly(k):
    from zooforge.zoo.data import stratified_fold_indices

    y = np.array([0] * 23 + [1] * 7 + [2] * 2 + [3] * 1)
    folds = stratified_fold_indices(y, k, seed=3)
    assert len(folds) == k
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))          # each row in one fold
    counts = np.array([np.bincount(y[f], minlength=4) for f in folds])
    assert (counts.max(0) - counts.min(0) <= 1).all()                            # even within each class
    assert np.abs(counts.sum(1) - len(y) / k).max() < 1.5                       # and the folds' sizes too
    ds = load_dataset("demo:shapes?n=10")
    for fit, val in ds.folds(k, seed=1):
        assert len(fit) + len(val) == len(ds)
        assert set(fit.fingerprint for fit, _ in ds.folds(k, 1)).__len__() == k
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_fold_indices(y, 1)
