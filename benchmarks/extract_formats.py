"""The same images from a folder, an hf: Parquet file and wds: tar shards: load + extraction time
and peak RSS, each measured in a fresh process, the formats alternated, medians of --repeats.

    python benchmarks/extract_formats.py [--n 20000] [--repeats 3]

Baseline: the ImageFolder of PNG files (what every user has). Each format's load decodes every
image once to find unreadable ones (the folder and Parquet in a separate check pass, the shards
during their one indexing pass); extraction then decodes them again a batch at a time. Targets of
issue #21: Parquet and shards at >= 0.9x the folder's images/s, and peak RSS bounded (not growing
with the encoded bytes: the Parquet images are read a row group at a time).
"""

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ("folder", "parquet", "shards")


def write_all(root: Path, n: int) -> dict[str, str]:
    """The demo shapes (n images, 4 classes) as PNGs in the three layouts; their specs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds
    from PIL import Image

    from zooforge.zoo import load_dataset

    ds = load_dataset(f"demo:shapes?n={n // 4}")
    pngs = []
    for i in range(len(ds)):
        buf = io.BytesIO()
        Image.fromarray(ds.items[i]).save(buf, "png")
        pngs.append(buf.getvalue())
    names = [ds.classes[c] for c in ds.labels]
    for i, (png, name) in enumerate(zip(pngs, names)):
        (root / "folder" / name).mkdir(parents=True, exist_ok=True)
        (root / "folder" / name / f"{i:06d}.png").write_bytes(png)
    # a Hugging Face Parquet file: an Image struct column and a ClassLabel, row groups of 1000 as the
    # Hub's own conversion writes them
    features = {"image": {"_type": "Image"}, "label": {"names": list(ds.classes), "_type": "ClassLabel"}}
    table = pa.table({"image": pa.array([{"bytes": p, "path": None} for p in pngs],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "label": pa.array(np.asarray(ds.labels), pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, root / "data.parquet", row_group_size=1000)
    (root / "shards").mkdir()
    for s in range(0, len(pngs), 1000):
        with wds.TarWriter(str(root / "shards" / f"{s // 1000:04d}.tar")) as sink:
            for i in range(s, min(s + 1000, len(pngs))):
                sink.write({"__key__": f"{i:06d}", "png": pngs[i], "cls": str(int(ds.labels[i]))})
    last = (len(pngs) - 1) // 1000
    return {"folder": str(root / "folder"), "parquet": f"hf:{root / 'data.parquet'}",
            "shards": f"wds:{root / 'shards'}/{{0000..{last:04d}}}.tar"}


def one(spec: str, model: str, batch: int) -> dict:
    """Load and extract once in this process (no cache): seconds and peak RSS."""
    import torch

    from zooforge.zoo import load_catalogue, load_dataset
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.features import extract

    torch.set_num_threads(2)
    backbone = Backbone.from_entry(next(e for e in load_catalogue("demo") if e.id == model))
    t0 = time.perf_counter()
    ds = load_dataset(spec)
    t1 = time.perf_counter()
    fs = extract(backbone, ds, use_cache=False, batch_size=batch, progress=False)
    t2 = time.perf_counter()
    return {"n": len(fs), "load_s": t1 - t0, "extract_s": t2 - t1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="demo/convnext-shapes")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--one", nargs=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.model, args.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        specs = write_all(Path(tmp), args.n)
        runs = {f: [] for f in FORMATS}
        for _ in range(args.repeats):
            for f in FORMATS:                              # alternated, each in a fresh process
                out = subprocess.run([sys.executable, __file__, "--one", specs[f], "--model", args.model,
                                      "--batch", str(args.batch)], capture_output=True, text=True, check=True)
                runs[f].append(json.loads(out.stdout.strip().splitlines()[-1]))
    n = runs["folder"][0]["n"]
    med = {f: {k: statistics.median(r[k] for r in runs[f]) for k in ("load_s", "extract_s", "peak_rss_mb")}
           for f in FORMATS}
    base = n / (med["folder"]["load_s"] + med["folder"]["extract_s"])
    print(f"{n} PNG images (32 x 32), {args.model}, batch {args.batch}, 2 threads; medians of {args.repeats}, "
          f"alternated, one process each")
    for f in FORMATS:
        m = med[f]
        rate = n / (m["load_s"] + m["extract_s"])
        print(f"{f:8s} load {m['load_s']:6.2f} s  extract {m['extract_s']:6.2f} s  {rate:6.0f} img/s "
              f"({rate / base:.2f}x the folder; extraction alone {med['folder']['extract_s'] / m['extract_s']:.2f}x)"
              f"  peak RSS {m['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
