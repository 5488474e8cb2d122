"""Dataset adapters: every dataset argument becomes a ``Dataset`` of (image or text, label).

Accepted specs (CLI and API alike):

* a folder in ImageFolder layout (one sub-folder per class), or split into ``<folder>/<split>/<class>``
  (``train``, ``val``, ``test``, ...): ``split`` picks one, and with no split asked for, ``train`` is
  used (a split layout is never read as classes named after the splits). Hidden files and folders
  (``.DS_Store``, AppleDouble ``._x.jpg``) and OS metadata (``__MACOSX``, ``@eaDir``, ``Thumbs.db``,
  ``System Volume Information``, ``$RECYCLE.BIN``) are skipped;
* a ``.csv`` with a header ``path,label`` (paths relative to the CSV) or ``text,label``; an optional
  ``split`` column is honoured;
* an ``.npz`` with ``images`` (N x H x W [x C] uint8) and ``labels``;
* ``sklearn:digits`` (the 8 x 8 digits scikit-learn ships);
* ``demo:<task>`` for the procedural tasks, with options ``demo:shapes?n=200&seed=1`` (images; the
  text tasks ``demo:topics`` and ``demo:intent`` give sentences; ``demo:size`` and ``demo:tags`` are
  a regression and a multi-label task);
* ``hf:<source>`` a Hugging Face dataset (:mod:`zooforge.zoo.hfdata`) and ``wds:<pattern>`` tar
  shards (:mod:`zooforge.zoo.shards`), both read lazily (:class:`LazyImages`).

Labels say their task (:mod:`zooforge.zoo.targets`: classes, regression targets or tags), or
``task=`` does. Class labels of any type are mapped to 0..C-1 with the original names kept in
``classes``; an empty or missing label (``''``, NaN, ``NA``, ``null``, ``None``) is refused with its
row, never made a class.
Images are decoded lazily and converted to RGB (grayscale replicated, alpha dropped).
``Dataset.summary()`` is the one line the CLI prints before any work: N, classes, the per-class
range and the split.

Image files are checked once, when the dataset is loaded (every file decoded, in a thread pool),
so a corrupt, truncated or zero-byte image is an error that names the files before any model runs,
not a failure of every model in turn; ``skip_bad_files=True`` (``--skip-bad-files``) leaves them out
instead and records them in ``meta["skipped_files"]``.
"""

from __future__ import annotations

import copy
import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zooforge.errors import DatasetError
from zooforge.zoo.cores import available_cores
from zooforge.zoo.targets import MISSING_LABELS, check_task, encode_targets, label_summary, strata

__all__ = ["Dataset", "LazyImages", "available_cores", "decode_image", "encode_targets", "load_dataset",
           "stratified_split_indices", "stratified_fold_indices", "IMAGE_SUFFIXES", "MISSING_LABELS"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
DEFAULT_SPLIT_FRACTION = 0.8   # train share when a dataset has no split of its own


class LazyImages:
    """Images read on demand from a container (an Arrow table, Parquet files, tar shards): a dataset
    too large to decode into memory keeps only this, and subsets are views (``take``), not copies.
    ``rows`` are the samples' positions in the container; subclasses read one (``_read``) and name
    it for messages (``_name``). Instances must pickle cheaply (DataLoader workers get them)."""

    rows: np.ndarray
    checked = False       # True when every image was decoded once while indexing (no second pass)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> np.ndarray:
        row = int(self.rows[i])
        raw = self._read(row)
        return raw if isinstance(raw, np.ndarray) else decode_image(raw, self._name(row))

    def name(self, i: int) -> str:
        return self._name(int(self.rows[i]))

    def take(self, indices) -> "LazyImages":
        view = copy.copy(self)
        view.rows = self.rows[np.asarray(indices, dtype=np.int64)]
        return view

    def _read(self, row: int) -> "bytes | np.ndarray":
        raise NotImplementedError

    def _name(self, row: int) -> str:
        raise NotImplementedError


def decode_image(data: "bytes | str | Path", name: str) -> np.ndarray:
    """An image (encoded bytes, or a file's path) as an RGB uint8 array; one that cannot be decoded
    raises ``DatasetError`` naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read image {name}: {exc}") from None


@dataclass(frozen=True)
class Dataset:
    """Labelled samples. ``items`` is a uint8 array (N, H, W, 3), a list of image paths, a
    :class:`LazyImages`, or a list of strings (text). ``labels`` depend on ``task``
    (:mod:`zooforge.zoo.targets`): class codes into ``classes``, or (N, K) regression targets /
    tag indicators whose columns ``classes`` names."""

    name: str
    modality: str                       # "image" | "text"
    items: Any
    labels: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str
    meta: dict = field(default_factory=dict, compare=False)
    task: str = "classification"        # "classification" | "regression" | "multilabel"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Classes, regression targets or tags: the width of a head for this task."""
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        """True when images are one uint8 array (so they can be transformed a batch at a time)."""
        return isinstance(self.items, np.ndarray)

    def image(self, i: int) -> np.ndarray:
        """Sample i as an RGB uint8 array (H, W, 3); an unreadable file raises ``DatasetError``."""
        if self.in_memory:
            return self.items[i]
        if isinstance(self.items, LazyImages):
            return self.items.read(i)
        return decode_image(self.items[i], self.items[i])

    def item_name(self, i: int) -> str:
        """Where sample i comes from, for messages (a path, a shard member, a table row)."""
        if isinstance(self.items, LazyImages):
            return self.items.name(i)
        return f"{self.name}[{i}]" if self.in_memory or self.modality == "text" else str(self.items[i])

    def text(self, i: int) -> str:
        return self.items[i]

    def strata(self) -> np.ndarray:
        """Groups to stratify over (see :func:`zooforge.zoo.targets.strata`)."""
        return strata(self.labels, self.task)

    def summary(self) -> str:
        """One line: name, N, the labels (classes and their range, targets, tags) and the split."""
        split = self.meta.get("split")
        skipped = self.meta.get("skipped_files")
        return (f"{self.name}: {len(self)} {self.modality}s, {label_summary(self.labels, self.classes, self.task)}"
                + (f", split {split!r}" + (f" of {', '.join(self.meta['splits'])}" if self.meta.get("splits") else "")
                   if split else "")
                + (f"; {len(skipped)} unreadable file(s) skipped: {', '.join(skipped[:3])}"
                   + (" ..." if len(skipped) > 3 else "") if skipped else ""))

    def subset(self, indices: Sequence[int] | np.ndarray, tag: str) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        if self.in_memory:
            items = self.items[idx]
        elif isinstance(self.items, LazyImages):
            items = self.items.take(idx)
        else:
            items = [self.items[i] for i in idx]
        digest = hashlib.sha256(self.fingerprint.encode() + idx.tobytes()).hexdigest()
        return replace(self, name=f"{self.name}[{tag}]", items=items, labels=self.labels[idx],
                       fingerprint=digest)

    def split(self, fraction: float = DEFAULT_SPLIT_FRACTION, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Stratified (train, held-out) split; every class (stratum) keeps at least one sample on each
        side when it has two or more. The rows are :meth:`split_indices`."""
        first_idx, rest = self.split_indices(fraction, seed)
        return self.subset(first_idx, f"split{fraction}:{seed}:a"), self.subset(rest, f"split{fraction}:{seed}:b")

    def split_indices(self, fraction: float = DEFAULT_SPLIT_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The sorted row indices of :meth:`split`'s two sides, for slicing arrays aligned with this dataset."""
        return stratified_split_indices(self.strata(), fraction, seed)

    def folds(self, k: int, seed: int = 0) -> list[tuple["Dataset", "Dataset"]]:
        """Stratified k-fold cross-validation: k (fit, validation) pairs whose validation sides
        partition the dataset. The rows are :meth:`fold_indices`."""
        return [(self.subset(fit, f"fold{f}of{k}:{seed}:fit"), self.subset(val, f"fold{f}of{k}:{seed}:val"))
                for f, (fit, val) in enumerate(self.fold_indices(k, seed))]

    def fold_indices(self, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """The sorted (fit, validation) row indices of :meth:`folds`, for slicing aligned arrays."""
        every = np.arange(len(self))
        return [(np.setdiff1d(every, val), val) for val in stratified_fold_indices(self.strata(), k, seed)]

    def subsample(self, max_per_class: int, seed: int = 0) -> "Dataset":
        """At most ``max_per_class`` samples of each class (for regression and multi-label: of each
        stratum, :meth:`strata`), drawn reproducibly."""
        if max_per_class < 1:
            raise ValueError(f"`max_per_class` must be at least 1; got {max_per_class}.")
        rng = np.random.default_rng(seed)
        groups = self.strata()
        keep = [rng.permutation(np.flatnonzero(groups == c))[:max_per_class] for c in np.unique(groups)]
        return self.subset(np.sort(np.concatenate(keep)), f"max{max_per_class}:{seed}")


def stratified_split_indices(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of a stratified split of ``labels``: about ``fraction`` of each class in the
    first part, and every class with two or more rows keeps at least one on each side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1); got {fraction}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        take = int(round(fraction * idx.size))
        take = min(max(take, 1), idx.size - 1) if idx.size > 1 else idx.size
        first.append(idx[:take])
    first_idx = np.sort(np.concatenate(first)) if first else np.zeros(0, dtype=np.int64)
    return first_idx, np.setdiff1d(np.arange(len(labels)), first_idx)


def stratified_fold_indices(labels, k: int, seed: int = 0) -> list[np.ndarray]:
    """The sorted validation rows of each of ``k`` stratified folds of ``labels``: every row is in
    exactly one fold, and each class is dealt out over the folds as evenly as its size allows (a
    class with fewer than k rows is missing from some folds' validation side, never from all
    folds' fitting side unless it has one row)."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds; got {k}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    start = 0                                   # where the next class starts dealing, so small classes spread
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, part in enumerate(np.array_split(idx, k)):
            folds[(start + j) % k].append(part)
        start += idx.size % k
    return [np.sort(np.concatenate(f)).astype(np.int64) if f else np.zeros(0, np.int64) for f in folds]


def unreadable_images(ds: Dataset, workers: int = 4) -> list[tuple[int, str]]:
    """(index, why) of every image file of ``ds`` that cannot be decoded; [] for in-memory or text data."""
    if ds.modality != "image" or ds.in_memory:
        return []
    if getattr(ds.items, "checked", False):          # decoded once already, while indexing
        return ds.items.found_unreadable()
    from concurrent.futures import ThreadPoolExecutor

    def probe(i: int) -> tuple[int, str] | None:
        try:
            ds.image(i)
        except DatasetError as exc:
            return i, str(exc)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:      # PIL decodes without holding the GIL
        return [r for r in pool.map(probe, range(len(ds))) if r is not None]


def _check_images(ds: Dataset, skip_bad_files: bool) -> Dataset:
    bad = unreadable_images(ds)
    if not bad:
        return ds
    shown = "; ".join(why for _, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    if not skip_bad_files:
        raise DatasetError(f"{ds.name}: {len(bad)} of {len(ds)} image file(s) cannot be read: {shown}. Fix or remove "
                           f"them, or pass --skip-bad-files (Python: skip_bad_files=True) to leave them out.")
    drop = {i for i, _ in bad}
    kept = [i for i in range(len(ds)) if i not in drop]
    if ds.task == "classification":
        missing = sorted(set(range(ds.num_classes)) - set(ds.labels[kept].tolist()))
    elif ds.task == "multilabel":
        missing = np.flatnonzero(ds.labels[kept].sum(axis=0) == 0).tolist()
    else:
        missing = []
    if missing:
        raise DatasetError(f"{ds.name}: every image of {'class(es)' if ds.task == 'classification' else 'tag(s)'} "
                           f"{[ds.classes[c] for c in missing]} is unreadable: {shown}.")
    out = ds.subset(kept, "readable")
    return replace(out, name=ds.name, meta=ds.meta | {"skipped_files": [ds.item_name(i) for i, _ in bad]})


def load_dataset(spec: str | Path, split: str | None = None, *, max_per_class: int | None = None,
                 seed: int = 0, skip_bad_files: bool = False, task: str | None = None) -> Dataset:
    """Load a dataset from any spec listed in the module docstring; optionally subsample per class.
    ``task`` (classification, regression, multilabel) overrides the kind the labels say
    (:mod:`zooforge.zoo.targets`). Image files are decoded once here; unreadable ones are an error
    naming them, or with ``skip_bad_files`` are left out (listed in ``meta["skipped_files"]``)."""
    from zooforge.zoo.readers import from_csv, from_demo, from_folder, from_npz, from_sklearn

    text = str(spec)
    task = check_task(task)
    if text.startswith("demo:"):
        ds = from_demo(text[5:], split, task)
    elif text.startswith("sklearn:"):
        ds = from_sklearn(text[8:], split, task)
    elif text.startswith("hf:"):
        from zooforge.zoo.hfdata import from_hf

        ds = from_hf(text[3:], split, task)
    elif text.startswith("wds:"):
        from zooforge.zoo.shards import from_shards

        ds = from_shards(text[4:], split, task)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise DatasetError(f"dataset {text!r} not found: give a folder, a .csv, a .npz, hf:<dataset>, wds:<shards>, "
                               f"sklearn:digits or demo:<task>.")
        if path.is_dir():
            ds = from_folder(path, split, task)
        elif path.suffix.lower() == ".csv":
            ds = from_csv(path, split, task)
        elif path.suffix.lower() == ".npz":
            ds = from_npz(path, task)
        elif path.suffix.lower() in (".parquet", ".arrow"):
            raise DatasetError(f"{path}: a {path.suffix} file is read as a Hugging Face dataset: give it as hf:{text}.")
        else:
            raise DatasetError(f"{path}: unsupported dataset file type {path.suffix!r}; use a folder, .csv, .npz, "
                               f"hf:<file or folder> or wds:<shards>.")
    if max_per_class is not None:
        ds = ds.subsample(max_per_class, seed)
    return _check_images(ds, skip_bad_files)          # only the images that will be used
