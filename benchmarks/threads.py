"""Thread pools: every estimator on the same features, called bare (torch's OpenMP pool and BLAS's
pool both multi-threaded, spinning on the same cores) vs through the registry (BLAS limited to one
thread while torch has more; see zooforge.metrics.registry). Ratios from one run.

With ``--load K``, K competing processes run while every estimator is timed through the registry at
1 thread and at one thread per core, and the thread count the CLI's default picks is printed before and
under the load (``zooforge.zoo.cores.default_threads``: the cores other work leaves free):
``--load-kind spin`` keeps one core busy with a Python loop, ``torch`` runs another CPU torch job at
torch's default thread count (as a second zooforge or another Ray worker would).

    python benchmarks/threads.py [--n 400] [--dims 576,2048] [--threads 2] [--load 1]
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


def _spin(kind: str) -> None:
    if kind == "torch":                          # another CPU torch job, with torch's default threads
        a = torch.randn(512, 512)
        while True:
            a = torch.tanh(a @ a)
    while True:
        pass


def under_load(a, load: int) -> None:
    import multiprocessing as mp

    from zooforge.zoo.cores import available_cores, default_threads

    idle = default_threads()
    procs = [mp.get_context("spawn").Process(target=_spin, args=(a.load_kind,), daemon=True) for _ in range(load)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)
        loaded = [default_threads() for _ in range(20)]
        print(f"the CLI's default (zooforge.zoo.cores.default_threads): {idle} thread(s) before the competitors "
              f"started, {max(set(loaded), key=loaded.count)} with them running (20 reads: {sorted(set(loaded))})",
              flush=True)
        choices = {"1 thread": 1, f"{available_cores()} threads (one per core)": available_cores()}
        rng = np.random.default_rng(0)
        y = np.arange(a.n) % 4
        for d in map(int, a.dims.split(",")):
            inputs = {"features": (rng.normal(size=(a.n, d)) + 0.1 * y[:, None]).astype(np.float32),
                      "source_probs": rng.dirichlet(np.ones(1000), size=a.n).astype(np.float32),
                      "source_features": rng.normal(size=(500, d)).astype(np.float32),
                      "source_labels": np.arange(500) % 10}
            runs: dict[str, list[float]] = {label: [] for label in choices}
            for _ in range(a.rounds):                        # alternated, so a phase of the competitor hits both
                for label, threads in choices.items():
                    torch.set_num_threads(threads)
                    runs[label].append(sum(timed(lambda: est(y, inputs), 1) for est in REGISTRY.values()))
            base = float(np.median(runs["1 thread"]))
            for label, seconds in runs.items():
                print(f"D={d:<5} {load} competing {a.load_kind} process(es), every estimator at {label:<24} median "
                      f"{np.median(seconds):7.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}; "
                      f"{np.median(seconds) / base:5.2f}x the 1-thread median)", flush=True)
    finally:
        for p in procs:
            p.terminate()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--dims", default="576,2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--load", type=int, default=0, help="competing busy processes for the under-load comparison")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds of the under-load comparison")
    p.add_argument("--load-kind", choices=("spin", "torch"), default="spin",
                   help="spin: a one-core Python loop; torch: a CPU torch job at torch's default thread count")
    a = p.parse_args()
    if a.load:
        return under_load(a, a.load)
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
