"""Malformed catalogues, CSVs, label vectors and arrays, thrown at the loaders and estimators: the
only acceptable failure is a ValueError (ZooforgeError is one) whose message names the input.
Anything else (IndexError, KeyError, TypeError, a numpy or torch error) is a bug."""

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zooforge import metrics as M
from zooforge.errors import CatalogueError, DatasetError
from zooforge.zoo import load_catalogue, load_dataset

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2000), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12), st.lists(st.integers(-2, 300), max_size=4))
FIELDS = ["id", "source", "name", "checkpoint", "num_classes", "input_size", "mean", "std", "crop_pct",
          "interpolation", "pretrained", "modality", "model_args", "tags", "description", "bogus"]


def _toml_value(v) -> str:
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else ("-inf" if v == float("-inf") else repr(v)))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


@SETTINGS
@given(entries=st.lists(st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=8), max_size=4),
       garbage=st.text(max_size=30))
def test_malformed_catalogues_fail_with_a_catalogue_error(tmp_path, entries, garbage):
    text = "".join("[[model]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in e.items()) + "\n" for e in entries)
    for body in (text, garbage, text + garbage):
        path = tmp_path / "zoo.toml"
        path.write_text(body, encoding="utf-8", errors="surrogatepass")
        try:
            load_catalogue(path)
        except CatalogueError as exc:
            assert str(path) in str(exc) or "zoo.toml" in str(exc)


cells = st.text(string.printable.replace("\r", ""), max_size=8)


@SETTINGS
@given(header=st.lists(st.sampled_from(["path", "text", "label", "split", "x", ""]), max_size=4),
       rows=st.lists(st.lists(cells, max_size=5), max_size=8), split=st.sampled_from([None, "train", "val"]))
def test_malformed_csvs_fail_with_a_dataset_error(tmp_path, header, rows, split):
    import csv

    path = tmp_path / "d.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    try:
        ds = load_dataset(path, split)
    except DatasetError as exc:
        assert "d.csv" in str(exc)
        return
    assert len(ds) == len(ds.labels) and ds.num_classes >= 2 and "" not in ds.classes


@SETTINGS
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=5),
       dtype=st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]),
       labels=st.one_of(st.lists(st.integers(0, 3), max_size=8), st.lists(st.floats(allow_nan=True), max_size=8),
                        st.lists(st.text(max_size=3), max_size=8)),
       keys=st.sampled_from([("images", "labels"), ("images",), ("pixels", "labels")]))
def test_malformed_npz_fail_with_a_dataset_error(tmp_path, shape, dtype, labels, keys):
    arrays = {"images": np.zeros(shape, dtype=dtype), "labels": np.asarray(labels)}
    path = tmp_path / "d.npz"
    np.savez(path, **{k: arrays.get(k, arrays["images"]) for k in keys})
    try:
        ds = load_dataset(path)
    except DatasetError as exc:
        assert "d.npz" in str(exc)
        return
    assert ds.items.ndim == 4 and ds.items.shape[-1] == 3 and len(ds.items) == len(ds.labels)


FEATURE_ESTIMATORS = ["logme", "gbc", "hscore", "hscore_shrink", "transrate", "parc", "sfda", "linear_probe"]


@st.composite
def feature_inputs(draw):
    n = draw(st.integers(0, 14))
    d = draw(st.integers(0, 6))
    kind = draw(st.sampled_from(["normal", "constant", "nan", "int", "bool", "1-D", "3-D", "strings"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    f = rng.normal(size=(n, d))
    if kind == "constant":
        f = np.ones((n, d))
    elif kind == "nan" and f.size:
        f.flat[draw(st.integers(0, f.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "int":
        f = (f * 3).astype(np.int64)
    elif kind == "bool":
        f = f > 0
    elif kind == "1-D":
        f = f.ravel()
    elif kind == "3-D":
        f = f[:, :, None]
    elif kind == "strings":
        f = f.astype(str)
    m = draw(st.sampled_from([n, n, max(n - 1, 0), n + 1]))
    labels = draw(st.one_of(
        st.lists(st.integers(0, 3), min_size=m, max_size=m),
        st.lists(st.sampled_from(["a", "b", ""]), min_size=m, max_size=m),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=m, max_size=m)))
    return f, labels


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
@settings(max_examples=40, deadline=None)
@given(inputs=feature_inputs())
def test_estimators_refuse_bad_arrays_with_a_value_error_naming_them(name, inputs):
    features, labels = inputs
    estimator = M.REGISTRY[name]
    try:
        score = estimator.fn(features, labels)
    except ValueError as exc:
        text = str(exc)
        assert "`features`" in text or "`labels`" in text or "class" in text or "sample" in text, text
        return
    assert isinstance(score, float)
