"""LogME (one shared eigendecomposition, vectorised over classes) vs a straightforward per-class
implementation (one SVD per class, Python loop), same data, one run. Then the cost of searching for
the global maximum of the evidence (log-t scan + golden section, zooforge's) against the MacKay
fixed point from alpha = beta = 1 on the same shared spectrum (what zooforge ran before, and what
the references run): alternated, median of 5, and how much evidence the fixed point leaves behind.

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


def fixed_point_logme(f, y):
    """Baseline for the search's cost: the same shared spectrum, then the fixed-point iteration
    from alpha = beta = 1 for all classes at once (zooforge's LogME before the global search)."""
    from zooforge.metrics._torch import feature_tensor, onehot
    from zooforge.metrics.logme import _spectrum

    ft = feature_tensor(f)
    codes = np.unique(y, return_inverse=True)[1]
    yt = onehot(codes, int(codes.max()) + 1, ft)
    n, d = ft.shape
    sigma, z, _ = _spectrum(ft, yt)
    s = sigma[:, None]
    outside = (yt.square().sum(0) - z.sum(0)).clamp_min(0)
    alpha = torch.ones(yt.shape[1], dtype=ft.dtype)
    beta = torch.ones_like(alpha)
    for _ in range(200):
        t = alpha / beta
        den = s + t
        gamma = (s / den).sum(0)
        m2 = (s * z / den.square()).sum(0).clamp_min(1e-300)
        res2 = ((z * (t / den).square()).sum(0) + outside).clamp_min(1e-300)
        alpha, beta = gamma / m2, (n - gamma) / res2
        if bool((((alpha / beta) - t).abs() / t < 1e-10).all()):
            break
    t = alpha / beta
    den = s + t
    m2 = (s * z / den.square()).sum(0)
    res2 = (z * (t / den).square()).sum(0) + outside
    log_det = torch.log(alpha + beta * s).sum(0) + (d - sigma.shape[0]) * torch.log(alpha)
    ev = (d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - beta / 2 * res2 - alpha / 2 * m2
          - log_det / 2 - n / 2 * np.log(2 * np.pi)) / n
    return ev.numpy()


def search_vs_fixed_point(f, y, repeats=5):
    times = {"search": [], "fixed point": []}
    for _ in range(repeats):                       # alternated, so load on the machine hits both
        t0 = time.perf_counter()
        ours = M.logme_fit(f, y).evidence
        times["search"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fixed = fixed_point_logme(f, y)
        times["fixed point"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    gain = ours - fixed
    print(f"  global search {med['search']:.3f}s vs fixed point {med['fixed point']:.3f}s (medians of {repeats}): "
          f"ratio {med['search'] / med['fixed point']:.3f}; evidence gained per class: max {gain.max():.2e}, "
          f"min {gain.min():.2e} (never negative: {bool((gain >= -1e-9).all())})")


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
    print(f"LogME global maximum vs first fixed point, N={args.n} D={args.d} C={args.c}:")
    search_vs_fixed_point(f, y)
    small = f[: max(args.d // 2, args.c * 2)], y[: max(args.d // 2, args.c * 2)]
    print(f"the same with N={small[0].shape[0]} < D={args.d}:")
    search_vs_fixed_point(*small)


if __name__ == "__main__":
    main()
