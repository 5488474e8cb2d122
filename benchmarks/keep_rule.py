"""How sure must DeRy's screen be before it keeps a mix over the single model, and on how many
validation images? A level and a fold count chosen by leave-one-target-out.

    python benchmarks/keep_rule.py [--task glyphs ...] [--budget 0.002 --budget 0.003] [--seed 0 --seed 1]
                                   [--epochs 8] [--per-class 100] [--report] [--pool]

The screen (``zooforge.reassembly.screen``) trains each shortlisted assembly and the LogME-best single
model that fits the budget on 80% of the training split and compares them on the other 20%: the best
of m mixes is kept only if it beats the single model by more than a margin, in standard errors of
the paired difference. The best of m noisy differences is biased upwards, so the margin should grow
with m: a one-sided test of level alpha over m comparisons (Bonferroni) needs z > z_(1 - alpha / m).

A single 80/20 split validates on a fifth of the training images; 5-fold cross-validation trains
5 times on 80% and validates on all of them (``ComposeConfig.screen_folds``), five times the
evidence for five times the screen's cost. For every (task, budget, seed) this script records what
the screen sees under 5 folds (each candidate's per-image out-of-fold correctness, fold by fold:
fold 0 alone is what a single 80/20 split sees) and, for every candidate, what the user would get:
the candidate trained on the whole training split with the same loop and epochs, scored on the
held-out split. Any rule (folds, alpha) can then be replayed without training. Per rule: the mean
held-out gain of the kept network over the single model, and how often it falls behind.
Leave-one-target-out: the rule that does best on the other tasks (ties: one split before 5 folds,
then the smaller, more cautious alpha) is scored on the held-out task, in every rotation.
Records go to ``benchmarks/.keep_rule/cells.jsonl`` (resumable); ``--report`` replays them alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
WORK = HERE / ".keep_rule"
TASKS = ("glyphs", "orientation", "shapes", "counting")
ALPHAS = (0.5, 0.32, 0.16, 0.1, 0.05, 0.01)          # 0.32 with one mix is the old rule: 1 SE
FOLDS = 5                                             # recorded; a rule uses fold 0 alone or all of them


def record_cell(task: str, budget: float, seed: int, epochs: int, per_class: int, screen_size: int) -> dict:
    from zooforge.config import Budget
    from zooforge.reassembly.plan import plan
    from zooforge.reassembly.screen import shortlist
    from zooforge.tuning.loop import TrainConfig, predict, train
    from zooforge.tuning.methods import inputs_for
    from zooforge.zoo import load_dataset

    ds = load_dataset(f"demo:{task}?n={per_class}")
    train_ds, test_ds = ds.split(0.8, seed)
    p = plan("demo", train_ds, budget, stages=3, seed=seed, screen=screen_size)
    pool = p.diverse + [s for s in p.solved.solutions if all(s.choice != d.choice for d in p.diverse)]
    cands = shortlist(p, pool, Budget(budget, None), screen_size, seed)
    rows = [(torch.as_tensor(fit), torch.as_tensor(val)) for fit, val in train_ds.fold_indices(FOLDS, seed + 1)]
    labels, y_test = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=64, seed=seed, progress=False)
    out = []
    for cand in cands:
        first = p.backbones[cand.solution.candidates[0].model]
        x, x_test = inputs_for(first, train_ds), inputs_for(first, test_ds)
        folds = []
        for fit, val in rows:
            torch.manual_seed(seed)
            model = p.assemble(cand.solution).model
            train(model, x[fit], labels[fit], cfg)
            folds.append((predict(model, x[val]) == labels[val]).int().tolist())
        torch.manual_seed(seed)
        full = p.assemble(cand.solution).model
        train(full, x, labels, cfg)
        test = float((predict(full, x_test) == y_test).double().mean())
        out.append({"models": [c.model for c in cand.solution.candidates], "fold_correct": folds,
                    "test_accuracy": test, "gmacs": cand.solution.gmacs})
    single = len(out) - 1 if len({*out[-1]["models"]}) == 1 else None
    return {"task": task, "budget": budget, "seed": seed, "epochs": epochs, "per_class": per_class,
            "folds": FOLDS, "candidates": out, "single": single}


Rule = tuple[int, float | None]       # (folds the screen validates on: 1 or FOLDS, alpha; None: single only)


def kept_by(cell: dict, rule: Rule) -> int:
    """The candidate the screen keeps under ``rule``."""
    from zooforge.reassembly.screen import keep

    folds, alpha = rule
    if alpha is None:
        return cell["single"]
    correct = [torch.tensor([x for f in c["fold_correct"][:folds] for x in f], dtype=torch.float64)
               for c in cell["candidates"]]
    return keep(correct, cell["single"], alpha=alpha)[0]


def gains(cells: list[dict], rule: Rule) -> np.ndarray:
    """Held-out accuracy of what the rule keeps minus the single model's, per cell with a single model."""
    return np.array([c["candidates"][kept_by(c, rule)]["test_accuracy"] - c["candidates"][c["single"]]["test_accuracy"]
                     for c in cells if c["single"] is not None])


def _name(rule: Rule) -> str:
    folds, alpha = rule
    return "single only" if alpha is None else f"{'80/20' if folds == 1 else f'{folds}-fold'} a={alpha:g}"


def _choose(cells: list[dict], rules: list[Rule]) -> Rule:
    """Best mean held-out gain; ties go to the cheaper screen (fewer folds), then the smaller alpha."""
    return max(rules, key=lambda r: (round(gains(cells, r).mean(), 12), -r[0], -r[1]))


def report(cells: list[dict]) -> None:
    rules = [(f, a) for f in (1, FOLDS) for a in ALPHAS]
    print(f"{len(cells)} cells; held-out gain of the kept network over the single model (points)\n")
    print(f"{'rule':<16} {'mean gain':>9} {'behind':>7} {'ahead':>6} {'mix kept':>8}")
    for r in [(1, None), *rules]:
        g = gains(cells, r)
        mixes = sum(kept_by(c, r) != c["single"] for c in cells if c["single"] is not None)
        print(f"{_name(r):<16} {100 * g.mean():>+9.2f} {int((g < 0).sum()):>7} {int((g > 0).sum()):>6} {mixes:>8}")
    tasks = sorted({c["task"] for c in cells})
    print("\nper task: mean held-out gain (points) by rule")
    print(f"{'rule':<16} " + " ".join(f"{t:>12}" for t in tasks))
    for r in rules:
        print(f"{_name(r):<16} " + " ".join(f"{100 * gains([c for c in cells if c['task'] == t], r).mean():>+12.2f}"
                                            for t in tasks))
    for pool, label in (([(1, a) for a in ALPHAS], "80/20 split only"), (rules, "folds and alpha")):
        print(f"\nleave one task out, choosing {label} on the other tasks, scored on the held-out one")
        held = []
        for t in tasks:
            best = _choose([c for c in cells if c["task"] != t], pool)
            g = gains([c for c in cells if c["task"] == t], best)
            held.extend(g)
            print(f"  {t:<12} chose {_name(best)}: held-out gain {100 * g.mean():+.2f}, "
                  f"behind in {int((g < 0).sum())}, "
                  f"ahead in {int((g > 0).sum())} of {len(g)}")
        held = np.array(held)
        print(f"  all held-out: mean gain {100 * held.mean():+.2f}, behind in {int((held < 0).sum())}, ahead in "
              f"{int((held > 0).sum())} of {len(held)}")
    chosen = _choose(cells, rules)
    g = gains(cells, chosen)
    print(f"\non every task: {_name(chosen)} (the rule's in-sample pick; what ships and why: zooforge.tuning.paired, "
          f"ComposeConfig.screen_folds); there, the kept network is >= the single model "
          f"in {int((g >= 0).sum())} of {len(g)} cells and ahead in {int((g > 0).sum())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", action="append")
    ap.add_argument("--budget", action="append", type=float)
    ap.add_argument("--seed", action="append", type=int)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--screen", type=int, default=4, help="shortlist size, the single model included")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--pool", action="store_true", help="report every stored cell, whatever its size and epochs")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    store = WORK / "cells.jsonl"
    cells = [json.loads(line) for line in store.read_text().splitlines() if line.strip()] if store.is_file() else []
    cells = [c for c in cells if c.get("folds") == FOLDS]          # cells recorded before the folds: run again
    done = {(c["task"], c["budget"], c["seed"], c["epochs"], c["per_class"]) for c in cells}
    if not args.report:
        for budget in args.budget or [0.002, 0.003]:
            for task in args.task or TASKS:
                for seed in args.seed or [0, 1]:
                    if (task, budget, seed, args.epochs, args.per_class) in done:
                        continue
                    cell = record_cell(task, budget, seed, args.epochs, args.per_class, args.screen)
                    cells.append(cell)
                    with store.open("a") as f:
                        f.write(json.dumps(cell) + "\n")
                    print(f"{task} {budget} seed {seed}: " + ", ".join(
                        f"{'+'.join(m.split('/')[-1] for m in c['models'])} {c['test_accuracy']:.3f}"
                        for c in cell["candidates"]), flush=True)
    report(cells if args.pool else [c for c in cells if c["epochs"] == args.epochs and c["per_class"] == args.per_class])


if __name__ == "__main__":
    main()
