"""Fine-tuning methods and aggregation methods on demo targets: same data, epochs and seed.

    python benchmarks/tuning.py [--epochs 8] [--per-class 150] [--text-epochs 5] [--skip-text]
                                [--skip-methods | --skip-aggregation]

Table 1: every method on two image targets with a demo CNN and a demo ViT, and on the two text
targets with the real all-MiniLM-L6-v2 (a pretrained transformer, the case adapters and LoRA are
usually judged on; trained on 20 sentences per class and scored on 80, so the task is not saturated).
Each method gets its own peak learning rate chosen by validation inside the training split
(``tune(..., lr="auto")``, the method's ``LR_GRID``), so no method is judged at another's rate.
Columns: held-out accuracy, the rate chosen, accuracy as a share of full fine-tuning's, trainable
share, peak memory and time (of the final run). On CPU the memory column is the process's resident
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

# (label, method, options): every method, plus LoRA at rank 2, since rank 8 on the demo CNNs' narrow
# convolutions is more than 5% of their weights (on ResNet-50 widths it is about 1%).
VARIANTS = [(m, m, {}) for m in METHODS] + [("lora r=2", "lora", {"rank": 2})]


def methods_table(cases, seed):
    print("Table 1: methods; peak lr per method chosen by validation (80/20 of the training split), seed "
          f"{seed}")
    print(f"{'data':<24} {'model':<20} {'method':<12} {'acc':>6} {'lr':>8} {'% of full':>9} {'trainable':>10} "
          f"{'mem MB':>7} {'s':>6}")
    for data, model, catalogue, split, epochs in cases:
        rows = {}
        for label, method, options in VARIANTS:
            cfg = TrainConfig(epochs=epochs, batch_size=32 if catalogue == "text-demo" else 64, seed=seed,
                              progress=False)
            rows[label] = tune(model, data, method, catalogue=catalogue, loop=cfg, lr="auto", split=split,
                               seed=seed, **options)
        full = rows["full"].accuracy
        for label, r in rows.items():
            print(f"{data:<24} {model.split('/')[1][:20]:<20} {label:<12} {r.accuracy:>6.3f} {r.lr:>8.1e} "
                  f"{100 * r.accuracy / max(full, 1e-9):>8.1f}% {100 * r.trainable_ratio:>9.2f}% "
                  f"{r.peak_memory_mb:>7.0f} {r.seconds:>6.1f}", flush=True)


def aggregation_table(targets, epochs, per_class):
    print(f"\nTable 2: aggregation vs the single top-ranked model (full fine-tune), {epochs} epochs, seed 0")
    print(f"{'target':<10} {'method':<22} {'acc':>6} {'trainable':>10} {'total':>10} {'s':>6}  members (weights)")
    for task in targets:
        data = f"demo:{task}?n={per_class}"
        cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=64, seed=0, progress=False)
        _, train_ds, _ = split_dataset(data)
        top = load_members("demo", None, 1, train_ds)
        single = tune(top[0].id, data, "full", catalogue="demo", loop=cfg)
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
    ap.add_argument("--text-epochs", type=int, default=5)
    ap.add_argument("--skip-text", action="store_true", help="no MiniLM rows (without the text-demo extra)")
    ap.add_argument("--skip-methods", action="store_true", help="only Table 2")
    ap.add_argument("--skip-aggregation", action="store_true", help="only Table 1")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    targets = ("shapes", "textures")
    cases = [(f"demo:{t}?n={a.per_class}", m, "demo", 0.8, a.epochs)
             for t in targets for m in ("demo/vit-glyphs", "demo/resnet-textures")]
    if not a.skip_text:
        cases += [(f"demo:{t}?n=100", "text/all-MiniLM-L6-v2", "text-demo", 0.2, a.text_epochs)
                  for t in ("intent", "topics")]
    if not a.skip_methods:
        methods_table(cases, a.seed)
    if not a.skip_aggregation:
        aggregation_table(targets, a.epochs, a.per_class)
