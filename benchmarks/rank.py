"""Ranking the demo zoo on one task: cold (empty cache, extraction) vs warm (cache hits), and what
scoring every estimator on the cached features costs, all as ratios measured in this one run.

    python benchmarks/rank.py [--n-per-class 500] [--task shapes]            # the 14-model demo zoo
    python benchmarks/rank.py --zoo timm --n-per-class 100                     # 12 real timm architectures

``--zoo demo`` ranks the demo zoo: 32 x 32 inputs and ~0.003 GMACs per image, so extraction is
nearly free and the fixed costs (model loading, scoring) bound the ratio. ``--zoo timm`` ranks 12
real ImageNet architectures (random init: no weights can be downloaded here; the cost is the same)
at 224 x 224, where extraction costs what it costs in real use.

Targets (issue #5): warm >= 20x faster than cold; scoring all estimators on cached features < 10%
of the cold time. Bootstrap intervals are off in the timed runs (``--bootstrap`` turns them on) so
that the ratio measures the cache, not resampling; their cost is printed separately.
"""

import argparse
import tempfile
import time

import torch

from zooforge.metrics import REGISTRY
from zooforge.selection.intervals import resamples
from zooforge.selection.rank import DEFAULT_METRICS, rank, score_featureset
from zooforge.zoo import CatalogueEntry, load_catalogue, load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract

REAL_ZOO = ("resnet18", "resnet26", "mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0",
            "regnety_002", "convnext_atto", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "ghostnet_100",
            "mnasnet_100", "edgenext_xx_small")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-per-class", type=int, default=500)
    p.add_argument("--task", default="shapes")
    p.add_argument("--bootstrap", type=int, default=0)
    p.add_argument("--zoo", choices=["demo", "timm"], default="demo")
    p.add_argument("--rounds", type=int, default=20, help="resampling rounds timed at the end")
    p.add_argument("--interval-ratio", action="store_true",
                   help="also time a warm rank with the CLI's default 100 draws, and with --intervals all, "
                        "against --bootstrap 0 (alternated, 2 runs each, means; target <= 1.5x, issue #16)")
    args = p.parse_args()
    torch.set_num_threads(2)
    entries = load_catalogue("demo") if args.zoo == "demo" else [
        CatalogueEntry(id=f"timm/{name}", source="timm", name=name, pretrained=False) for name in REAL_ZOO]
    ds = load_dataset(f"demo:{args.task}?n={args.n_per_class}")
    metrics = list(DEFAULT_METRICS)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        cold = rank(entries, ds, metrics, cache_dir=cache, bootstrap=args.bootstrap, progress=False)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = rank(entries, ds, metrics, cache_dir=cache, bootstrap=args.bootstrap, progress=False)
        t_warm = time.perf_counter() - t0
        assert cold.drop("samples_per_s").equals(warm.drop("samples_per_s")), "warm ranking differs from cold"
        # every registered estimator on the cached features (model loading excluded: only scoring)
        featuresets = [extract(Backbone.from_entry(e), ds, cache_dir=cache, progress=False) for e in entries]
        t0 = time.perf_counter()
        per_metric = {m: 0.0 for m in REGISTRY}
        for fs in featuresets:
            for m in REGISTRY:
                t1 = time.perf_counter()
                score_featureset(fs, [m])
                per_metric[m] += time.perf_counter() - t1
        t_score_all = time.perf_counter() - t0
        t0 = time.perf_counter()
        for fs in featuresets:
            score_featureset(fs, metrics, resamples=resamples(fs.labels, args.rounds, 0))
        t_boot = time.perf_counter() - t0
        ratio = None
        if args.interval_ratio:
            runs = {"none": dict(bootstrap=0), "fast": dict(bootstrap=100), "all": dict(bootstrap=100, intervals="all")}
            times = {k: [] for k in runs}
            for _ in range(2):
                for key, kw in runs.items():
                    t0 = time.perf_counter()
                    rank(entries, ds, metrics, cache_dir=cache, progress=False, **kw)
                    times[key].append(time.perf_counter() - t0)
            ratio = {k: sum(v) / len(v) for k, v in times.items()}
    print(f"{len(entries)} {args.zoo} models on demo:{args.task} ({len(ds)} images, {ds.num_classes} classes), "
          f"{len(metrics)} default estimators, 2 threads")
    print(f"cold (extract + score): {t_cold:.2f} s; warm (cache hits + score): {t_warm:.2f} s; "
          f"warm is {t_cold / t_warm:.1f}x faster (target >= 20x)")
    print(f"scoring all {len(REGISTRY)} estimators on cached features: {t_score_all:.2f} s = "
          f"{100 * t_score_all / t_cold:.1f}% of cold (target < 10%)")
    print("  per estimator, summed over models: " +
          ", ".join(f"{m} {s:.2f}s" for m, s in sorted(per_metric.items(), key=lambda kv: -kv[1])))
    print(f"{args.rounds} resampling rounds of the {len(metrics)} default estimators, all models: {t_boot:.2f} s "
          f"({t_boot / args.rounds:.2f} s a round; the CLI's default is 100)")
    if ratio is not None:
        print(f"warm rank with the default 100 draws (influence functions; resampling only for the ordering's "
              f"estimators without one) {ratio['fast']:.2f} s vs --bootstrap 0 {ratio['none']:.2f} s: "
              f"{ratio['fast'] / ratio['none']:.2f}x (target <= 1.5x); --intervals all (every estimator, "
              f"re-scored on 100 subsamples) {ratio['all']:.2f} s: {ratio['all'] / ratio['none']:.2f}x "
              f"(means of 2, alternated)")


if __name__ == "__main__":
    main()
