"""Every registered estimator's time and peak memory over N x D x C, and how its time grows with N.

    python benchmarks/metrics_grid.py                          # N in {1k, 10k, 50k}, D in {512, 2048}, C in {10, 100}
    python benchmarks/metrics_grid.py --n 1000 10000 --d 512 --c 10 --timeout 60

Each (estimator, N, D, C) runs in its own subprocess, so the peak memory is that run's alone: the
resident set is sampled every 5 ms and the peak minus the resident set after the inputs were made is
reported (the inputs themselves, N x D float32, are not counted). A run past ``--timeout`` seconds is
killed and shown as ``>T``. The features are isotropic noise plus class centres: the worst case for
the estimators that reduce by PCA to a share of the variance (N-LEEP keeps ~80% of D here, where real
backbone features need far fewer components). Growth with N is the exponent k in time ~ N^k fitted between the smallest
and largest N that finished, at the largest D and C; the estimators that subsample past a size
(OTCE's exact transport, PARC's N x N correlations) are printed with their caps.
"""

import argparse
import json
import math
import subprocess
import sys
import time

CHILD = r"""
import json, sys, threading, time
import numpy as np, psutil, torch
torch.set_num_threads({threads})
from zooforge.metrics import REGISTRY
name, n, d, c = {name!r}, {n}, {d}, {c}
rng = np.random.default_rng(0)
y = np.arange(n) % c
rng.shuffle(y)
centres = rng.normal(size=(c, d)).astype(np.float32)
f = (rng.normal(size=(n, d)).astype(np.float32) + 0.7 * centres[y])
z = 100
logits = rng.normal(size=(n, z)) + 2.0 * np.eye(z)[y % z]
probs = np.exp(logits - logits.max(1, keepdims=True)); probs /= probs.sum(1, keepdims=True)
src_y = np.arange(n) % c
src_f = (rng.normal(size=(n, d)).astype(np.float32) + 0.7 * centres[src_y])
inputs = {{"features": f, "source_probs": probs, "source_preds": probs.argmax(1),
           "source_features": src_f, "source_labels": src_y}}
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
stop = False
def watch():
    while not stop:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)
t = threading.Thread(target=watch, daemon=True); t.start()
est = REGISTRY[name]
t0 = time.perf_counter()
score = est(y, inputs)
seconds = time.perf_counter() - t0
stop = True; t.join()
print(json.dumps({{"seconds": seconds, "peak_mb": (peak[0] - base) / 2**20, "score": score}}))
"""


def run(name, n, d, c, timeout, threads):
    code = CHILD.format(name=name, n=n, d=d, c=c, threads=threads)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "timeout": timeout}
    if out.returncode != 0:
        return {"seconds": None, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    from zooforge.metrics import REGISTRY

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--d", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--c", type=int, nargs="+", default=[10, 100])
    p.add_argument("--metric", nargs="+", default=list(REGISTRY))
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write every measurement here")
    args = p.parse_args()
    results = {}
    start = time.perf_counter()
    for name in args.metric:
        for d in args.d:
            for c in args.c:
                for n in args.n:
                    r = run(name, n, d, c, args.timeout, args.threads)
                    results[(name, n, d, c)] = r
                    shown = (f"{r['seconds']:.2f}s, +{r['peak_mb']:.0f} MiB" if r.get("seconds") is not None
                             else f">{r['timeout']:.0f}s" if "timeout" in r else f"error: {r['error']}")
                    print(f"{name:14s} N={n:6d} D={d:5d} C={c:4d}: {shown}", flush=True)
                    if r.get("seconds") is None:
                        break              # larger N only takes longer
    print(f"\ngrowth of time with N (time ~ N^k, largest D and C; {args.threads} threads; "
          f"{time.perf_counter() - start:.0f} s in all):")
    d, c = max(args.d), max(args.c)
    for name in args.metric:
        done = [(n, results[(name, n, d, c)]["seconds"]) for n in args.n
                if results.get((name, n, d, c), {}).get("seconds") is not None]
        if len(done) >= 2 and done[0][1] > 0:
            (n0, t0), (n1, t1) = done[0], done[-1]
            k = math.log(t1 / t0) / math.log(n1 / n0)
            print(f"  {name:14s} k = {k:.2f} (N {n0} -> {n1}: {t0:.2f}s -> {t1:.2f}s)")
        else:
            print(f"  {name:14s} too few finished sizes to fit")
    print("  subsampling: otce_self, f_otce, jc_otce solve exact OT on at most 1,000 samples per side "
          "(stratified; cubic in that size, so constant past it); parc correlates at most 5,000 samples "
          "(two N x N matrices); nleep fits its Gaussian mixture on PCA-reduced features.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{"metric": k[0], "n": k[1], "d": k[2], "c": k[3]} | v for k, v in results.items()], fh, indent=1)


if __name__ == "__main__":
    main()
