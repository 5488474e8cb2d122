"""DeRy benchmarks.

    python benchmarks/compose.py            # both parts
    python benchmarks/compose.py --solver   # only the partition + solve timing

1. Partition + solve time on synthetic instances (random representations, so CKA is real work):
   30 models x 4 stages, and how the time grows with models and stages.
2. On four demo targets (glyphs, orientation, shapes, counting) and two GMACs budgets below the largest zoo model
   (0.002: the effnets and resnets do not fit; 0.003: only the resnets do not): accuracy of the DeRy
   assembly vs the best single zoo model within the same budget, both trained by the same loop for the
   same epochs, 2 seeds; prints both, the difference and the screened candidates.
   ``--zoo timm2``: the same on benchmarks/selection.py's second image zoo (built in its work folder),
   budgets 0.0022 (only the four ConvNeXt-2 fit whole) and 0.003 (the EfficientNets fit too; the
   CoAtNet, the ViTs and the NFNet do not), set from the zoo's GMACs alone. ``--zoo timm3``: its third
   image zoo, budgets 0.0021 (the ViT-2s and ConvNeXt-3s fit whole) and 0.003 (the EfficientNet-EvoS
   too; the ViT-4s do not), chosen the same way. ``--zoo timm4``: its fourth, budgets 0.0023 (the
   ByobNets and EfficientNet-GNs fit whole) and 0.004 (the ViT-3s too; the ResNets, just over, and
   the MaxViTs do not), set from the GMACs alone before any run. ``--zoo timm5``: its fifth, budgets
   0.0015 (the MambaOuts and ViTs fit whole) and 0.0025 (the ConvNeXt-2s and EfficientNets too; the
   NFNets, the zoo's best on most targets, do not), set the same way. ``--zoo timm6``: its sixth,
   budgets 0.0015 (only the ConvNeXts fit whole) and 0.0025 (the EfficientNet-LNs and EvoS too; the
   ViT-relpos and CoAtNets do not), set from the GMACs alone before any run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

from zooforge.config import ComposeConfig  # noqa: E402
from zooforge.reassembly.compose import compose  # noqa: E402
from zooforge.reassembly.partition import block_graph, partition  # noqa: E402
from zooforge.reassembly.solve import Candidate, Problem, solve  # noqa: E402


def synthetic(models: int, stages: int, blocks: int = 8, probe: int = 256, seed: int = 0) -> tuple[float, float, str]:
    rng = np.random.default_rng(seed)
    reps = {f"m{i}": [rng.normal(size=(probe, 32)) for _ in range(blocks)] for i in range(models)}
    t0 = time.perf_counter()
    graph = block_graph(reps)
    part = partition(reps, stages, graph=graph)
    t_part = time.perf_counter() - t0
    ids = list(reps)
    cands = [[Candidate(m, (part.cuts[m][k], part.cuts[m][k + 1]), int(rng.integers(1e5, 5e6)),
                        float(rng.uniform(0.1, 2.0)), float(rng.normal())) for m in ids] for k in range(stages)]
    n = len(ids)
    compat = [rng.uniform(0, 1, (n, n)) for _ in range(stages - 1)]
    sp = [rng.integers(0, 100_000, (n, n)) for _ in range(stages - 1)]
    sg = [rng.uniform(0, 0.05, (n, n)) for _ in range(stages - 1)]
    t0 = time.perf_counter()
    result = solve(Problem(cands, compat, sp, sg), budget_gmacs=0.6 * stages, budget_params=stages * 2.0, top_k=1)
    return t_part, time.perf_counter() - t0, result.status


def solver_part() -> None:
    print("partition + solve on synthetic instances (8 blocks per model, 256 probe samples)")
    print(f"{'models':>6} {'stages':>6} {'partition s':>12} {'solve s':>8} {'total s':>8}  status")
    for models, stages in ((10, 4), (20, 4), (30, 4), (60, 4), (30, 2), (30, 3), (30, 5), (30, 6)):
        tp, ts, status = synthetic(models, stages)
        mark = "  <- target < 2 s" if (models, stages) == (30, 4) else ""
        print(f"{models:>6} {stages:>6} {tp:>12.3f} {ts:>8.3f} {tp + ts:>8.3f}  {status}{mark}")


ZOOS = {  # zoo: (default budgets, what the GMACs are)
    "demo": ("0.002,0.003", "effnet 0.0023, resnet 0.0041 (largest), the other 10 models <= 0.0015"),
    "timm2": ("0.0022,0.003", "convnext2 0.0020, effgn/effln 0.0023, vitrelpos 0.0030, coatnet 0.0032, vit3 0.0038, "
                              "nfnet 0.0114 (largest)"),
    "timm3": ("0.0021,0.003", "vit2 0.0018, convnext3 0.0020, evos 0.0023, vit4 0.0044 (largest)"),
    "timm4": ("0.0023,0.004", "byobnet 0.0013, effgn 0.0023, vit3 0.0038, resnet 0.0041, maxvit 0.0082 (largest)"),
    "timm5": ("0.0015,0.0025", "mambaout 0.0010, vit 0.0014, convnext2 0.0020, effnet 0.0023, nfnet 0.0114 (largest)"),
    "timm6": ("0.0015,0.0025", "convnext 0.0013, effln 0.0023, evos 0.0023, vitrelpos 0.0030, coatnet 0.0032 (largest)"),
}


def zoo_catalogue(zoo: str):
    if zoo == "demo":
        return "demo"
    import selection                  # benchmarks/selection.py builds its zoos in its work folder

    return selection.catalogue_path(zoo, selection.WORK)


def best_excluded(zoo: str, task: str, budget: float) -> bool | None:
    """Whether ``budget`` leaves out the target's best model by fine-tune truth (benchmarks/selection.py's
    stored truth, benchmarks/selection_data.json; None where it has none): the runs the issue's target
    for DeRy is stated on."""
    import json
    from pathlib import Path

    stored = json.loads(Path(__file__).with_name("selection_data.json").read_text())["zoos"]
    targets = stored.get(zoo, {}).get("targets", {})
    target = targets.get(task) or targets.get(f"{task}@20")
    if not target:
        return None
    best = max(target["truth"], key=target["truth"].get)
    return target["models"][best]["gmacs"] > budget


def accuracy_part(epochs: int, per_class: int, tasks: list[str], budgets: list[float], compat: str = "cka",
                  folds: int = ComposeConfig.screen_folds, zoo: str = "demo", ordering: str | None = None) -> None:
    catalogue = zoo_catalogue(zoo)
    where = "80% of the training split" if folds <= 1 else f"each of {folds} folds of the training split"
    judged = "the other 20%" if folds <= 1 else "every training image, out of fold"
    print(f"\nDeRy vs the best single model within the same GMACs budget: {per_class} images/class (80/20 split), "
          f"{epochs} epochs for both, 3 stages, {compat} transitions. Screen: the 3 pool assemblies with the best "
          f"assembly LogME + the best single model that fits as {ordering or 'rank recommends'} orders them, "
          f"{epochs} epochs on {where}; a mix is kept "
          f"only if a paired test of {ComposeConfig.screen_evidence} at level {ComposeConfig.screen_level:g} over the "
          f"mixes compared says it beats the single model on {judged}. "
          f"Zoo {zoo}, GMACs: {ZOOS[zoo][1]}")
    print(f"{'target':<10} {'budget':>6} {'seed':>4} {'kept assembly':<62} {'GMACs':>7} {'acc':>6} {'single':<18} "
          f"{'acc':>6} {'diff':>7} {'total s':>7}")
    diffs = {}
    for budget in budgets:
        for task in tasks:
            for seed in (0, 1):
                t0 = time.perf_counter()
                r = compose(catalogue, f"demo:{task}?n={per_class}", budget_gmacs=budget, stages=3, epochs=epochs,
                            seed=seed, compat=compat, screen_folds=folds, ordering=ordering)
                names = " + ".join(f"{s['model'].split('/')[1]}[{s['blocks']}]" for s in r.stages)
                b = r.baseline
                d = r.accuracy - b["accuracy"]
                diffs.setdefault((task, budget), []).append(d)
                print(f"{task:<10} {budget:>6} {seed:>4} {names:<62} {r.gmacs:>7.4f} {r.accuracy:>6.3f} "
                      f"{b['model'].split('/')[1]:<18} {b['accuracy']:>6.3f} {d:>+7.3f} {time.perf_counter() - t0:>7.1f}")
                for model_id, why in r.left_out.items():
                    print(f"{'':<18}left out {model_id}: {why}")
                for s in r.screened:
                    lead = f"  lead {s['margin_se']:+.1f} SE" if "margin_se" in s else ""
                    print(f"{'':<18}screened {' + '.join(m.split('/')[1] for m in s['models']):<52} "
                          f"assembly LogME {s['assembly_logme']:+.4f}  val {s['val_accuracy']:.3f} "
                          f"({s['evidence']} {s['val_score']:+.3f})"
                          f"{'  kept' if s['kept'] else ''}{lead}")
    print()
    for (task, budget), d in diffs.items():
        print(f"{task:<10} budget {budget}: mean difference (assembly - single) {np.mean(d):+.3f} over seeds "
              f"{', '.join(f'{x:+.3f}' for x in d)}")
    print(f"all: mean difference {np.mean([x for d in diffs.values() for x in d]):+.3f}; "
          f"assembly ahead in {sum(x > 0 for d in diffs.values() for x in d)}, level in "
          f"{sum(x == 0 for d in diffs.values() for x in d)}, behind in {sum(x < 0 for d in diffs.values() for x in d)} "
          f"of {sum(len(d) for d in diffs.values())} runs")
    excluded = [x for (task, budget), d in diffs.items() if best_excluded(zoo, task, budget) for x in d]
    if excluded:
        print(f"runs whose budget leaves out the target's best model (fine-tune truth): assembly >= single in "
              f"{sum(x >= 0 for x in excluded)}, ahead in {sum(x > 0 for x in excluded)} of {len(excluded)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--solver", action="store_true")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--tasks", default="glyphs,orientation,shapes,counting")
    ap.add_argument("--zoo", choices=sorted(ZOOS), default="demo")
    ap.add_argument("--budgets", help="GMACs budgets, comma-separated [default: the zoo's, see the docstring]")
    ap.add_argument("--compat", choices=["cka", "stitch"], default="cka")
    ap.add_argument("--no-solver", action="store_true", help="skip the timing part")
    ap.add_argument("--screen-folds", type=int, default=ComposeConfig.screen_folds,
                    help="the screen's cross-validation folds (1: one 80/20 split) [default: compose's]")
    ap.add_argument("--order", help="what names the single model (compose's --order) [default: rank's recommended]")
    a = ap.parse_args()
    if not a.no_solver:
        solver_part()
    if not a.solver:
        budgets = [float(b) for b in (a.budgets or ZOOS[a.zoo][0]).split(",")]
        accuracy_part(a.epochs, a.per_class, a.tasks.split(","), budgets, a.compat, a.screen_folds, a.zoo, a.order)
