"""LogME (one shared eigendecomposition, vectorised over classes) vs a straightforward per-class
implementation (one SVD per class, Python loop), same data, one run; then every estimator's time.

    python benchmarks/metrics.py                 # N=20000, D=1024, C=100 (the issue's setting)
    python benchmarks/metrics.py --n 5000 --d 512 --c 20
"""

import argparse
import time

import numpy as np
import torch

from zooforge import metrics as M


def per_class_logme(f, y):
    """Baseline: for every class, its own SVD of F and the fixed-point loop (exact evidence)."""
    n, d = f.shape
    out = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        sigma = s**2
        keep = sigma > 1e-12 * sigma.max()
        sigma, u = sigma[keep], u[:, keep]
        z = (u.T @ t) ** 2
        outside = t @ t - z.sum()
        alpha = beta = 1.0
        for _ in range(200):
            ratio = alpha / beta
            gamma = (sigma / (sigma + ratio)).sum()
            m2 = (sigma * z / (sigma + ratio) ** 2).sum()
            res2 = (z * (ratio / (sigma + ratio)) ** 2).sum() + outside
            alpha, beta = gamma / m2, (n - gamma) / res2
            if abs(alpha / beta - ratio) / ratio < 1e-10:
                break
        log_det = np.log(alpha + beta * sigma).sum() + (d - sigma.size) * np.log(alpha)
        out.append((d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * res2 - alpha / 2 * m2
                    - log_det / 2 - n / 2 * np.log(2 * np.pi)) / n)
    return float(np.mean(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--c", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.c, args.n)
    f = rng.normal(size=(args.n, args.d)) + 0.5 * np.eye(args.c, args.d)[y]
    t0 = time.perf_counter()
    ours = M.logme(f, y)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = per_class_logme(f, y)
    t_base = time.perf_counter() - t0
    print(f"LogME N={args.n} D={args.d} C={args.c}: zooforge {t_ours:.2f}s, per-class SVD loop {t_base:.2f}s, "
          f"speed-up {t_base / t_ours:.1f}x, |difference| {abs(ours - base):.2e} (relative {abs(ours - base) / abs(base):.1e})")


if __name__ == "__main__":
    main()
