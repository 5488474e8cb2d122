"""An audit at hub scale: every timm architecture under a GMACs cap, listed from timm's registry by
``zooforge catalogue timm``, scored on one dataset, the way "score every timm model under G GMACs on
my data" runs.

    python benchmarks/audit_scale.py [--max-gmacs 1.0] [--limit 200] [--n-per-class 10] [--ray-models 40]

Weights cannot be downloaded here, so each architecture runs at random init (``pretrained = false``:
the same code path, cost and memory as pretrained weights; the scores mean nothing). One entry per
architecture (its first pretrained tag, whose input size and preprocessing it keeps). Per model the
steps of an audit cell are timed separately (load, cost, feature extraction, scoring; the cost as an
audit after the listing gets it, remembered per architecture, and as a fresh FLOP count),
with images/s and the process's peak RSS; failures are grouped by kind. Then the whole catalogue
runs as a real audit (``zooforge.selection.audit.run_audit``), which is resumed once finished to
show what a rerun costs; then as ``zooforge audit`` in a subprocess killed with SIGKILL halfway and
resumed, to show that only unfinished cells run again and the resumed table equals the uninterrupted
one; then the first ``--ray-models`` models on Ray with 1 and 2 workers and on a two-node loopback
cluster (tables equal to the local one). The projection to 1,000 models assumes the extraction
share scales with GMACs and the rest stays per model (stated with the number). Per-architecture
costs of the listing are cached in ``--work``, which is the zooforge cache root of this run
(``ZOOFORGE_CACHE_DIR``), as a user's listing and audit share one (the first listing counts every
tag once).
"""

import argparse
import collections
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from zooforge.errors import describe
from zooforge.selection.audit import TIMING_COLUMNS, load_plan, run_audit
from zooforge.selection.rank import score_featureset
from zooforge.zoo import load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.cost import count_gmacs
from zooforge.zoo.features import extract
from zooforge.zoo.listing import catalogue_from_timm, dump_catalogue

METRICS = ["logme", "hscore_shrink", "gbc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-gmacs", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=200, help="at most this many architectures")
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--task", default="shapes")
    ap.add_argument("--ray-models", type=int, default=40, help="models of the Ray comparison (0: skip it)")
    ap.add_argument("--ray-only", action="store_true", help="only the Ray comparison (after a listing)")
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / ".audit_scale",
                    help="keeps the listing's per-architecture cost cache between runs")
    args = ap.parse_args()
    os.environ["ZOOFORGE_CACHE_DIR"] = str(args.work.resolve())     # the listing's costs are the audit's
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        listed = catalogue_from_timm(["*"], max_gmacs=args.max_gmacs, cache_dir=args.work)
        t_list = time.perf_counter() - t0
        first = {}
        for e in listed:
            first.setdefault(e.name.split(".")[0], e)
        entries = [replace(e, pretrained=False, id=f"timm/{arch}") for arch, e in list(first.items())[:args.limit]]
        print(f"listing: {len(listed)} pretrained tags within {args.max_gmacs:g} GMACs in {t_list:.1f} s (costs on the "
              f"meta device, cached); {len(first)} architectures, measuring {len(entries)}", flush=True)
        if args.ray_only:
            return _ray_comparison(tmp, entries[:args.ray_models], args)
        ds = load_dataset(f"demo:{args.task}?n={args.n_per_class}")
        rows, failures = [], []
        for i, entry in enumerate(entries, 1):
            row = {"model": entry.id}
            try:
                t = time.perf_counter()
                backbone = Backbone.from_entry(entry)
                row["load"] = time.perf_counter() - t
                t = time.perf_counter()
                row["gmacs"] = backbone.gmacs                    # remembered from the listing's count
                row["cost"] = time.perf_counter() - t
                t = time.perf_counter()
                count_gmacs(backbone.model, **backbone.example_inputs())
                row["count"] = time.perf_counter() - t          # what a first, uncached count costs
                t = time.perf_counter()
                fs = extract(backbone, ds, use_cache=False, progress=False)      # a real forward pass, every time
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
        cold = total - t["cost"] + t["count"]
        cold_share = ((cold - t["extract"]) / cold).to_numpy()
        print(f"\n{len(rows)} scored, {len(failures)} failed; per model (median): load {t['load'].median():.2f} s, "
              f"cost {t['cost'].median():.3f} s remembered ({t['count'].median():.2f} s to count afresh), extraction "
              f"{t['extract'].median():.2f} s ({t['images_per_s'].median():.0f} images/s), scoring "
              f"{t['score'].median():.3f} s; everything but the forward pass is {100 * np.median(share):.0f}% of a cell "
              f"for the median architecture when the listing counted its cost ({100 * np.median(cold_share):.0f}% "
              f"with a fresh count; target <= 25% at 224 px); peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        for kind, count in collections.Counter(r.split(":")[0] for _, r in failures).most_common():
            example = next((m, r) for m, r in failures if r.startswith(kind))
            print(f"  {count:3d} x {kind}: e.g. {example[0]}: {example[1][:150]}")
        per_model = float(total.sum()) / len(rows)
        print(f"projection: 1,000 such models on this machine ~ {1000 * per_model / 3600:.1f} h at {len(ds)} images "
              f"(per-model cost as measured here; on a GPU the extraction share shrinks, the rest does not)")
        dump_catalogue(entries, tmp / "zoo.toml", "benchmarks/audit_scale.py")
        plan = _write_plan(tmp, "plan.toml", tmp / "zoo.toml", args, "audit")
        t0 = time.perf_counter()
        summary = run_audit(load_plan(plan), progress=False)
        t_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_audit(load_plan(plan), retry_failed=False, progress=False)
        t_resume = time.perf_counter() - t0
        print(f"as an audit: {summary.cells} cells in {t_run:.0f} s, {len(summary.failed)} failed; resuming the "
              f"finished audit ran {again.ran} cells in {t_resume:.1f} s = {100 * t_resume / t_run:.1f}% of the run",
              flush=True)
        _kill_and_resume(tmp, args, summary)
        if args.ray_models:
            _ray_comparison(tmp, entries[:args.ray_models], args)


def _write_plan(tmp: Path, name: str, catalogue: Path, args, out: str) -> Path:
    (tmp / name).write_text(
        f'catalogues = ["{catalogue}"]\ndatasets = ["demo:{args.task}?n={args.n_per_class}"]\n'
        f'metrics = {METRICS!r}\nout = "{tmp / out}"\ncache_dir = "{tmp / (out + "-cache")}"\n'.replace("'", '"'))
    return tmp / name


def _stable(table: pl.DataFrame) -> pl.DataFrame:
    return table.drop(TIMING_COLUMNS).sort("model", "dataset", "metric")


def _same(a: pl.DataFrame, b: pl.DataFrame) -> str:
    """How two audit tables compare, timing columns aside: "equal", or how far their scores are apart
    (Ray workers run one torch thread each, the local run two, so float sums may round differently)."""
    a, b = _stable(a), _stable(b)
    if not a.drop("score", "lo", "hi").equals(b.drop("score", "lo", "hi")):
        return "NOT the same cells, statuses or metadata"
    x, y = a["score"].to_numpy().astype(float), b["score"].to_numpy().astype(float)
    if not np.array_equal(np.isnan(x), np.isnan(y)):
        return "NOT the same missing scores"
    ok = ~np.isnan(x)
    diff = np.abs(x[ok] - y[ok])
    if not diff.size or diff.max() == 0:
        return "equal"
    rel = diff / np.maximum(np.abs(x[ok]), 1e-12)
    return (f"same cells; scores differ in {int((diff > 0).sum())} of {diff.size} by at most {diff.max():.2g} "
            f"(relative {rel.max():.2g}, median relative {np.median(rel[diff > 0]):.2g})")


def _kill_and_resume(tmp: Path, args, uninterrupted) -> None:
    """``zooforge audit`` in a subprocess, SIGKILLed once half the cells are written, then resumed."""
    plan = _write_plan(tmp, "killed.toml", tmp / "zoo.toml", args, "killed")
    out = tmp / "killed"
    total = uninterrupted.cells
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen([sys.executable, "-m", "zooforge.cli", "audit", str(plan), "--allow-failures"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.perf_counter()
    while proc.poll() is None and len(list(out.glob("cell-*.parquet"))) < total // 2:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - t0
    done = len(list(out.glob("cell-*.parquet")))
    t0 = time.perf_counter()
    resumed = run_audit(load_plan(plan), progress=False)
    t_resumed = time.perf_counter() - t0
    same = _same(resumed.table, uninterrupted.table)
    print(f"kill -9 after {killed_after:.0f} s with {done} of {total} cells written; the resume ran {resumed.ran} "
          f"cells (= the {total - done} unfinished: {resumed.ran == total - done}) in {t_resumed:.0f} s; work repeated: "
          f"at most the one cell in flight, {100 / total:.1f}% of the cells; resumed table against the uninterrupted "
          f"one (timing columns aside): {same}", flush=True)


def _ray_comparison(tmp: Path, entries, args) -> None:
    """The same plan locally, on Ray with 1 and 2 workers, and on a two-node loopback Ray cluster."""
    from zooforge.selection.audit_ray import loopback_cluster

    dump_catalogue(entries, tmp / "ray-zoo.toml", "benchmarks/audit_scale.py (Ray comparison)")
    runs = {}
    for label, kwargs in (("local", {}), ("ray, 1 worker", {"backend": "ray", "workers": 1}),
                          ("ray, 2 workers", {"backend": "ray", "workers": 2})):
        plan = _write_plan(tmp, f"ray-{len(runs)}.toml", tmp / "ray-zoo.toml", args, f"ray-{len(runs)}")
        t0 = time.perf_counter()
        runs[label] = (run_audit(load_plan(plan), progress=False, **kwargs), time.perf_counter() - t0)
    with loopback_cluster(nodes=2, cpus_per_node=1) as address:
        plan = _write_plan(tmp, "ray-cluster.toml", tmp / "ray-zoo.toml", args, "ray-cluster")
        t0 = time.perf_counter()
        runs["two-node loopback cluster"] = (run_audit(load_plan(plan), backend="ray", address=address,
                                                       progress=False), time.perf_counter() - t0)
    local = runs["local"][0].table
    base = runs["ray, 1 worker"][1]
    for label, (summary, seconds) in runs.items():
        print(f"  {label:<26} {summary.cells} cells in {seconds:6.1f} s ({base / seconds:.2f}x of 1 Ray worker), "
              f"{len(summary.failed)} failed, against the local table: {_same(summary.table, local)}",
              flush=True)


if __name__ == "__main__":
    main()
