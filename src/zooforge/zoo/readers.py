"""The local readers behind ``load_dataset``: ImageFolder folders (flat or split into
``<folder>/<split>/<class>``, skipping hidden files and OS metadata), CSV files of paths or texts,
``.npz`` arrays, scikit-learn's digits and the procedural ``demo:`` tasks. Each returns a
:class:`~zooforge.zoo.data.Dataset` whose fingerprint hashes the content that determines it."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qsl

import numpy as np

from zooforge.errors import DatasetError
from zooforge.zoo.data import DEFAULT_SPLIT_FRACTION, IMAGE_SUFFIXES, Dataset
from zooforge.zoo.targets import encode_targets

__all__ = ["from_csv", "from_demo", "from_folder", "from_npz", "from_sklearn"]

# The demo's test split is drawn with the seed plus this, so it never repeats a training image.
_DEMO_TEST_SEED_OFFSET = 10_000
# Folder names that are a dataset's splits, not its classes.
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")
# Operating-system and tool metadata that is never a class or a sample (besides any name that
# starts with '.', which covers .DS_Store, .ipynb_checkpoints and AppleDouble ._ files).
OS_METADATA = frozenset({"__macosx", "@eadir", "thumbs.db", "desktop.ini", "system volume information",
                         "$recycle.bin", "lost+found"})


def _hash_files(paths: Sequence[Path], labels: Sequence[str], root: Path) -> str:
    h = hashlib.sha256()
    for p, label in zip(paths, labels):
        h.update(f"{p.relative_to(root) if p.is_relative_to(root) else p}\0{label}\0".encode())
        try:
            h.update(hashlib.blake2b(p.read_bytes(), digest_size=16).digest())
        except OSError as exc:
            raise DatasetError(f"cannot read {p}: {exc}") from None
    return h.hexdigest()


def _ignored(name: str) -> bool:
    """Hidden files and folders, AppleDouble ._ files, and OS metadata: never classes or samples."""
    return name.startswith(".") or name.lower() in OS_METADATA


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not _ignored(d.name))


def _split_layout(root: Path) -> list[str]:
    """The split folders of ``root`` when it is laid out <root>/<split>/<class>/..., else []."""
    dirs = _subdirs(root)
    splits = [d for d in dirs if d.name.lower() in SPLIT_NAMES and _subdirs(d)]
    if not splits:
        return []
    others = [d.name for d in dirs if d not in splits]
    if others:
        raise DatasetError(
            f"{root}: mixes split folders ({', '.join(d.name for d in splits)}) with other folders "
            f"({', '.join(others[:5])}); use either <root>/<class>/<image> or <root>/<split>/<class>/<image>.")
    return [d.name for d in splits]


def _tagged(fingerprint: str, task: str) -> str:
    """A fingerprint that also says the target kind (classification's stays as it was: caches keep)."""
    return fingerprint if task == "classification" else hashlib.sha256(f"{fingerprint}:{task}".encode()).hexdigest()


def from_folder(root: Path, split: str | None, task: str | None = None) -> Dataset:
    splits = _split_layout(root)
    meta: dict = {}
    if splits:
        chosen = split if split is not None else ("train" if "train" in splits else None)
        if chosen is None or chosen not in splits:
            asked = f"split {split!r} is not one of them" if split is not None else "no split was asked for"
            raise DatasetError(f"{root}: laid out in splits {', '.join(splits)} and {asked}; "
                               f"choose one with --split (Python: split=...).")
        meta = {"split": chosen, "splits": splits}
        root = root / chosen
    elif split is not None:
        if not (root / split).is_dir():
            raise DatasetError(f"{root}: has no split folder {split!r} (it is <root>/<class>/<image>: "
                               f"{', '.join(d.name for d in _subdirs(root)[:5])}); leave the split out.")
        root, meta = root / split, {"split": split}
    paths, raw = [], []
    for d in _subdirs(root):
        for p in sorted(d.rglob("*")):
            if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(_ignored(part) for part in p.relative_to(d).parts)):
                paths.append(p)
                raw.append(d.name)
    if not paths:
        raise DatasetError(
            f"{root}: no images found; expected ImageFolder layout <root>/<class>/<image> with "
            f"suffixes {', '.join(sorted(IMAGE_SUFFIXES))}."
        )
    labels, classes, kind = encode_targets(raw, str(root), task or "classification")   # folder names are classes
    return Dataset(str(root), "image", [str(p) for p in paths], labels, classes,
                   _tagged(_hash_files(paths, raw, root), kind), meta, kind)


def from_csv(file: Path, split: str | None, task: str | None = None) -> Dataset:
    with file.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = list(reader)
    if "label" not in header:
        raise DatasetError(f"{file}: no `label` column; the header must be `path,label` or `text,label` (got {header}).")
    if "path" not in header and "text" not in header:
        raise DatasetError(f"{file}: needs a `path` (images) or `text` column beside `label` (got {header}).")
    lines = list(range(2, len(rows) + 2))         # file line of each row (the header is line 1)
    ragged = [n for n, r in zip(lines, rows) if None in r or any(v is None for v in r.values())]
    if ragged:
        raise DatasetError(f"{file}: line(s) {', '.join(map(str, ragged[:10]))} have a different number of fields "
                           f"than the header ({len(header)}: {header}); quote fields that contain commas.")
    meta: dict = {}
    if split is not None:
        if "split" not in header:
            raise DatasetError(f"{file}: split {split!r} was asked for but the CSV has no `split` column "
                               f"(got {header}); leave the split out or add the column.")
        names = sorted({r["split"] for r in rows})
        if split not in names:
            raise DatasetError(f"{file}: no rows with split {split!r}; the `split` column has {names}.")
        lines = [n for n, r in zip(lines, rows) if r["split"] == split]
        rows = [r for r in rows if r["split"] == split]
        meta = {"split": split, "splits": names}
    raw = [r["label"] for r in rows]
    # missing labels refused by line; a multi-label cell holds tags separated by '|'
    labels, classes, kind = encode_targets(raw, str(file), task, rows=lines, row_word="line")
    if "path" in header:
        paths = [(file.parent / r["path"]).resolve() for r in rows]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(f"{file}: {len(missing)} image file(s) not found, e.g. {missing[0]}")
        return Dataset(str(file), "image", [str(p) for p in paths], labels, classes,
                       _tagged(_hash_files(paths, raw, file.parent.resolve()), kind), meta, kind)
    texts = [r["text"] for r in rows]
    digest = hashlib.sha256("\0".join(f"{t}\1{lab}" for t, lab in zip(texts, raw)).encode()).hexdigest()
    return Dataset(str(file), "text", texts, labels, classes, _tagged(digest, kind), meta, kind)


def _as_rgb_array(images: np.ndarray, source: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DatasetError(f"{source}: `images` must be uint8; got {images.dtype}.")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DatasetError(f"{source}: `images` must be N x H x W or N x H x W x C (C = 1, 3 or 4); got shape {images.shape}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images[..., :3])


def _array_dataset(name: str, images: np.ndarray, raw_labels, fingerprint_extra: bytes = b"",
                   task: str | None = "classification") -> Dataset:
    """An in-memory dataset; ``labels`` a vector (classes, or one regression target) or an N x K
    matrix (K regression targets, or 0/1 tag indicators); ``task`` None infers the kind."""
    images = _as_rgb_array(images, name)
    raw = np.asarray(raw_labels)
    if raw.ndim not in (1, 2) or len(raw) != len(images):
        raise DatasetError(f"{name}: `labels` must be a vector of {len(images)} labels (or {len(images)} x K targets "
                           f"or tags); got shape {raw.shape}.")
    labels, classes, kind = encode_targets(raw.tolist(), name, task)
    h = hashlib.sha256(fingerprint_extra)
    h.update(images.tobytes())
    h.update(labels.tobytes())
    return Dataset(name, "image", images, labels, classes, _tagged(h.hexdigest(), kind), {}, kind)


def from_npz(file: Path, task: str | None = None) -> Dataset:
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {file}: {exc}") from None
    for key in ("images", "labels"):
        if key not in data:
            raise DatasetError(f"{file}: missing array `{key}` (has {sorted(data.files)}); expected `images` and `labels`.")
    return _array_dataset(str(file), data["images"], data["labels"], task=task)


def from_sklearn(name: str, split: str | None, task: str | None = None) -> Dataset:
    if name != "digits":
        raise DatasetError(f"unknown sklearn dataset {name!r}; supported: sklearn:digits.")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    ds = _array_dataset("sklearn:digits", images, bunch.target, b"sklearn-digits", task or "classification")
    if split is None:
        return ds
    train, test = ds.split(DEFAULT_SPLIT_FRACTION, seed=0)
    return _pick_split(train, test, split, "sklearn:digits")


def _pick_split(train: Dataset, test: Dataset, split: str, name: str) -> Dataset:
    if split == "train":
        return replace(train, name=f"{name}[train]")
    if split in ("test", "val"):
        return replace(test, name=f"{name}[{split}]")
    raise DatasetError(f"{name}: unknown split {split!r}; use train, val or test.")


def from_demo(rest: str, split: str | None, kind: str | None = None) -> Dataset:
    from zooforge.zoo.demo.kinds import KIND_TASKS, generate_kind
    from zooforge.zoo.demo.tasks import GENERATOR_VERSION, TASKS, generate
    from zooforge.zoo.demo.text import TEXT_TASKS, generate_text

    task, _, query = rest.partition("?")
    if task not in TASKS and task not in TEXT_TASKS and task not in KIND_TASKS:
        raise DatasetError(f"unknown demo task {task!r}; available: {', '.join([*TASKS, *TEXT_TASKS, *KIND_TASKS])}.")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"n", "seed"}
    if unknown:
        raise DatasetError(f"demo:{task}: unknown option(s) {sorted(unknown)}; valid: n, seed.")
    try:
        n = int(options.get("n", KIND_TASKS[task].default_n if task in KIND_TASKS else 100))
        seed = int(options.get("seed", 0))
    except ValueError:
        raise DatasetError(f"demo:{task}: options n and seed must be integers; got {query!r}.") from None
    if n < 1:
        raise DatasetError(f"demo:{task}: n (samples per class) must be at least 1; got {n}.")
    if split in ("test", "val"):
        seed += _DEMO_TEST_SEED_OFFSET
    elif split not in (None, "train"):
        raise DatasetError(f"demo:{task}: unknown split {split!r}; use train, val or test.")
    modality = "text" if task in TEXT_TASKS else "image"
    name = f"demo:{task}" + (f"[{split}]" if split else "")
    fingerprint = hashlib.sha256(f"demo:{task}:{n}:{seed}:v{GENERATOR_VERSION}".encode()).hexdigest()
    meta = {"task": task, "n": n, "seed": seed}
    if task in KIND_TASKS:
        images, raw, names = generate_kind(task, n, seed)
        labels, classes, kind = encode_targets(raw, name, kind or KIND_TASKS[task].kind, names=names)
        return Dataset(name, modality, images, labels, classes, _tagged(fingerprint, kind), meta, kind)
    items, codes, names = (generate_text if modality == "text" else generate)(task, n, seed)
    if kind in (None, "classification"):
        return Dataset(name, modality, items, codes, tuple(names), fingerprint, meta)
    # another kind asked of a class task: its class names are the values (counting as a number)
    labels, classes, kind = encode_targets([names[c] for c in codes], name, kind)
    return Dataset(name, modality, items, labels, classes, _tagged(fingerprint, kind), meta, kind)
