"""Are the resample-free intervals as wide as they should be? Each estimator's interval is meant to
show how much its score would move on another sample of the same data. The demo generator can draw
that other sample, so the true spread is measurable: score each model on many fresh datasets of
one task, take the standard deviation across them, and compare it with the spread that one dataset's
draws claim, by the influence function (the default) and by delete-d subsampling (``--intervals all``).

    python benchmarks/intervals.py [--task shapes] [--n-per-class 60] [--datasets 30]

Prints, per model and estimator, the true SD and the ratios (draws' SD / true SD) of both methods,
then their medians. 1.0 is calibrated; the fresh datasets' class counts vary, the stratified draws'
do not, so slightly below 1 is expected. (The cost of the intervals is in ``benchmarks/rank.py
--interval-ratio``.)
"""

import argparse

import numpy as np
import torch

from zooforge.metrics import get_estimator
from zooforge.selection.intervals import delete_d_calibrate, resamples
from zooforge.selection.rank import _resampled
from zooforge.zoo import load_catalogue, load_dataset
from zooforge.zoo.backbone import Backbone
from zooforge.zoo.features import extract

MODELS = ("demo/effnet-shapes", "demo/convnext-shapes", "demo/resnet-textures", "demo/vit-glyphs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="shapes")
    ap.add_argument("--n-per-class", type=int, default=60)
    ap.add_argument("--datasets", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--metric", action="append", help="default: logme, leep, nce, linear_probe")
    args = ap.parse_args()
    torch.set_num_threads(2)
    metrics = args.metric or ["logme", "leep", "nce", "linear_probe"]
    catalogue = {e.id: e for e in load_catalogue("demo")}
    ratios = {m: {"influence": [], "delete-d": []} for m in metrics}
    print(f"{'model':24s} {'estimator':13s} {'true SD':>9s} {'influence':>9s} {'delete-d':>9s}   (SD ratios)")
    for model_id in MODELS:
        backbone = Backbone.from_entry(catalogue[model_id])
        seen = {m: {"score": [], "influence": [], "delete-d": []} for m in metrics}
        for i in range(args.datasets):
            ds = load_dataset(f"demo:{args.task}?n={args.n_per_class}&seed={100 + i}")
            fs = extract(backbone, ds, progress=False)
            inputs = fs.inputs()
            shared = resamples(ds.labels, args.rounds, i)
            for m in metrics:
                est = get_estimator(m)
                score, g = est.with_influence(fs.labels, inputs)
                seen[m]["score"].append(score)
                seen[m]["influence"].append(shared.draw(score, g, None).std())
                if i < 8:                             # re-scoring is the slow one: fewer datasets
                    raw = np.array([_resampled(est, fs, inputs, idx, fs.task) for idx in shared.indices])
                    seen[m]["delete-d"].append(delete_d_calibrate(raw, score, shared.indices.shape[1], len(ds)).std())
        for m in metrics:
            true_sd = float(np.std(seen[m]["score"], ddof=1))
            r_if, r_dd = np.mean(seen[m]["influence"]) / true_sd, np.mean(seen[m]["delete-d"]) / true_sd
            ratios[m]["influence"].append(r_if)
            ratios[m]["delete-d"].append(r_dd)
            print(f"{model_id:24s} {m:13s} {true_sd:9.4f} {r_if:9.2f} {r_dd:9.2f}")
    print("\nmedian SD ratio over models (1.0 = calibrated):")
    for m in metrics:
        print(f"  {m:13s} influence {np.median(ratios[m]['influence']):.2f}   delete-d {np.median(ratios[m]['delete-d']):.2f}")


if __name__ == "__main__":
    main()
