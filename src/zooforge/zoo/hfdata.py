"""Hugging Face datasets as zooforge datasets: ``hf:<source>[?options]``.

``<source>`` is a ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict`` of splits), a Parquet
or Arrow file, a folder of Parquet files (the Hub's ``data/train-00000-of-00002.parquet`` layout:
the split is read from the file names), or a Hub dataset id (its Parquet files fetched into the
Hugging Face cache and read in place at the asked commit, see ``zooforge.zoo.hubdata``; offline,
the same message as for models says how to get it here).

Options: ``split`` (default ``train``; ``--split`` says the same), ``image`` / ``text`` (the input
column; default: the column typed ``Image``, else one named image/img, else a text column), ``label``
(default: label, labels, fine_label, target, ... or the one ``ClassLabel`` column), ``task``
(classification, regression, multilabel; default from the label column's type: ``ClassLabel`` or
strings are classes, floats are regression, a list of classes is multi-label), ``config`` (a Hub
dataset's configuration) and ``revision`` (a Hub dataset's commit, branch or tag: pin the commit sha
for an audit that reads the same data next year). ``ClassLabel`` names become the class (or tag)
names.

Images are never decoded into memory as a whole: the image column stays in its memory-mapped Arrow
table, or in the Parquet files (read a row group at a time), and each image is decoded when a batch
needs it. Text columns, and the labels, are read into memory.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from zooforge.errors import DatasetError
from zooforge.zoo.data import Dataset, LazyImages, encode_targets
from zooforge.zoo.targets import infer_task

__all__ = ["from_hf", "HF_OPTIONS"]

HF_OPTIONS = ("split", "image", "text", "label", "task", "config", "revision")
LABEL_NAMES = ("label", "labels", "fine_label", "coarse_label", "target", "targets", "y", "class", "tags")
IMAGE_NAMES = ("image", "img", "picture", "photo")
TEXT_NAMES = ("text", "sentence", "content", "review", "document", "question")
_SPLIT_IN_NAME = re.compile(r"(?:^|[/_.-])(train|test|validation|valid|val|dev)(?=[/_.-]|$)")


def _image_value(value: Any, name: str) -> "bytes | np.ndarray":
    """A cell of an image column as encoded bytes (or an array, for array-typed columns)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            try:
                return Path(value["path"]).read_bytes()
            except OSError as exc:
                raise DatasetError(f"cannot read image {name} ({value['path']}): {exc}") from None
        raise DatasetError(f"image {name} has neither bytes nor a path.")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if value is None:
        raise DatasetError(f"image {name} is empty (null).")
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise DatasetError(f"image {name}: an array column must hold uint8 H x W [x C] images; got {array.dtype} "
                           f"{array.shape}.")
    return np.repeat(array[..., None], 3, -1) if array.ndim == 2 else np.ascontiguousarray(array[..., :3])


class ArrowImages(LazyImages):
    """The image column of a memory-mapped ``datasets.Dataset``; the column is looked up once per
    process (pickling the dataset pickles its file paths, not its bytes)."""

    def __init__(self, table: Any, column: str, source: str):
        self.table, self.column, self.source = table, column, source
        self.rows = np.arange(len(table), dtype=np.int64)
        self._cells = None

    def __getstate__(self):
        return self.__dict__ | {"_cells": None}

    def _read(self, row: int):
        if self._cells is None:
            self._cells = self.table.data.column(self.column)
        return _image_value(self._cells[row].as_py(), self._name(row))

    def _name(self, row: int) -> str:
        return f"{self.source} row {row}"


class ParquetImages(LazyImages):
    """The image column of Parquet files, read a row group at a time (the last one is kept)."""

    def __init__(self, files: list[str], column: str, source: str):
        import pyarrow.parquet as pq

        self.files, self.column, self.source = files, column, source
        starts, self._groups = [], []             # first row of each (file, row group), and which it is
        total = 0
        for f, file in enumerate(files):
            meta = pq.ParquetFile(file).metadata
            for g in range(meta.num_row_groups):
                starts.append(total)
                self._groups.append((f, g))
                total += meta.row_group(g).num_rows
        self._starts = np.asarray(starts, dtype=np.int64)
        self.rows = np.arange(total, dtype=np.int64)
        self._cached: tuple[int, Any] | None = None

    def __getstate__(self):
        return self.__dict__ | {"_cached": None}

    def _read(self, row: int):
        import pyarrow.parquet as pq

        g = int(np.searchsorted(self._starts, row, side="right") - 1)
        cached = self._cached                     # one read of the shared slot: threads may replace it
        if cached is None or cached[0] != g:
            f, group = self._groups[g]
            cached = (g, pq.ParquetFile(self.files[f]).read_row_group(group, columns=[self.column]).column(0))
            self._cached = cached
        return _image_value(cached[1][row - int(self._starts[g])].as_py(), self._name(row))

    def _name(self, row: int) -> str:
        return f"{self.source} row {row}"


def _parse(spec: str, split: str | None) -> tuple[str, dict]:
    source, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(HF_OPTIONS))
    if unknown:
        raise DatasetError(f"hf:{source}: unknown option(s) {unknown}; valid: {', '.join(HF_OPTIONS)}.")
    if split is not None and options.get("split") not in (None, split):
        raise DatasetError(f"hf:{source}: split {options['split']!r} in the spec and {split!r} from --split disagree; "
                           f"give one.")
    if split is not None:
        options["split"] = split
    if not source:
        raise DatasetError("hf: needs a source: hf:<save_to_disk folder | .parquet | .arrow | folder of parquet | hub id>.")
    return source, options


def _split_files(files: list[Path], root: Path, split: str | None, source: str) -> tuple[list[Path], dict]:
    """The files of ``split`` when the file names say their split (train-00000-of-00002.parquet)."""
    named = {}
    for file in files:
        found = _SPLIT_IN_NAME.findall(str(file.relative_to(root)) if file.is_relative_to(root) else file.name)
        named.setdefault(found[-1] if found else None, []).append(file)
    if set(named) == {None}:
        if split not in (None, "train"):
            raise DatasetError(f"hf:{source}: split {split!r} was asked for but the file names say no split; leave "
                               f"it out.")
        return files, {}
    names = sorted(k for k in named if k is not None)
    chosen = split or ("train" if "train" in named else None)
    if chosen not in named:
        raise DatasetError(f"hf:{source}: has splits {', '.join(names)} and "
                           f"{f'not {split!r}' if split else 'no train split'}; choose one with --split or ?split=.")
    return named[chosen], {"split": chosen, "splits": names}


def _open(source: str, options: dict):
    """(the datasets.Dataset, or None for Parquet files; the Parquet files, or None; features; meta)."""
    import datasets

    path = Path(source).expanduser()
    split = options.get("split")
    if options.get("revision") and path.exists():
        raise DatasetError(f"hf:{source}: ?revision= pins a Hub dataset's commit; {path} is a local path, which has "
                           f"none. Leave it out.")
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        meta: dict = {}
        if isinstance(loaded, datasets.DatasetDict):
            names = list(loaded)
            chosen = split or ("train" if "train" in loaded else None)
            if chosen not in loaded:
                raise DatasetError(f"hf:{source}: has splits {', '.join(names)} and "
                                   f"{f'not {split!r}' if split else 'no train split'}; choose one with --split or "
                                   f"?split=.")
            loaded, meta = loaded[chosen], {"split": chosen, "splits": names}
        elif split not in (None, "train"):
            raise DatasetError(f"hf:{source}: one dataset without splits, so split {split!r} cannot be chosen; leave it out.")
        return loaded, None, loaded.features, meta
    if path.is_file() and path.suffix == ".arrow":
        loaded = datasets.Dataset.from_file(str(path))
        return loaded, None, loaded.features, {}
    if path.suffix == ".parquet" and path.is_file() or path.is_dir():
        return _parquet(path, split, source)
    if path.exists():
        raise DatasetError(f"hf:{source}: not a save_to_disk folder, a .parquet or .arrow file, or a folder of them.")
    from zooforge.zoo.hubdata import hub_snapshot

    snapshot = hub_snapshot(source, options)
    if snapshot is not None:                       # the repo's Parquet files, read in place at that commit
        folder, sha = snapshot
        loaded, files, features, meta = _parquet(folder, split, source)
        return loaded, files, features, meta | {"revision": sha}
    loaded = _from_hub(source, options)
    return loaded, None, loaded.features, {"split": split or "train"}


def _parquet(path: Path, split: str | None, source: str):
    """A Parquet file, or a folder of them whose file names may say their split."""
    import datasets
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise DatasetError(f"hf:{source}: a folder with neither a save_to_disk dataset (state.json, "
                           f"dataset_dict.json) nor .parquet files.")
    files, meta = _split_files(files, path if path.is_dir() else path.parent, split, source)
    features = datasets.Features.from_arrow_schema(pq.ParquetFile(files[0]).schema_arrow)
    return None, [str(f) for f in files], features, meta


def _from_hub(source: str, options: dict):
    """A Hub dataset without Parquet files, through ``datasets.load_dataset`` (which prepares it into
    its Arrow cache; offline, it serves the latest cached version whatever the revision)."""
    import datasets

    from zooforge.zoo.hubdata import hub_dataset_error

    try:
        return datasets.load_dataset(source, options.get("config"), split=options.get("split") or "train",
                                     revision=options.get("revision"))
    except Exception as exc:      # noqa: BLE001 - datasets raises many kinds for "cannot get it"
        raise hub_dataset_error(source, exc) from None


def _pick(features, options: dict, key: str, names: tuple[str, ...], want) -> str | None:
    if options.get(key):
        if options[key] not in features:
            raise DatasetError(f"no column {options[key]!r} (asked for as ?{key}=); the columns are "
                               f"{', '.join(features)}.")
        return options[key]
    typed = [c for c, f in features.items() if want(f)]
    named = [c for c in names if c in features]
    return (typed or named or [None])[0]


def _columns(features, options: dict, source: str) -> tuple[str, str, str]:
    """(input column, its modality, label column)."""
    import datasets

    label = _pick(features, options, "label", LABEL_NAMES, lambda f: False)
    if label is None:
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)
                  or isinstance(f, (datasets.Sequence, datasets.List)) and isinstance(f.feature, datasets.ClassLabel)]
        label = labels[0] if len(labels) == 1 else None
    if label is None:
        raise DatasetError(f"hf:{source}: no label column found among {', '.join(features)}; name it with "
                           f"?label=<column>.")
    rest = {c: f for c, f in features.items() if c != label}
    is_image = lambda f: isinstance(f, datasets.Image)     # noqa: E731
    image = None if options.get("text") else _pick(rest, options, "image", IMAGE_NAMES, is_image)
    if image is not None:
        return image, "image", label
    is_text = lambda f: isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")   # noqa: E731
    text = _pick(rest, options, "text", TEXT_NAMES, lambda f: False) or next(
        (c for c, f in rest.items() if is_text(f)), None)
    if text is None:
        raise DatasetError(f"hf:{source}: no image or text column found among {', '.join(rest)}; name it with "
                           f"?image=<column> or ?text=<column>.")
    return text, "text", label


def _label_kind(feature) -> tuple[str | None, tuple[str, ...] | None]:
    """(the task a label column's type says, ClassLabel names) for a datasets feature."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "classification", tuple(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return "multilabel", tuple(inner.names)
    dtype = getattr(feature, "dtype", None) or getattr(inner, "dtype", None)
    if dtype in ("float16", "float32", "float64"):
        return "regression", None
    return None, None


def _hash_files(files: list[str], extra: str) -> str:
    """Content hash of the files a dataset is read from (streamed, 1 MiB at a time), and of ``extra``."""
    h = hashlib.sha256(extra.encode())
    for file in files:
        digest = hashlib.blake2b(digest_size=16)
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        h.update(f"{Path(file).name}\0".encode() + digest.digest())
    return h.hexdigest()


def from_hf(spec: str, split: str | None = None, task: str | None = None) -> Dataset:
    """The Dataset for ``hf:<spec>`` (see the module docstring); ``task`` as in ``load_dataset``."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise DatasetError("hf: datasets need the `datasets` package: pip install 'zooforge[data]'.") from None
    source, options = _parse(spec, split)
    if task is not None and options.get("task") not in (None, task):
        raise DatasetError(f"hf:{source}: task {options['task']!r} in the spec and {task!r} from --task disagree.")
    table, parquet, features, meta = _open(source, options)
    column, modality, label = _columns(features, options, source)
    if table is not None and getattr(table, "_indices", None) is not None:
        table = table.flatten_indices()

    def values(col: str) -> list:
        """A whole column as Python values (labels, text: what is read into memory)."""
        if parquet is not None:
            import pyarrow.parquet as pq

            return pq.read_table(parquet, columns=[col]).column(col).to_pylist()
        return table.data.column(col).to_pylist()

    raw = values(label)
    files = parquet if parquet is not None else [c["filename"] for c in table.cache_files]
    kind, names = _label_kind(features[label])
    kind = task or options.get("task") or kind or infer_task(raw)
    if kind == "regression" and names is None and raw and not isinstance(raw[0], list):
        names = (label,)                   # one target, named after its column
    labels, classes, kind = encode_targets(raw, f"hf:{source}", kind, names=names, row_word="row")
    name = f"hf:{source}" + (f"[{meta['split']}]" if meta.get("split") else "")
    if modality == "text":
        items = values(column)
        bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
        if bad:
            raise DatasetError(f"{name}: text column {column!r} has {len(bad)} row(s) that are not strings (rows "
                               f"{', '.join(map(str, bad[:10]))}).")
    else:
        items = ParquetImages(parquet, column, name) if parquet is not None else ArrowImages(table, column, name)
    extra = f"hf|{meta.get('split')}|{column}|{label}|{kind}"
    fingerprint = _hash_files(files, extra) if files else hashlib.sha256(
        (extra + repr(raw) + (repr(items) if modality == "text" else "")).encode()).hexdigest()
    return Dataset(name, modality, items, labels, classes, fingerprint,
                   meta | {"columns": {"input": column, "label": label}}, kind)
