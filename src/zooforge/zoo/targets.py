"""Target kinds: what a dataset's labels are, and how they are encoded, checked, summarised and stratified.

Three kinds, one ``Dataset.labels`` array each:

* ``classification``: int64 codes (N,) into ``classes`` (the class names);
* ``regression``: float64 (N, K), one column per target, ``classes`` the target names;
* ``multilabel``: int8 (N, K) of 0/1, one column per tag, ``classes`` the tag names.

The kind is inferred from the labels unless asked for (``--task``, Python ``task=``): a list of tags
per sample is multi-label, numbers that are not all integers are regression, anything else is classes.
Integer labels are classes unless regression is asked for (a count is a number *and* a class: the
user says which).

Splits and per-class subsampling need groups to stratify over: the classes; for regression, deciles of
the first target; for multi-label, each sample's rarest tag (so rare tags reach both sides of a split).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from zooforge.errors import DatasetError

__all__ = ["TASKS", "check_task", "require_classification", "infer_task", "encode_targets", "encode_regression", "encode_multilabel", "strata",
           "label_summary", "TAG_SEPARATOR", "MISSING_LABELS"]

TASKS = ("classification", "regression", "multilabel")
# Separator of the tags in one text cell (a CSV's label column) of a multi-label dataset.
TAG_SEPARATOR = "|"
REGRESSION_BINS = 10
# Label values that mean "no label" in CSVs and arrays.
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "null", "none"})


def check_task(task: str | None) -> str | None:
    """``task`` itself when it is None or one of TASKS; else a DatasetError listing them."""
    if task is not None and task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; use one of {', '.join(TASKS)} (or leave it out to infer it "
                           f"from the labels).")
    return task


def require_classification(ds, what: str) -> None:
    """Refuse a regression or multi-label dataset for a step that is defined on classes (``what``
    names the step and why), pointing at the commands that take those targets."""
    if ds.task != "classification":
        raise DatasetError(f"{what}; {ds.name} is a {ds.task} target. Rank it with `zooforge rank` and fine-tune "
                           f"with `zooforge tune` (or `select`), which take regression and multi-label targets.")


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    try:
        float(str(value).strip())
    except ValueError:
        return False
    return True


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _where(bad: Sequence[int], rows: Sequence[Any] | None) -> str:
    """The first ten of ``bad`` (indices) as their ``rows`` names, and how many more."""
    where = [rows[i] if rows is not None else i for i in bad]
    return ", ".join(str(w) for w in where[:10]) + (f" and {len(where) - 10} more" if len(where) > 10 else "")


def infer_task(raw: Sequence[Any]) -> str:
    """The target kind ``raw`` (one label per sample, missing ones already refused) says it is."""
    values = list(raw)
    if values and all(_is_list(v) for v in values):
        flat = [x for v in values for x in v]
        if flat and all(_is_number(x) and not isinstance(x, str) for x in flat) \
                and not set(float(x) for x in flat) <= {0.0, 1.0}:
            return "regression"             # a vector of numbers per sample (counts too), not 0/1 flags
        return "multilabel"                 # tags, or 0/1 indicators, per sample
    if values and all(_is_number(v) for v in values) and any(float(v) % 1 for v in values):
        return "regression"
    return "classification"


def encode_regression(raw: Sequence[Any], source: str, names: Sequence[str] | None = None,
                      rows: Sequence[int] | None = None, row_word: str = "sample") -> tuple[np.ndarray, tuple[str, ...]]:
    """float64 (N, K) targets and their names from one number (or a list of K numbers) per sample;
    a value that is not a finite number is an error naming its rows."""
    values = list(raw)
    width = len(values[0]) if values and _is_list(values[0]) else None
    bad = []
    out = np.empty((len(values), width or 1), dtype=np.float64)
    for i, v in enumerate(values):
        cells = list(v) if _is_list(v) else [v]
        if _is_list(v) != (width is not None) or len(cells) != (width or 1):
            bad.append(i)
            continue
        try:
            out[i] = [float(str(c).strip()) if not isinstance(c, (int, float, np.number)) else float(c) for c in cells]
        except ValueError:
            bad.append(i)
            continue
        if not np.isfinite(out[i]).all():
            bad.append(i)
    if bad:
        raise DatasetError(f"{source}: {len(bad)} {row_word}(s) have a regression target that is not a finite number"
                           f"{f' (or not {width} of them)' if width else ''} ({row_word} {_where(bad, rows)}); fix or "
                           f"remove those rows, or choose another task with --task.")
    if len(values) < 2:
        raise DatasetError(f"{source}: a regression task needs at least 2 samples; got {len(values)}.")
    constant = [k for k in range(out.shape[1]) if np.ptp(out[:, k]) == 0]
    k_names = tuple(names) if names else (("target",) if out.shape[1] == 1 else tuple(f"target{k}" for k in range(out.shape[1])))
    if len(k_names) != out.shape[1]:
        raise DatasetError(f"{source}: {out.shape[1]} regression target(s) per sample but {len(k_names)} name(s).")
    if constant:
        raise DatasetError(f"{source}: regression target(s) {[k_names[k] for k in constant]} have the same value for "
                           f"every sample; there is nothing to predict.")
    return out, k_names


def encode_multilabel(raw: Sequence[Any], source: str, names: Sequence[str] | None = None,
                      rows: Sequence[int] | None = None, row_word: str = "sample") -> tuple[np.ndarray, tuple[str, ...]]:
    """int8 (N, K) tag indicators and the tag names from a list of tags per sample (an empty list is
    a sample without tags), a ``|``-separated string of tags, or, without ``names``, a 0/1 vector of
    length K (tags tag0 .. tagK-1). With ``names`` the numbers in a list are codes into them (a Hub
    ``Sequence(ClassLabel)``). Tag names sort as the classes of a classification task do."""
    values = list(raw)
    as_lists = [list(v) if _is_list(v) else [t for t in str(v).split(TAG_SEPARATOR) if t.strip()] for v in values]
    flat = [x for v in as_lists for x in v]
    # a 0/1 vector per sample (an N x K matrix); with ``names`` (a list of ClassLabel) they are codes
    indicator = (names is None and len({len(v) for v in as_lists}) == 1 and len(as_lists[0]) > 1
                 and all(_is_number(x) for x in flat) and set(float(x) for x in flat) <= {0.0, 1.0}
                 and all(_is_list(v) for v in values))
    if indicator:
        matrix = np.asarray([[int(float(x)) for x in v] for v in as_lists], dtype=np.int8)
        tags = tuple(f"tag{k}" for k in range(matrix.shape[1]))
    else:
        if names is not None:               # codes into the given names (a Hub Sequence(ClassLabel))
            as_lists = [[names[int(x)] if _is_number(x) and not isinstance(x, str) else x for x in v] for v in as_lists]
            flat = [x for v in as_lists for x in v]
        found = sorted({str(x).strip() for x in flat})
        if names is not None:
            tags = tuple(str(n) for n in names) + tuple(t for t in found if t not in set(map(str, names)))
        elif found and all(t.lstrip("-").isdigit() for t in found):
            tags = tuple(sorted(found, key=int))
        else:
            tags = tuple(found)
        index = {t: k for k, t in enumerate(tags)}
        matrix = np.zeros((len(values), len(tags)), dtype=np.int8)
        for i, v in enumerate(as_lists):
            for x in v:
                matrix[i, index[str(x).strip()]] = 1
    if matrix.shape[1] < 1:
        raise DatasetError(f"{source}: no sample has a tag; a multi-label task needs at least one tag.")
    counts = matrix.sum(axis=0)
    never = [tags[k] for k in range(len(tags)) if counts[k] == 0]
    always = [tags[k] for k in range(len(tags)) if counts[k] == len(values)]
    if never or always:
        raise DatasetError(f"{source}: tag(s) {never + always} are on {'no' if never else 'every'} sample; a tag "
                           f"needs both positive and negative samples (remove it, or add samples).")
    return matrix, tags


def strata(labels: np.ndarray, task: str) -> np.ndarray:
    """Groups (int codes, one per sample) to stratify splits and subsamples over: the classes; the
    deciles of the first regression target; each sample's rarest tag (K: no tag)."""
    labels = np.asarray(labels)
    if task == "classification":
        return labels.astype(np.int64, copy=False)
    if task == "regression":
        y = labels[:, 0] if labels.ndim == 2 else labels
        bins = max(1, min(REGRESSION_BINS, len(y) // 2))
        edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
        return np.searchsorted(edges, y, side="right").astype(np.int64)
    counts = labels.sum(axis=0)
    rarity = np.where(labels > 0, counts[None, :], np.iinfo(np.int64).max)
    group = rarity.argmin(axis=1)
    group[labels.sum(axis=1) == 0] = labels.shape[1]
    return group.astype(np.int64)


def label_summary(labels: np.ndarray, classes: Sequence[str], task: str) -> str:
    """The label part of ``Dataset.summary()``."""
    if task == "classification":
        counts = np.bincount(labels, minlength=len(classes))
        return f"{len(classes)} classes ({int(counts.min())}-{int(counts.max())} per class)"
    if task == "regression":
        parts = [f"{name} {labels[:, k].min():.4g}..{labels[:, k].max():.4g}" for k, name in enumerate(classes[:3])]
        more = f", +{len(classes) - 3} more" if len(classes) > 3 else ""
        return f"regression on {len(classes)} target{'s' if len(classes) > 1 else ''} ({', '.join(parts)}{more})"
    counts = labels.sum(axis=0)
    return (f"multi-label, {len(classes)} tags ({int(counts.min())}-{int(counts.max())} positives per tag, "
            f"{labels.sum(axis=1).mean():.2f} tags per sample)")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return True
    return str(value).strip().lower() in MISSING_LABELS


def _encode_labels(raw: Sequence[Any], source: str, rows: Sequence[int] | None = None,
                   row_word: str = "sample") -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes 0..C-1 and class names of labels that are all present (``encode_targets`` refuses
    missing ones first)."""
    values = np.asarray([str(v).strip() for v in raw], dtype=str)
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{source}: only one class ({str(classes[0])!r}); a classification task needs at least 2.")
    # numeric class names sort numerically ("2" < "10")
    if all(c.lstrip("-").isdigit() for c in classes):
        order = np.argsort([int(c) for c in classes])
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        classes, codes = classes[order], remap[codes]
    return codes.astype(np.int64), tuple(str(c) for c in classes)


def encode_targets(raw: Sequence[Any], source: str, task: str | None = None, *, rows: Sequence[int] | None = None,
                   row_word: str = "sample", names: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...], str]:
    """(labels, classes, task) from one raw label per sample, for the asked ``task`` or the one the
    labels say (:func:`zooforge.zoo.targets.infer_task`). A missing label is an error naming its rows
    for every kind (a multi-label sample without tags is an empty list, not a missing label).
    ``names``: the class names of integer codes (a Hugging Face ``ClassLabel``), the target names
    of regression columns, or the tag names of indicator vectors."""
    task = check_task(task)
    if len(raw) == 0:
        raise DatasetError(f"{source}: the dataset is empty (no samples found).")
    missing = [i for i, v in enumerate(raw) if not _is_list(v) and _is_missing(v)]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} {row_word}(s) have an empty or missing label ({row_word} "
                           f"{_where(missing, rows)}); give every row a label or remove those rows.")
    task = task or infer_task(raw)
    if task == "regression":
        labels, classes = encode_regression(raw, source, names if names and not _is_codes(raw) else None, rows, row_word)
        return labels, classes, task
    if task == "multilabel":
        labels, classes = encode_multilabel(raw, source, names, rows, row_word)
        return labels, classes, task
    if any(_is_list(v) for v in raw):
        raise DatasetError(f"{source}: labels are lists (several per sample), which a classification task cannot "
                           f"take; use --task multilabel (tags) or --task regression (numbers).")
    if names is not None and _is_codes(raw):        # codes into named classes: keep the names' order
        codes = np.asarray(raw, dtype=np.int64)
        outside = np.flatnonzero((codes < 0) | (codes >= len(names)))
        if outside.size:
            raise DatasetError(f"{source}: {outside.size} {row_word}(s) have a class index outside the {len(names)} "
                               f"class names ({row_word} {_where(outside.tolist(), rows)}).")
        present = np.unique(codes)                  # classes this data has, in the names' order
        if present.size < 2:
            raise DatasetError(f"{source}: only one class ({names[present[0]]!r}); a classification task needs "
                               f"at least 2.")
        return np.searchsorted(present, codes).astype(np.int64), tuple(str(names[c]) for c in present), task
    labels, classes = _encode_labels(raw, source, rows, row_word)
    return labels, classes, task


def _is_codes(raw: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw)
