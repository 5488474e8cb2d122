"""Write any dataset zooforge reads as a Hugging Face dataset or as tar shards (``zooforge export``).

For moving data between the forms users hold it in (a folder to shards for a cluster, a demo task
to Parquet to try the ``hf:`` reader) without another tool. Images are written as PNG, streamed a
sample at a time; labels keep their kind: class names become a ``ClassLabel`` (a ``cls`` member
holding the class index, and the class names in ``classes.txt`` beside the shards), regression
targets floats, tags a list of ``ClassLabel`` (shards: a JSON member ``{"label": [...]}``).

* ``disk``: a ``save_to_disk`` folder (``hf:<folder>``);
* ``parquet``: one Parquet file with the Hub's metadata, row groups of 1000 (``hf:<file>``);
* ``wds``: ``<out>/<split>-000000.tar`` ... of ``--shard-size`` samples (``wds:<pattern>``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from zooforge.errors import DatasetError
from zooforge.zoo.data import Dataset

__all__ = ["export", "FORMATS"]

FORMATS = ("disk", "parquet", "wds")
ROW_GROUP = 1000          # Parquet rows per group: what the reader holds in memory at a time


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "png")
    return buf.getvalue()


def _label(ds: Dataset, i: int):
    if ds.task == "classification":
        return int(ds.labels[i])
    if ds.task == "multilabel":
        return [int(k) for k in np.flatnonzero(ds.labels[i])]
    row = ds.labels[i].astype(float).tolist()
    return row[0] if len(row) == 1 else row


def _features(ds: Dataset):
    import datasets

    if ds.task == "classification":
        label = datasets.ClassLabel(names=list(ds.classes))
    elif ds.task == "multilabel":
        label = datasets.Sequence(datasets.ClassLabel(names=list(ds.classes)))
    else:
        label = datasets.Value("float64") if ds.num_classes == 1 else datasets.Sequence(datasets.Value("float64"))
    column = datasets.Image() if ds.modality == "image" else datasets.Value("string")
    return datasets.Features({"image" if ds.modality == "image" else "text": column, "label": label})


def _rows(ds: Dataset):
    key = "image" if ds.modality == "image" else "text"
    for i in range(len(ds)):
        value = {"bytes": _png(ds.image(i)), "path": None} if ds.modality == "image" else ds.text(i)
        yield {key: value, "label": _label(ds, i)}


def export(ds: Dataset, out: str | Path, fmt: str, *, shard_size: int = 1000, split: str = "train") -> str:
    """Write ``ds`` to ``out`` in ``fmt`` (see the module docstring); returns the spec that reads it back."""
    out = Path(out)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt == "wds":
        return _shards(ds, out, shard_size, split)
    features = _features(ds)
    if fmt == "disk":
        import tempfile

        import datasets

        with tempfile.TemporaryDirectory() as scratch:          # the generator's cache, not the user's
            datasets.Dataset.from_generator(lambda: _rows(ds), features=features, cache_dir=scratch).save_to_disk(str(out))
        return f"hf:{out}"
    if out.suffix != ".parquet":
        raise DatasetError(f"{out}: a Parquet export needs a .parquet file name.")
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    schema = features.arrow_schema            # carries the Hub's feature metadata (ClassLabel names)
    with pq.ParquetWriter(str(out), schema) as writer:
        batch: list[dict] = []
        for row in _rows(ds):
            batch.append(features.encode_example(row))
            if len(batch) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return f"hf:{out}"


def _shards(ds: Dataset, out: Path, shard_size: int, split: str) -> str:
    import webdataset as wds

    if ds.modality != "image":
        raise DatasetError(f"{ds.name}: tar shards hold images; export text datasets as disk or parquet.")
    if shard_size < 1:
        raise DatasetError(f"--shard-size must be at least 1; got {shard_size}.")
    out.mkdir(parents=True, exist_ok=True)
    count = (len(ds) + shard_size - 1) // shard_size
    for s in range(count):
        with wds.TarWriter(str(out / f"{split}-{s:06d}.tar")) as sink:
            for i in range(s * shard_size, min(len(ds), (s + 1) * shard_size)):
                sample = {"__key__": f"{i:08d}", "png": _png(ds.image(i))}
                if ds.task == "classification":
                    sample["cls"] = str(int(ds.labels[i]))
                else:
                    sample["json"] = json.dumps({"label": [ds.classes[k] for k in np.flatnonzero(ds.labels[i])]
                                                 if ds.task == "multilabel" else _label(ds, i)})
                sink.write(sample)
    (out / "classes.txt").write_text("\n".join(ds.classes) + "\n")
    pattern = f"{out}/{split}-{{000000..{count - 1:06d}}}.tar"
    return f"wds:{pattern}" + ("" if ds.task == "classification" else "?label=json")
