"""Thread pools: every estimator on the same features, called bare (torch's OpenMP pool and BLAS's
pool both multi-threaded, spinning on the same cores) vs through the registry (BLAS limited to one
thread while torch has more; see zooforge.metrics.registry). Ratios from one run.

    python benchmarks/threads.py [--n 400] [--dims 576,2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from zooforge.metrics import REGISTRY


def timed(fn, repeats: int) -> float:
    fn()                                                   # warm-up (imports, first-call allocations)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--dims", default="576,2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    y = np.arange(a.n) % 4
    print(f"N = {a.n}, 4 classes, torch threads {a.threads}; seconds per call, bare vs through the registry")
    for d in map(int, a.dims.split(",")):
        inputs = {"features": (rng.normal(size=(a.n, d)) + 0.1 * y[:, None]).astype(np.float32),
                  "source_probs": rng.dirichlet(np.ones(1000), size=a.n).astype(np.float32),
                  "source_features": rng.normal(size=(500, d)).astype(np.float32),
                  "source_labels": np.arange(500) % 10}
        total_bare = total_reg = 0.0
        for name, est in REGISTRY.items():
            kwargs = {"labels": y} | {k: inputs[k] for k in est.needs}
            if "source_features" in est.needs:
                kwargs["source_labels"] = inputs["source_labels"]
            bare = timed(lambda: est.fn(**kwargs), a.repeats)
            reg = timed(lambda: est(y, inputs), a.repeats)
            total_bare, total_reg = total_bare + bare, total_reg + reg
            print(f"D={d:<5} {name:<14} bare {bare:7.3f}  registry {reg:7.3f}  {bare / reg:5.2f}x")
        print(f"D={d:<5} {'all':<14} bare {total_bare:7.3f}  registry {total_reg:7.3f}  {total_bare / total_reg:5.2f}x")


if __name__ == "__main__":
    main()
