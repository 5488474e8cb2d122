"""The one input gate for every estimator (after scikit-learn's ``check_array``).

Each check takes numpy arrays, torch tensors or nested lists, names the argument in its error, says
what was expected and what was got, and returns float64 numpy arrays (or, with ``keep_torch=True``,
tensors on their own device in the working dtype, for the estimators that run on GPU). Every check
takes its arguments in one order: ``(value, name, *, n_samples=, against=, ...)``, where ``name`` is the
argument the caller was given and ``against`` the one whose length ``n_samples`` is.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

__all__ = [
    "check_features",
    "check_labels",
    "check_probs",
    "check_categorical",
    "canonical_order",
    "working_dtype",
]

# Rows of ``source_probs`` must sum to 1 within this tolerance: loose enough for float16/bfloat16
# softmax outputs saved to disk, tight enough to catch logits passed by mistake.
PROBS_SUM_ATOL = 1e-2


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def working_dtype(device: Any):
    """float64 everywhere except on devices without float64 support (Apple MPS): float32 there."""
    import torch

    return torch.float32 if getattr(device, "type", str(device)) == "mps" else torch.float64


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"`{name}` must be an array-like; could not convert it: {exc}") from None


def _check_2d_float(arr: Any, name: str, what: str) -> None:
    shape = tuple(arr.shape)
    if len(shape) != 2:
        raise ValueError(f"`{name}` must be a 2-D array of shape (N, {what}); got shape {shape}.")
    if shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {shape}): an estimator needs at least one sample.")
    if shape[1] == 0:
        raise ValueError(f"`{name}` has no columns (shape {shape}): {what} must be at least 1.")


def _report_nonfinite(count: int, first_row: int, name: str) -> ValueError:
    return ValueError(
        f"`{name}` contains {count} NaN or infinite value(s) (first in row {first_row}); "
        "remove or impute them before scoring."
    )


def check_features(features: Any, name: str = "features", *, n_samples: int | None = None,
                   keep_torch: bool = False, against: str = "`labels`"):
    """Validate an (N, D) real matrix; return it as float64 (or a tensor in the working dtype).

    ``n_samples`` (when given) must equal N, the length of ``against`` (named in the error).
    NaN/inf, empty input and D = 0 are rejected.
    """
    if keep_torch and _is_torch(features):
        import torch

        t = features.detach()
        _check_2d_float(t, name, "D")
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8)):
            raise ValueError(f"`{name}` must hold real numbers; got dtype {t.dtype}.")
        t = t.to(working_dtype(t.device))
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            rows = torch.nonzero(bad.any(dim=1)).flatten()
            raise _report_nonfinite(int(bad.sum()), int(rows[0]), name)
        _check_length(t.shape[0], n_samples, name, against)
        return t
    arr = _to_numpy(features, name)
    _check_2d_float(arr, name, "D")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must hold real numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise _report_nonfinite(int((~finite).sum()), int(rows[0]), name)
    _check_length(arr.shape[0], n_samples, name, against)
    return arr


def _check_length(n: int, n_samples: int | None, name: str, against: str) -> None:
    if n_samples is not None and n != n_samples:
        raise ValueError(
            f"`{name}` has {n} rows but {against} has {n_samples}; "
            "they must match (one row per labelled sample)."
        )


def check_categorical(values: Any, name: str, *, n_samples: int | None = None, against: str = "`labels`"):
    """Validate a 1-D vector of category ids of any hashable type; return (codes 0..K-1, K).
    ``n_samples`` (when given) is the length of ``against``, named in the error."""
    arr = _to_numpy(values, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D vector of N class ids; got shape {tuple(arr.shape)}.")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: an estimator needs at least one sample.")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(
            f"`{name}` has {arr.shape[0]} entries but {against} has {n_samples}; "
            "they must match (one entry per sample)."
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains NaN or infinite class ids.")
    if arr.dtype == object:
        arr = arr.astype(str)
    classes, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64), len(classes)


def check_labels(labels: Any, name: str = "labels", *, n_samples: int | None = None,
                 min_per_class: int = 1, against: str = "`features`"):
    """Validate target labels (any integer or string type); return (codes 0..C-1, C).

    Requires at least two classes and ``min_per_class`` samples in every class; the error names the
    offending classes by their original values.
    """
    arr = _to_numpy(labels, name)
    codes, n_classes = check_categorical(arr, name, n_samples=n_samples, against=against)
    classes = np.unique(arr.astype(str) if arr.dtype == object else arr).tolist()
    if n_classes < 2:
        raise ValueError(
            f"`{name}` has a single class ({classes[0]!r}); transferability needs at least 2 classes."
        )
    counts = np.bincount(codes, minlength=n_classes)
    small = np.flatnonzero(counts < min_per_class)
    if small.size:
        shown = ", ".join(f"{classes[i]!r} ({counts[i]})" for i in small[:5])
        more = f" and {small.size - 5} more" if small.size > 5 else ""
        raise ValueError(
            f"`{name}`: this estimator needs at least {min_per_class} samples per class; "
            f"too few in class {shown}{more}. Drop those classes or add samples."
        )
    return codes, n_classes


def check_probs(probs: Any, name: str = "source_probs", *, n_samples: int | None = None, against: str = "`labels`"):
    """Validate an (N, Z) matrix of probabilities whose rows sum to 1; return float64."""
    arr = check_features(probs, name, n_samples=n_samples, against=against)
    if (arr < 0).any():
        raise ValueError(
            f"`{name}` has negative entries (min {arr.min():.3g}); pass probabilities, e.g. "
            "softmax(logits), not logits."
        )
    sums = arr.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROBS_SUM_ATOL:
        raise ValueError(
            f"`{name}` rows must sum to 1 (tolerance {PROBS_SUM_ATOL}); row {worst} sums to "
            f"{sums[worst]:.4g}. Pass softmax(logits), not logits."
        )
    return arr / sums[:, None]


def canonical_order(features: np.ndarray) -> np.ndarray:
    """A permutation that sorts rows by content, so seeded random steps (subsampling, k-fold splits,
    mixture initialisation) do not depend on the order in which samples were given."""
    rows = np.ascontiguousarray(features, dtype=np.float64)
    # Sorted by the projection on a fixed direction, so that rounding noise in the features (the
    # same images through another loader differ by ~1e-6) moves a sample at most past its
    # neighbours; sorting by a hash of the exact bytes reshuffled every fold on such noise and moved
    # the linear probe's accuracy by 2 points. crc32 (stable across processes, unlike hash()) only
    # breaks exact ties of the projection.
    direction = np.random.default_rng([rows.shape[1], 7]).standard_normal(rows.shape[1])
    projection = (rows * direction).sum(axis=1)          # row by row: independent of the other rows
    digests = np.fromiter((zlib.crc32(row.tobytes()) for row in rows), dtype=np.int64,
                          count=rows.shape[0])
    return np.lexsort((digests, projection))
