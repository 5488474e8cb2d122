"""Audit of the demo zoo x demo target tasks: local backend vs Ray (2 workers) wall time, and the
overhead of resuming a finished audit, as ratios measured in this one run.

    python benchmarks/audit.py [--n-per-class 200] [--tasks 4]

Both backends start from an empty feature cache and write their own Parquet folder. Target (issue
#5): rerunning a finished audit (every cell skipped) costs < 5% of the full run. Ray's time includes
starting the local Ray instance and its workers (each imports torch once), which is what a user pays.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from zooforge.selection.audit import TIMING_COLUMNS, load_plan, run_audit
from zooforge.zoo.demo.tasks import TARGET_TASKS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(2)
    tasks = TARGET_TASKS[:args.tasks]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for backend in ("local", "ray"):
            plan = tmp / f"{backend}.toml"
            plan.write_text(f'catalogues = ["demo"]\ndatasets = {[f"demo:{t}?n={args.n_per_class}" for t in tasks]!r}\n'
                            f'metrics = ["logme", "leep", "nce", "hscore_shrink", "gbc", "transrate", "sfda"]\n'
                            f'out = "{backend}.parquet"\ncache_dir = "cache-{backend}"\n'.replace("'", '"'))
            t0 = time.perf_counter()
            summary = run_audit(load_plan(plan), backend=backend, workers=args.workers, progress=False)
            results[backend] = (time.perf_counter() - t0, summary)
            if backend == "local":
                t0 = time.perf_counter()
                again = run_audit(load_plan(plan), progress=False)
                t_resume = time.perf_counter() - t0
                assert again.ran == 0
        (t_local, local), (t_ray, ray_run) = results["local"], results["ray"]
        a, b = local.table.drop(TIMING_COLUMNS), ray_run.table.drop(TIMING_COLUMNS)
        same_keys = a.drop("score", "lo", "hi").equals(b.drop("score", "lo", "hi"))
        # 1 thread (Ray tasks) and 2 threads (local) sum in different orders: last-bit differences
        rel = ((a["score"] - b["score"]).abs() / b["score"].abs().clip(lower_bound=1e-12)).max()
    print(f"{local.cells} cells ({local.cells // len(tasks)} demo models x {len(tasks)} tasks, "
          f"{args.n_per_class} images per class), 7 estimators")
    print(f"local: {t_local:.1f} s; ray ({args.workers} workers, 1 thread each, startup included): {t_ray:.1f} s; "
          f"local/ray = {t_local / t_ray:.2f}x")
    print(f"same cells, statuses and costs: {same_keys}; largest relative score difference {rel:.1e}")
    print(f"resume of the finished audit: {t_resume:.2f} s = {100 * t_resume / t_local:.2f}% of the full run "
          f"(target < 5%)")


if __name__ == "__main__":
    main()
