"""Fine-tuning methods and aggregation methods on demo targets: same data, epochs and seed.

    python benchmarks/tuning.py [--epochs 8] [--per-class 150]

Table 1: for each method on two demo targets and one ViT (where adapters and LoRA are usually
judged) and one CNN: held-out accuracy, trainable-parameter ratio, peak memory and time; then each
method's accuracy as a share of full fine-tuning's. On CPU the memory column is the process's resident
set after the run (torch's CPU allocator has no per-run peak counter); on GPU it is the CUDA peak.
Table 2: B-Tuning, Zoo-Tuning and Hub-Pathway vs fine-tuning the single top-ranked (LogME) model.
"""

from __future__ import annotations

import argparse

import torch

torch.set_num_threads(2)

from zooforge.selection.aggregate import btuning, hubpathway, zootuning  # noqa: E402
from zooforge.selection.aggregate._common import load_members, split_dataset  # noqa: E402
from zooforge.tuning.loop import TrainConfig  # noqa: E402
from zooforge.tuning.methods import METHODS  # noqa: E402
from zooforge.tuning.tune import tune  # noqa: E402

LR = {"linear": 1e-2, "full": 1e-3, "bitfit": 5e-3, "adapter": 5e-3, "adaptformer": 5e-3, "lora": 5e-3, "ia3": 1e-2}


def methods_table(targets, models, epochs, per_class):
    print(f"Table 1: methods, {per_class} images/class (80/20 split), {epochs} epochs, seed 0, per-method peak lr")
    print(f"{'target':<10} {'model':<22} {'method':<12} {'acc':>6} {'% of full':>9} {'trainable':>10} "
          f"{'mem MB':>7} {'s':>6}")
    for task in targets:
        data = f"demo:{task}?n={per_class}"
        for model in models:
            rows = {}
            for method in METHODS:
                cfg = TrainConfig(epochs=epochs, lr=LR[method], batch_size=64, seed=0, progress=False)
                rows[method] = tune(model, data, method, catalogue="demo", config=cfg)
            full = rows["full"].accuracy
            for method, r in rows.items():
                print(f"{task:<10} {model.split('/')[1]:<22} {method:<12} {r.accuracy:>6.3f} "
                      f"{100 * r.accuracy / max(full, 1e-9):>8.1f}% {100 * r.trainable_ratio:>9.2f}% "
                      f"{r.peak_memory_mb:>7.0f} {r.seconds:>6.1f}")


def aggregation_table(targets, epochs, per_class):
    print(f"\nTable 2: aggregation vs the single top-ranked model (full fine-tune), {epochs} epochs, seed 0")
    print(f"{'target':<10} {'method':<22} {'acc':>6} {'trainable':>10} {'total':>10} {'s':>6}  members (weights)")
    for task in targets:
        data = f"demo:{task}?n={per_class}"
        cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=64, seed=0, progress=False)
        _, train_ds, _ = split_dataset(data)
        top, _ = load_members("demo", None, 1, train_ds)
        single = tune(top[0].id, data, "full", catalogue="demo", config=cfg)
        print(f"{task:<10} {'single top-1 (' + top[0].id.split('/')[1] + ')':<22} {single.accuracy:>6.3f} "
              f"{single.trainable_params:>10,} {single.total_params:>10,} {single.seconds:>6.1f}")
        runs = [("btuning (top-3)", lambda: btuning("demo", data, top_k=3, config=cfg)),
                ("btuning (top-3, λ=1)", lambda: btuning("demo", data, top_k=3, config=cfg, strength=1.0)),
                ("btuning (top-3, λ auto)", lambda: btuning("demo", data, top_k=3, config=cfg, strength="auto")),
                ("zootuning (convnext)", lambda: zootuning("demo", data, models=["demo/convnext-*"], config=cfg)),
                ("hubpathway (top-4, k=2)", lambda: hubpathway("demo", data, candidates=4, top_k=2, config=cfg))]
        for name, run in runs:
            r = run()
            members = ", ".join(f"{m.split('/')[1]} ({w:.2f})" for m, w in zip(r.members, r.weights))
            print(f"{task:<10} {name:<22} {r.accuracy:>6.3f} {r.trainable_params:>10,} {r.total_params:>10,} "
                  f"{r.seconds:>6.1f}  {members}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=150)
    a = ap.parse_args()
    targets = ("shapes", "textures")
    methods_table(targets, ("demo/vit-glyphs", "demo/resnet-textures"), a.epochs, a.per_class)
    aggregation_table(targets, a.epochs, a.per_class)
