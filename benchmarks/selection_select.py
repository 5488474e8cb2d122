"""``zooforge select`` on the selection benchmark's targets (``benchmarks/selection.py select``) and
its regret against the fine-tune truth in the report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from selection_build import load_data, save_data, targets_used, torch_threads
from selection_zoos import catalogue_path, target_data, target_protocol

SELECT_BUDGETS = (0.05, 0.10, 0.15, 0.30, 1.0)
# Bumped when select's rule or the ranking it starts from changes: stored runs of an older one are
# run again. 2: the budget buys models before epochs, trials never longer than the protocol's epochs,
# the leader kept unless beaten; 3: the same rule from the default ordering linear_probe; 4: its 5
# fold draws; 5: the stacked default ordering (the probe's first model leads, the stacker orders the
# entrants after it); 6: a challenger replaces the leader only in trials of the full epochs; 7: the
# trials at the truth protocol's batch size (before: select's default 64, half the steps of the
# fine-tune the truth ran at 32 a batch, so a "full-length" trial was not); 8: the default refitted
# on seven zoos (timm6 added; the same first model, other entrants after it on 9 of 30 targets).
SELECT_VERSION = 8


def select_config(zoo: str, target: str, budget: float):
    """``select`` at ``budget`` with trials as the target's truth protocol trains: its epochs and
    batch size, at its first learning rate (a user sets --lr for a text zoo too)."""
    from zooforge.selection.select import SelectConfig

    protocol = target_protocol(zoo, target)
    return SelectConfig(fraction=budget, lr=protocol.lrs[0], full_epochs=protocol.epochs,
                        batch_size=protocol.batch_size, seed=0)


def run_select(data_path: Path, work: Path, budgets=SELECT_BUDGETS, zoos=None) -> dict:
    """``zooforge.selection.select`` on every used target at each budget (a share of fine-tuning
    every model fully); the choice and the compute spent go into the data file, one run at a time.
    The trials train as the zoo's truth protocol does (:func:`select_config`)."""
    import torch

    from zooforge.selection.select import select

    torch.set_num_threads(torch_threads())
    data = load_data(data_path)
    used = {z: t for z, t in targets_used(data).items() if not zoos or z in zoos}
    catalogues = {z: catalogue_path(z, work) for z in used}
    for budget in budgets:                         # every target at the small budgets first
        for zoo, target in [(z, t) for z, ts in used.items() for t in ts]:
            cell = data["zoos"][zoo]["targets"][target]
            done = cell.setdefault("select", {})
            if done.get(f"{budget:g}", {}).get("version") == SELECT_VERSION:
                continue
            start = time.perf_counter()
            result = select(catalogues[zoo], target_data(zoo, target), select_config(zoo, target, budget),
                            out_dir=work / "select" / zoo / target / f"{budget:g}", cache_dir=work / "cache",
                            progress=False)
            done[f"{budget:g}"] = {"model": result.model, "spent_fraction": result.spent_fraction,
                                   "entrants": result.entrants, "seconds": time.perf_counter() - start,
                                   "decision": result.decision, "version": SELECT_VERSION,
                                   "ordering": result.ranking["ordering"][0]}   # the ranking the entrants came from
            truth = cell["truth"]
            print(f"{zoo}/{target} budget {budget:g}: {result.model} (regret "
                  f"{100 * (max(truth.values()) - truth[result.model]):.1f} points, spent "
                  f"{result.spent_fraction:.3f}, {len(result.entrants)} entrants)", flush=True)
            save_data(data, data_path)
    return data


def select_report(data: dict, results_final, out=sys.stdout) -> None:
    """Regret of ``select`` at each budget, and where it is worse than the ranking's first model: the
    leader of the ranking that run computed (``decision["leader"]``). Budget 0 is the default
    ordering's top-1 on the stored scores; a run on rebuilt weights (not bit-identical) can rank a
    near-tie the other way, and the report names those targets."""
    rows, leaders, moved = {}, {}, set()
    for zoo, targets in targets_used(data).items():
        for target in targets:
            cell = data["zoos"][zoo]["targets"][target]
            truth = cell["truth"]
            best = max(truth.values())
            for budget, r in cell.get("select", {}).items():
                if r.get("version") == SELECT_VERSION:            # runs of an older rule are not reported
                    rows.setdefault(budget, {})[(zoo, target)] = 100 * (best - truth[r["model"]])
                    leader = r["decision"].get("leader", r["entrants"][0])
                    leaders.setdefault(budget, {})[(zoo, target)] = 100 * (best - truth[leader])
                    if abs(leaders[budget][(zoo, target)] - results_final.get((zoo, target), np.nan)) > 1e-9:
                        moved.add(f"{zoo}/{target}")
    if not rows:
        print("\nselect: not run yet (python benchmarks/selection.py select)", file=out)
        return
    print("\nselect (successive halving on the leaders) vs the default ordering's first model; regret in points:",
          file=out)
    rows = {"0": dict(results_final)} | rows            # budget 0: the ranking's first model, no fine-tune
    for budget in sorted(rows, key=float):
        regrets = rows[budget]
        own = leaders.get(budget, regrets)
        worse = [f"{z}/{t}" for (z, t), r in regrets.items() if r > own[(z, t)] + 1e-9]
        zoos = sorted({z for z, _ in regrets})
        by_zoo = ", ".join(f"{z} {np.mean([r for (y, _), r in regrets.items() if y == z]):.2f}" for z in zoos)
        print(f"  budget {float(budget):>5.0%}: mean regret {np.mean(list(regrets.values())):5.2f} over "
              f"{len(regrets)} targets ({by_zoo}); worse than its ranking's top-1 on: {', '.join(worse) or 'none'}",
              file=out)
    if moved:
        print(f"  (where a run's ranking put another first model than the stored scores, rebuilt weights: "
              f"{', '.join(sorted(moved))})", file=out)
