"""Reproducible, order-independent stratified subsampling for the estimators that cannot use all N."""

from __future__ import annotations

import numpy as np

from zooforge.metrics._validation import canonical_order

__all__ = ["stratified_subsample", "stratified_halves"]


def _row_keys(n: int, seed: int) -> np.ndarray:
    """One random key per row: choosing "the lowest keys of each class" then depends neither on the
    order of the classes nor on their names."""
    return np.random.default_rng(seed).random(n)


def stratified_subsample(x: np.ndarray, y: np.ndarray, max_samples: int, seed: int = 0):
    """At most ``max_samples`` rows, each class keeping its share (at least 1 row per class).

    Rows are first put in canonical (content) order, so the result does not depend on the order the
    samples came in.
    """
    order = canonical_order(x)
    x, y = x[order], y[order]
    if x.shape[0] <= max_samples:
        return x, y
    keys = _row_keys(x.shape[0], seed)
    fraction = max_samples / x.shape[0]
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(fraction * idx.size)))
        keep.append(idx[np.argsort(keys[idx], kind="stable")[:take]])
    keep = np.sort(np.concatenate(keep))
    return x[keep], y[keep]


def stratified_halves(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """Canonically ordered rows and a boolean mask selecting half of every class (rounded down)."""
    order = canonical_order(x)
    x, y = x[order], y[order]
    keys = _row_keys(x.shape[0], seed)
    first = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        first[idx[np.argsort(keys[idx], kind="stable")[: idx.size // 2]]] = True
    return x, y, first
