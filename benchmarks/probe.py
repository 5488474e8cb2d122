"""The linear probe: one fold draw solved by lbfgs (zooforge's probe before) against the current
probe (Newton-CG, the mean over 5 fold draws), on demo-zoo features, both in this one run.

    python benchmarks/probe.py                        # 4 demo models x (shapes at 100 a class, textures at 20)
    python benchmarks/probe.py --rounds 7 --models 6

Per (model, target): the seconds of each, alternated, medians of ``--rounds``; and how much the fold
draw alone moves the score: the standard deviation over 5 fold seeds of a 1-draw probe against that
of a 5-draw probe (seeds 0, 5, 10, ... so that no two 5-draw probes share a draw). The second is what
the repeats are for; the first is what they cost.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from zooforge import metrics as M
from zooforge.zoo import load_catalogue, load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract

TARGETS = ("shapes?n=100", "textures?n=20")


def previous_probe(features, labels, folds: int = 5, seed: int = 0) -> float:
    """The baseline: one stratified k-fold draw, lbfgs on standardised features where N >= D (where
    N < D the previous probe already rotated onto the rows' span and used Newton-CG, as now)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from zooforge.metrics._validation import canonical_order
    from zooforge.metrics.linear_probe import _fold_correct

    x = np.asarray(features, dtype=np.float64)
    y = np.unique(labels, return_inverse=True)[1]
    order = canonical_order(x)
    x, y = x[order], y[order]
    accs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        splitter = StratifiedKFold(n_splits=min(folds, np.bincount(y).min()), shuffle=True, random_state=seed)
        for tr, te in splitter.split(x, y):
            if len(tr) < x.shape[1]:
                accs.append(_fold_correct(x[tr], y[tr], x[te], y[te], inverse_reg=1.0, max_iter=300).mean())
                continue
            scaler = StandardScaler().fit(x[tr])
            model = LogisticRegression(C=1.0, max_iter=300, solver="lbfgs").fit(scaler.transform(x[tr]), y[tr])
            accs.append(float(np.mean(model.predict(scaler.transform(x[te])) == y[te])))
    return float(np.mean(accs))


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    entries = [e for e in load_catalogue("demo") if e.pretrained][: args.models]
    print(f"{'model':26s} {'target':15s} {'N x D':>10s} {'before s':>9s} {'now s':>7s} {'ratio':>6s} "
          f"{'sd 1 draw':>9s} {'sd 5 draws':>10s}")
    ratios, sd_ratios = [], []
    for target in TARGETS:
        ds = load_dataset(f"demo:{target}")
        for entry in entries:
            fs = extract(Backbone.from_entry(entry), ds, progress=False, use_cache=False)
            x, y = fs.features, fs.labels
            before, now = [], []
            for _ in range(args.rounds):                                   # alternated
                before.append(timed(lambda: previous_probe(x, y)))
                now.append(timed(lambda: M.linear_probe(x, y)))
            sd_one = np.std([M.linear_probe(x, y, repeats=1, seed=s) for s in range(5)])
            sd_five = np.std([M.linear_probe(x, y, repeats=5, seed=5 * s) for s in range(5)])
            b, n = statistics.median(before), statistics.median(now)
            ratios.append(n / b)
            sd_ratios.append(sd_five / sd_one if sd_one > 0 else float("nan"))
            print(f"{entry.id:26s} {target:15s} {x.shape[0]:>4d}x{x.shape[1]:<5d} {b:9.3f} {n:7.3f} {n / b:6.2f} "
                  f"{sd_one:9.4f} {sd_five:10.4f}", flush=True)
    print(f"median time ratio now/before: {statistics.median(ratios):.2f}  "
          f"(5 draws by Newton-CG against 1 draw by lbfgs)")
    print(f"median fold-draw sd ratio 5 draws / 1 draw: {np.nanmedian(sd_ratios):.2f}  "
          f"(1/sqrt(5) = {1 / np.sqrt(5):.2f} if the draws were independent)")


if __name__ == "__main__":
    main()
