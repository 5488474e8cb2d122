"""Where does Zoo-Tuning lose, and why? Each suspect of the recipe changed alone, on one architecture.

    python benchmarks/zootuning.py [--group convnext --group effnet] [--target shapes ...]
                                   [--seed 0 --seed 1] [--epochs 8] [--per-class 100] [--report]

Zoo-Tuning aggregates models of *one* architecture, so its fair baselines are that architecture's
members, each fine-tuned alone with the same loop, epochs and learning rate (1e-3):

* ``top member``: the group's LogME-best member alone (what a user who ranks first would train);
* ``best member``: the best of the members alone on the held-out split (an oracle: nobody knows it
  before fine-tuning them all).

Variants of Zoo-Tuning (our defaults: softmax gates, ``lead`` 3 on the top member, batch-norm
statistics averaged, no channel alignment), each differing from the default in one thing:

* ``lead 0``: gates start uniform (the plain average of the members' kernels);
* ``reference gates``: the reference ``ada_agg.py``'s independent sigmoid gates (starting at 0.5 each)
  and its ``backbone.py``'s reset batch-norm statistics, together (sigmoid gates scale the
  aggregate kernel, so the averaged statistics would not fit it);
* ``norm reset``: only the reset statistics;
* ``align``: the learned output-channel alignment (identity-initialised);
* ``2x epochs``: twice the training.

The groups: the demo zoo's ``convnext`` (3 trained + 1 random test_convnext), ``effnet`` (3 trained
test_efficientnet), ``resnet`` (2 trained + 1 random), and ``convnext2``, the four test_convnext2 of
benchmarks/selection.py's second zoo (one trained for 3 epochs only). Rows are appended to
``benchmarks/.zootuning/rows.jsonl`` (resumable); ``--report`` prints the tables alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
WORK = HERE / ".zootuning"
GROUPS = {   # name -> (zoo, catalogue glob)
    "convnext": ("demo", "demo/convnext-*"), "effnet": ("demo", "demo/effnet-*"), "resnet": ("demo", "demo/resnet-*"),
    "convnext2": ("timm2", "timm2/convnext2-*"),
}
TARGETS = ("shapes", "counting", "glyphs", "orientation")
VARIANTS = {   # name -> zootuning() options (epochs scale separately)
    "default": {},
    "lead 0": {"lead": 0.0},
    "reference gates": {"gate": "sigmoid", "norm_stats": "reset", "lead": 0.0},
    "norm reset": {"norm_stats": "reset"},
    "align": {"align": True},
    "2x epochs": {"epochs": 2},
}


def catalogue_of(group: str):
    from aggregate import catalogue_of as zoo_catalogue      # benchmarks/aggregate.py: the zoos by name

    return zoo_catalogue(GROUPS[group][0])


def members_alone(group: str, data: str, seed: int, epochs: int) -> dict:
    from zooforge.selection.aggregate._common import load_members, split_dataset
    from zooforge.tuning.loop import TrainConfig
    from zooforge.tuning.tune import tune

    _, train_ds, _ = split_dataset(data, 0.8, seed)
    catalogue = catalogue_of(group)
    members, scores = load_members(catalogue, [GROUPS[group][1]], 99, train_ds)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=32, seed=seed, progress=False)
    acc = {b.id: tune(b.id, data, "full", catalogue=catalogue, loop=cfg, seed=seed).accuracy for b in members}
    top = max(scores, key=scores.get)
    return {"top member": acc[top], "best member": max(acc.values()), "members": acc, "top": top}


def variant(group: str, name: str, data: str, seed: int, epochs: int) -> dict:
    from zooforge.selection.aggregate import zootuning
    from zooforge.tuning.loop import TrainConfig

    options = dict(VARIANTS[name])
    cfg = TrainConfig(epochs=epochs * options.pop("epochs", 1), lr=1e-3, batch_size=32, seed=seed, progress=False)
    r = zootuning(catalogue_of(group), data, models=[GROUPS[group][1]], top_k=None, config=cfg, seed=seed, **options)
    return {"accuracy": r.accuracy, "collapsed": r.extra.get("collapsed_accuracy"), "seconds": r.seconds,
            "weights": [round(w, 3) for w in r.weights], "members": r.members}


def report(rows: list[dict], epochs: int, per_class: int) -> None:
    rows = [r for r in rows if r["epochs"] == epochs and r["per_class"] == per_class]
    cells = sorted({(r["group"], r["target"], r["seed"]) for r in rows})
    at = {(r["group"], r["target"], r["seed"], r["row"]): r for r in rows}
    names = ["top member", "best member", *VARIANTS]
    print(f"{epochs} epochs, {per_class} images a class; accuracy on the held-out 20% (collapsed network in brackets)\n")
    print(f"{'group':<9} {'target':<12} {'seed':>4} " + " ".join(f"{n:>15}" for n in names))
    for cell in cells:
        out = []
        for n in names:
            r = at.get(cell + (n,))
            if r is None:
                out.append(f"{'':>15}")
            elif r.get("collapsed") is not None:
                out.append(f"{r['accuracy']:>7.3f} ({r['collapsed']:.3f})")
            else:
                out.append(f"{r['accuracy']:>15.3f}")
        print(f"{cell[0]:<9} {cell[1]:<12} {cell[2]:>4} " + " ".join(out))
    print(f"\n{'row':<16} {'cells':>5} {'mean':>6} {'- top member':>12} {'>= top':>7} {'- best member':>13}")
    for n in names:
        pairs = [(at[c + (n,)]["accuracy"], at[c + ("top member",)]["accuracy"], at[c + ("best member",)]["accuracy"])
                 for c in cells if c + (n,) in at and c + ("top member",) in at]
        if pairs:
            a = np.array(pairs)
            print(f"{n:<16} {len(a):>5} {a[:, 0].mean():>6.3f} {(a[:, 0] - a[:, 1]).mean():>+12.3f} "
                  f"{int((a[:, 0] >= a[:, 1]).sum()):>3}/{len(a):<3} {(a[:, 0] - a[:, 2]).mean():>+13.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", action="append", choices=tuple(GROUPS))
    ap.add_argument("--target", action="append")
    ap.add_argument("--seed", action="append", type=int)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    WORK.mkdir(exist_ok=True)
    store = WORK / "rows.jsonl"
    rows = [json.loads(line) for line in store.read_text().splitlines() if line.strip()] if store.is_file() else []
    done = {(r["group"], r["target"], r["seed"], r["row"], r["epochs"], r["per_class"]) for r in rows}

    def keep(record):
        rows.append(record)
        with store.open("a") as f:
            f.write(json.dumps(record) + "\n")

    if not args.report:
        for group in args.group or ["convnext", "effnet"]:
            for target in args.target or TARGETS:
                data = f"demo:{target}?n={args.per_class}"
                for seed in args.seed or [0, 1]:
                    base = dict(group=group, target=target, seed=seed, epochs=args.epochs, per_class=args.per_class)
                    key = (group, target, seed)
                    if key + ("top member", args.epochs, args.per_class) not in done:
                        alone = members_alone(group, data, seed, args.epochs)
                        for n in ("top member", "best member"):
                            keep(base | {"row": n, "accuracy": alone[n], "members": alone["members"], "top": alone["top"]})
                    for name in VARIANTS:
                        if key + (name, args.epochs, args.per_class) not in done:
                            keep(base | {"row": name} | variant(group, name, data, seed, args.epochs))
                    print(f"{group} {target} seed {seed} done", flush=True)
    report(rows, args.epochs, args.per_class)


if __name__ == "__main__":
    main()
