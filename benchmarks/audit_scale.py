"""An audit at hub scale: every timm architecture under a GMACs cap, listed from timm's registry by
``zooforge catalogue timm``, scored on one dataset, the way "score every timm model under G GMACs on
my data" runs.

    python benchmarks/audit_scale.py [--max-gmacs 0.6] [--limit 200] [--n-per-class 10]

Weights cannot be downloaded here, so each architecture runs at random init (``pretrained = false``:
the same code path, cost and memory as pretrained weights; the scores mean nothing). One entry per
architecture (its first pretrained tag, whose input size and preprocessing it keeps). Per model the
steps of an audit cell are timed separately (load, cost counting, feature extraction, scoring),
with images/s and the process's peak RSS; failures are grouped by kind. Then the whole catalogue
runs as a real audit (``zooforge.selection.audit.run_audit``), which is resumed once finished to
show what a rerun costs. The projection to 1,000 models assumes the extraction share scales with
GMACs and the rest stays per model (stated with the number).
"""

import argparse
import collections
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from zooforge.errors import describe
from zooforge.selection.audit import load_plan, run_audit
from zooforge.selection.rank import score_featureset
from zooforge.zoo import load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract
from zooforge.zoo.listing import catalogue_from_timm, dump_catalogue

METRICS = ["logme", "hscore_shrink", "gbc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-gmacs", type=float, default=0.6)
    ap.add_argument("--limit", type=int, default=200, help="at most this many architectures")
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--task", default="shapes")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        listed = catalogue_from_timm(["*"], max_gmacs=args.max_gmacs, cache_dir=tmp / "cache")
        t_list = time.perf_counter() - t0
        first = {}
        for e in listed:
            first.setdefault(e.name.split(".")[0], e)
        entries = [replace(e, pretrained=False, id=f"timm/{arch}") for arch, e in list(first.items())[:args.limit]]
        print(f"listing: {len(listed)} pretrained tags within {args.max_gmacs:g} GMACs in {t_list:.1f} s (costs on the "
              f"meta device, cached); {len(first)} architectures, measuring {len(entries)}", flush=True)
        ds = load_dataset(f"demo:{args.task}?n={args.n_per_class}")
        rows, failures = [], []
        for i, entry in enumerate(entries, 1):
            row = {"model": entry.id}
            try:
                t = time.perf_counter()
                backbone = Backbone.from_entry(entry)
                row["load"] = time.perf_counter() - t
                t = time.perf_counter()
                row["gmacs"] = backbone.gmacs
                row["cost"] = time.perf_counter() - t
                t = time.perf_counter()
                fs = extract(backbone, ds, cache_dir=None, progress=False)
                row["extract"] = time.perf_counter() - t
                t = time.perf_counter()
                score_featureset(fs, METRICS)
                row["score"] = time.perf_counter() - t
                row["images_per_s"] = len(ds) / row["extract"]
                rows.append(row)
            except Exception as exc:     # noqa: BLE001 - a benchmark of what fails: every kind is recorded
                failures.append((entry.id, describe(exc)))
            if i % 25 == 0:
                print(f"  {i}/{len(entries)} models, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
                      flush=True)
        t = pl.DataFrame(rows)
        total = t.select(pl.sum_horizontal("load", "cost", "extract", "score")).to_series()
        share = ((total - t["extract"]) / total).to_numpy()
        print(f"\n{len(rows)} scored, {len(failures)} failed; per model (median): load {t['load'].median():.2f} s, "
              f"cost counting {t['cost'].median():.2f} s, extraction {t['extract'].median():.2f} s "
              f"({t['images_per_s'].median():.0f} images/s), scoring {t['score'].median():.3f} s; everything but the "
              f"forward pass is {100 * np.median(share):.0f}% of a cell for the median architecture (target <= 25% at "
              f"224 px); peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        for kind, count in collections.Counter(r.split(":")[0] for _, r in failures).most_common():
            example = next((m, r) for m, r in failures if r.startswith(kind))
            print(f"  {count:3d} x {kind}: e.g. {example[0]}: {example[1][:150]}")
        per_model = float(total.sum()) / len(rows)
        print(f"projection: 1,000 such models on this machine ~ {1000 * per_model / 3600:.1f} h at {len(ds)} images "
              f"(per-model cost as measured here; on a GPU the extraction share shrinks, the rest does not)")
        (tmp / "plan.toml").write_text(
            f'catalogues = ["{tmp / "zoo.toml"}"]\ndatasets = ["demo:{args.task}?n={args.n_per_class}"]\n'
            f'metrics = {METRICS!r}\nout = "{tmp / "audit"}"\ncache_dir = "{tmp / "cache"}"\n'.replace("'", '"'))
        dump_catalogue(entries, tmp / "zoo.toml", "benchmarks/audit_scale.py")
        t0 = time.perf_counter()
        summary = run_audit(load_plan(tmp / "plan.toml"), progress=False)
        t_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_audit(load_plan(tmp / "plan.toml"), retry_failed=False, progress=False)
        t_resume = time.perf_counter() - t0
        print(f"as an audit: {summary.cells} cells in {t_run:.0f} s, {len(summary.failed)} failed; resuming the "
              f"finished audit ran {again.ran} cells in {t_resume:.1f} s = {100 * t_resume / t_run:.1f}% of the run")


if __name__ == "__main__":
    main()
