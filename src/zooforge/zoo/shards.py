"""WebDataset tar shards as zooforge datasets: ``wds:<pattern>[?options]``.

``<pattern>`` names uncompressed ``.tar`` shards, with WebDataset's brace notation for many
(``data/train-{000000..000127}.tar``). A sample is the group of members sharing a key (the name up
to the first dot after the last slash, WebDataset's rule): ``000123.jpg`` and ``000123.cls`` are one
image and its label.

Options: ``image`` (the image member's extension; default: the first of jpg, jpeg, png, webp, ppm,
bmp, tif, tiff present), ``label`` (the label member's extension; default: the first of cls, label,
target, json present), ``key`` (with ``label=json``: the field holding the label, default ``label``)
and ``task`` (as ``--task``). A ``cls`` member holds a class index or name, or a number (regression
when not all integers); a JSON label may be a list of tags (multi-label) or of numbers.

One pass reads each shard in order: it records where every image lies (shard, offset, size), hashes
its bytes for the dataset fingerprint and decodes it once to find unreadable ones (in a thread pool),
so no image is read twice before extraction; extraction then reads each image straight from its
offset. Shards must be uncompressed for that (``.tar``, not ``.tar.gz``).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from zooforge.errors import DatasetError
from zooforge.zoo.data import Dataset, LazyImages, decode_image, encode_targets

__all__ = ["from_shards", "ShardImages", "SHARD_OPTIONS"]

SHARD_OPTIONS = ("image", "label", "key", "task")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
LABEL_EXTENSIONS = ("cls", "label", "target", "json")


class ShardImages(LazyImages):
    """Images at known offsets of tar shards; each process opens the shards it reads once."""

    checked = True

    def __init__(self, files: list[str], shard: np.ndarray, offset: np.ndarray, size: np.ndarray,
                 keys: list[str], unreadable: dict[int, str]):
        self.files, self.shard, self.offset, self.size, self.keys = files, shard, offset, size, keys
        self.unreadable = unreadable                  # container row -> why, found while indexing
        self.rows = np.arange(len(keys), dtype=np.int64)
        self._handles: dict[int, object] = {}

    def __getstate__(self):
        return self.__dict__ | {"_handles": {}}

    def _read(self, row: int) -> bytes:
        s = int(self.shard[row])
        fh = self._handles.get(s)
        if fh is None:
            fh = self._handles[s] = open(self.files[s], "rb")   # noqa: SIM115 - kept open for the next read
        fh.seek(int(self.offset[row]))
        return fh.read(int(self.size[row]))

    def _name(self, row: int) -> str:
        return f"{self.files[int(self.shard[row])]}:{self.keys[row]}"

    def found_unreadable(self) -> list[tuple[int, str]]:
        """(index, why) of this view's samples that did not decode while indexing."""
        return [(i, self.unreadable[int(r)]) for i, r in enumerate(self.rows) if int(r) in self.unreadable]


def _expand(pattern: str) -> list[str]:
    from braceexpand import braceexpand

    files = [str(Path(p).expanduser()) for p in braceexpand(pattern)]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise DatasetError(f"wds:{pattern}: {len(missing)} of {len(files)} shard(s) not found, e.g. {missing[0]}.")
    return files


def _label_value(data: bytes, ext: str, key: str, where: str):
    text = data.decode("utf-8", errors="replace").strip()
    if ext != "json":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc}).") from None
    if isinstance(value, dict):
        if key not in value:
            raise DatasetError(f"{where}: the JSON has no field {key!r} (has {sorted(value)}); name it with ?key=.")
        value = value[key]
    return value


def _probe(data: bytes, name: str) -> str | None:
    try:
        decode_image(data, name)
    except DatasetError as exc:
        return str(exc)
    return None


def from_shards(spec: str, split: str | None = None, task: str | None = None, workers: int = 4) -> Dataset:
    """The Dataset for ``wds:<spec>`` (see the module docstring); ``task`` as in ``load_dataset``."""
    pattern, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = sorted(set(options) - set(SHARD_OPTIONS))
    if unknown:
        raise DatasetError(f"wds:{pattern}: unknown option(s) {unknown}; valid: {', '.join(SHARD_OPTIONS)}.")
    if split is not None:
        raise DatasetError(f"wds:{pattern}: shards have no splits; give the pattern of the {split!r} shards instead.")
    from webdataset.tariterators import base_plus_ext

    files = _expand(pattern)
    samples: dict[tuple[int, str], dict] = {}
    order: list[tuple[int, str]] = []
    digest = hashlib.sha256(b"wds")
    bad_by_key: dict[tuple[int, str, str], str] = {}
    inflight: list = []

    def settle(limit: int) -> None:
        """Collect decode checks until at most ``limit`` are in flight (bounds the bytes held)."""
        while len(inflight) > limit:
            where, future = inflight.pop(0)
            why = future.result()
            if why is not None:
                bad_by_key[where] = why

    with ThreadPoolExecutor(max_workers=workers) as pool:       # PIL decodes without holding the GIL
        for s, file in enumerate(files):
            try:
                tar = tarfile.open(file, mode="r:")
            except tarfile.ReadError as exc:
                raise DatasetError(f"{file}: not an uncompressed tar shard ({exc}); decompress .tar.gz shards "
                                   f"first (random access needs plain tar).") from None
            with tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = base_plus_ext(member.name)
                    if key is None:
                        continue
                    sample = samples.get((s, key))
                    if sample is None:
                        sample = samples[(s, key)] = {}
                        order.append((s, key))
                    ext = ext.lower()
                    data = tar.extractfile(member).read()
                    sample[ext] = (member.offset_data, member.size)
                    if ext in IMAGE_EXTENSIONS:
                        digest.update(f"{s}\0{key}\0{ext}\0".encode() + hashlib.blake2b(data, digest_size=16).digest())
                        inflight.append(((s, key, ext), pool.submit(_probe, data, f"{file}:{member.name}")))
                        settle(4 * workers)
                    elif ext in LABEL_EXTENSIONS or ext == options.get("label"):
                        sample[f"{ext}:data"] = data
        settle(0)
    if not order:
        raise DatasetError(f"wds:{pattern}: the shards hold no samples.")
    present = {ext for sample in samples.values() for ext in sample if ":" not in ext}
    image_ext = options.get("image") or next((e for e in IMAGE_EXTENSIONS if e in present), None)
    label_ext = options.get("label") or next((e for e in LABEL_EXTENSIONS if e in present), None)
    if image_ext is None or image_ext not in present:
        raise DatasetError(f"wds:{pattern}: no image members{f' with extension {image_ext!r}' if image_ext else ''} "
                           f"(extensions present: {', '.join(sorted(present))}); name it with ?image=<ext>.")
    if label_ext is None or label_ext not in present:
        raise DatasetError(f"wds:{pattern}: no label members{f' with extension {label_ext!r}' if label_ext else ''} "
                           f"(extensions present: {', '.join(sorted(present))}); name it with ?label=<ext>.")
    lacking = [f"{files[s]}:{k}" for s, k in order if image_ext not in samples[(s, k)] or label_ext not in samples[(s, k)]]
    if lacking:
        raise DatasetError(f"wds:{pattern}: {len(lacking)} sample(s) lack a .{image_ext} image or a .{label_ext} label, "
                           f"e.g. {', '.join(lacking[:3])}.")
    raw = [_label_value(samples[k][f"{label_ext}:data"], label_ext, options.get("key", "label"),
                        f"{files[k[0]]}:{k[1]}.{label_ext}") for k in order]
    for value, k in zip(raw, order):
        digest.update(f"{k[0]}\0{k[1]}\0{json.dumps(value)}\0".encode())
    labels, classes, kind = encode_targets(raw, f"wds:{pattern}", task or options.get("task"),
                                           rows=[f"{files[s]}:{k}" for s, k in order])
    offsets = [samples[k][image_ext] for k in order]
    index = {k: i for i, k in enumerate(order)}
    unreadable = {index[(s, k)]: why for (s, k, ext), why in bad_by_key.items() if ext == image_ext}
    items = ShardImages(files, np.asarray([s for s, _ in order], dtype=np.int32),
                        np.asarray([o for o, _ in offsets], dtype=np.int64),
                        np.asarray([n for _, n in offsets], dtype=np.int64), [k for _, k in order], unreadable)
    digest.update(f"{image_ext}|{label_ext}|{kind}".encode())
    return Dataset(f"wds:{pattern}", "image", items, labels, classes, digest.hexdigest(),
                   {"shards": len(files)}, kind)
