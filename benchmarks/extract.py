"""Extraction engine vs a bare ``model(x)`` loop over the same tensors (same model, threads, batch);
a cache hit vs extraction; peak RSS while extracting many demo images at batch 256.

    python benchmarks/extract.py [--n-per-class 1250]     # 4 classes x 1250 = 5000 images
"""

import argparse
import tempfile
import time

import psutil
import torch

from zooforge.zoo import load_catalogue, load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-per-class", type=int, default=1250)
    p.add_argument("--model", default="demo/convnext-shapes")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed passes of engine and bare loop")
    args = p.parse_args()
    torch.set_num_threads(2)
    entry = next(e for e in load_catalogue("demo") if e.id == args.model)
    backbone = Backbone.from_entry(entry)
    ds = load_dataset(f"demo:shapes?n={args.n_per_class}")
    n = len(ds)
    with tempfile.TemporaryDirectory() as cache:
        rss0 = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        extract(backbone, ds, cache_dir=cache, batch_size=args.batch, progress=False)
        t_cold = time.perf_counter() - t0
        rss1 = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        hit = extract(backbone, ds, cache_dir=cache, batch_size=args.batch, progress=False)
        t_hit = time.perf_counter() - t0
        assert hit.provenance["cache_hit"]
    tensors = backbone.prepare(ds.items)["x"]           # pre-made inputs: the bare loop does no preprocessing

    def bare():
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, args.batch):
                backbone.model(tensors[i:i + args.batch])
        return time.perf_counter() - t0

    def engine():
        t0 = time.perf_counter()
        extract(backbone, ds, use_cache=False, batch_size=args.batch, progress=False)
        return time.perf_counter() - t0

    # Alternate the two, best of --repeats each: one pass of either swings +-25% on a shared machine.
    t_bare, t_engine = bare(), t_cold
    for _ in range(args.repeats):
        t_engine = min(t_engine, engine())
        t_bare = min(t_bare, bare())
    print(f"{args.model}, {n} images, batch {args.batch}, 2 threads")
    print(f"engine (preprocess + forward + head; best of {args.repeats + 1}, the first with the cache write): "
          f"{n / t_engine:.0f} img/s; "
          f"bare model(x) on pre-made tensors: {n / t_bare:.0f} img/s; ratio {t_bare / t_engine:.2f}x")
    print(f"cache hit {t_hit * 1000:.1f} ms vs the first extraction {t_cold * 1000:.0f} ms: {t_cold / t_hit:.0f}x faster")
    print(f"RSS grew {(rss1 - rss0) / 2**20:.0f} MiB during extraction (inputs of {n} images: "
          f"{tensors.numel() * 4 / 2**20:.0f} MiB as float32)")


if __name__ == "__main__":
    main()
