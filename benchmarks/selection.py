"""How well does each estimator, and each way of combining them, pick the model to fine-tune?

    python benchmarks/selection.py build            # zoos, fine-tune truth, estimator scores (resumable)
    python benchmarks/selection.py rescore          # only estimator columns whose definition changed (no truth)
    python benchmarks/selection.py select           # `zooforge select` at 5..100% budgets on every target (resumable)
    python benchmarks/selection.py report           # tables, leave-one-zoo-out and select's regret, from the stored data

This file holds the report and the command line; ``selection_zoos.py`` defines and builds the zoos,
``selection_build.py`` the truth and the scores, ``selection_select.py`` the ``select`` runs.

Seven zoos of different kinds, each with its own target tasks:

* ``demo``: the 14-model demo zoo (6 timm architectures trained on demo source tasks, 2 random);
  truth from ``zooforge.demo.truth`` (shipped) on its 7 target tasks, plus two 20-a-class targets.
* ``timm2``: 12 models of 7 *other* timm test architectures (ConvNeXt-2, EfficientNet-GN, ViT-3,
  NFNet, CoAtNet, ViT-relpos, EfficientNet-LN), trained by this script on demo source tasks, one of
  them for 3 epochs only (under-trained), two at random init; 8 target tasks.
* ``timm3``: 16 models of 4 further timm test architectures (ConvNeXt-3, EfficientNet-EvoS, ViT-2,
  ViT-4), each trained on 3 or 4 different demo source tasks (one for 3 epochs only), one at random
  init: the shape of a hub zoo, where many checkpoints share an architecture and differ in what they
  were trained on; 5 target tasks (those that did not saturate on the first two image zoos).
* ``timm4``: 20 models of 5 architectures (MaxViT, new here; ResNet, EfficientNet-GN, ViT-3 and
  ByobNet, each on source tasks other zoos did not give them), 4 checkpoints each (one for 3 epochs
  only, one at random init); timm3's 5 targets. Built after the default ordering's rule was fixed,
  to test it on a zoo it had not seen.
* ``timm5``: 20 models of 5 architectures of the other zoos (EfficientNet, ConvNeXt-2, ViT,
  MambaOut, NFNet) on source tasks they did not get there, trained for 20, 20, 8 and 3 epochs or
  not at all; timm3's targets with shapes@20 for shapes. The second test of the default's rule,
  its pass rule committed before its truth.
* ``timm6``: 24 models of 5 architectures the other zoos had at most once (CoAtNet, EfficientNet-LN,
  ViT-relpos, ConvNeXt, EfficientNet-EvoS), trained for 20, 8 or 3 epochs or not at all; timm5's
  targets. Built after the stacked default and ``select``'s full-length rule were fixed, as a held-out
  test of both; its pass rules were committed before its truth existed: (1) the default ordering
  fitted on the other six zoos has at least the linear probe's weighted tau on timm6 with no more
  top-1 regret, and the seven-zoo leave-one-zoo-out mean stays >= the best single estimator's + 0.03
  with no more regret; (2) ``select`` at 5, 10 and 15% is never worse than its ranking's first
  model on a timm6 target, and its mean regret there is at most the ranking's.
* ``text``: the real all-MiniLM-L6-v2 and 8 variants (random init; truncated to 4, 2, 1 layers; the
  top 2 or 4 layers re-initialised; weights perturbed by noise of 0.5 and 1.5 times each tensor's
  std); 4 text tasks, two of which a bag of words cannot solve (``negation``, ``relation``).

A target ``task@n`` trains (truth) and ranks on n samples a class instead of the protocol's.

Truth protocol (``zooforge.demo.truth``'s, per zoo below): full fine-tuning with the shared training
loop on the data that ``rank`` scores, the learning rate chosen on a stratified 20% validation split
of it, the chosen run scored on a separate test split the estimators never see; 2 seeds, mean
accuracy. A target is used only when its truth does not saturate: best accuracy below 0.98 and a
spread (best - worst) of at least 0.05 (a rule fixed before looking at the scores).

``build`` writes everything it computes to ``benchmarks/selection_data.json`` (truth, every run,
every estimator's score and every model's cost per target), one finished step at a time: killed, it
goes on where it stopped. An estimator whose definition changes (its ``version`` in the registry)
is re-scored on every stored target by ``build`` or ``rescore``, from the same data. ``report``
needs only that file, so the default ordering's choice can be reproduced without fine-tuning
anything (``tests/selection/test_ordering.py`` does).

The report, per estimator and per ordering: weighted tau (scipy's, hyperbolic weights), Kendall tau,
top-1 regret (accuracy points lost by fine-tuning the ordering's first model instead of the best),
and top-1 regret within two GMACs budgets per zoo (its 50% and 25% quantiles of GMACs: the largest
models excluded). An ordering ranks *every* model: one without a score from the ordering's
estimators goes after the models that have it, as in ``zooforge rank``. Leave-one-zoo-out: the
rule that picks an ordering (:func:`zooforge.selection.ordering.choose_ordering`) sees all zoos but one, and
its choice is scored on the one held out, in every rotation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE / "selection_data.json"
WORK = HERE / ".selection"              # weights, text model folders, feature cache, partial runs (not committed)
if str(HERE) not in sys.path:           # the sibling modules below, also when this file is loaded by path
    sys.path.insert(0, str(HERE))

from selection_build import MAX_BEST, MIN_SPREAD, build, load_data, rescore, targets_used  # noqa: E402
from selection_select import SELECT_BUDGETS, run_select, select_report  # noqa: E402
# catalogue_path, split_target and target_protocol: for compose.py and aggregate.py, which build their zoos here
from selection_zoos import ZOO_TARGETS, catalogue_path, split_target, target_protocol  # noqa: E402,F401

# What `rank` ordered by before this benchmark chose: the mean rank of these seven (a reference row).
PREVIOUS_DEFAULT = ("logme", "leep", "nce", "hscore_shrink", "gbc", "transrate", "sfda")


def tables(data: dict):
    """Per zoo and target: (model ids, accuracy, gmacs, {metric: scores}); and each zoo's two budgets."""
    cells, budgets = {}, {}
    for zoo, targets in targets_used(data).items():
        for target in targets:
            cell = data["zoos"][zoo]["targets"][target]
            models = sorted(cell["truth"])
            metrics = sorted({m for r in cell["models"].values() for m in r["scores"]})
            scores = {m: np.array([np.nan if cell["models"][i]["scores"][m] is None else cell["models"][i]["scores"][m]
                                   for i in models], float) for m in metrics}
            gmacs = np.array([cell["models"][i]["gmacs"] for i in models], float)
            cells[(zoo, target)] = (models, np.array([cell["truth"][i] for i in models]), gmacs, scores)
            budgets.setdefault(zoo, tuple(float(np.quantile(gmacs, q)) for q in (0.5, 0.25)))
    return cells, budgets


def judge_all(cells, budgets, orderings):
    """{ordering name: {zoo: mean of judge() over the zoo's targets}} and the per-target rows."""
    from zooforge.selection.ordering import judge, order

    per_target, results = {}, {}
    for o in orderings:
        zoos: dict[str, list[dict]] = {}
        for (zoo, target), (models, acc, gmacs, scores) in cells.items():
            row = judge(order(scores, o)["position"], acc, gmacs, budgets[zoo])
            per_target[(o.name, zoo, target)] = row
            zoos.setdefault(zoo, []).append(row)
        results[o.name] = {z: {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} for z, rows in zoos.items()}
    return results, per_target


def _line(name, by_zoo, zoos, out):
    mean = {k: np.mean([by_zoo[z][k] for z in zoos]) for k in by_zoo[zoos[0]]}
    cols = " ".join(f"{by_zoo[z]['weighted_tau']:6.3f}" for z in zoos)
    print(f"{name:44s} {cols} | {mean['weighted_tau']:6.3f} {mean['kendall_tau']:6.3f} {mean['regret']:6.1f} "
          f"{mean['regret_b0']:6.1f} {mean['regret_b1']:6.1f}", file=out)


def report(data: dict, out=sys.stdout) -> dict:
    from zooforge.metrics import list_estimators
    from zooforge.selection.ordering import (DEFAULT_ORDERING, RULE_MAX_SIZE, Ordering, candidates, choose_ordering,
                                             stacked_default)
    from zooforge.selection.rank import DEFAULT_METRICS

    cells, budgets = tables(data)
    zoos = sorted({z for z, _ in cells})
    used = targets_used(data)
    print(f"targets (best < {MAX_BEST}, spread >= {MIN_SPREAD}): " +
          "; ".join(f"{z}: {', '.join(t)}" for z, t in used.items()), file=out)
    print("skipped as saturated: " + "; ".join(f"{z}: {', '.join(sorted(set(data['zoos'][z]['targets']) - set(t)))}"
                                                  for z, t in used.items()), file=out)
    print("GMACs budgets (each zoo's 50% and 25% quantiles): " +
          "; ".join(f"{z}: {b[0]:.4g}, {b[1]:.4g}" for z, b in budgets.items()), file=out)
    scored = sorted(m for m in list_estimators() if any(np.isfinite(c[3].get(m, np.array([np.nan]))).any()
                                                      for c in cells.values()))
    pool = candidates(scored)
    legacy = Ordering(PREVIOUS_DEFAULT, "rank")
    results, per_target = judge_all(cells, budgets, pool + [legacy])
    header = f"{'ordering':44s} " + " ".join(f"{z[:6]:>6s}" for z in zoos) + \
        " |  tau_w  kendall regret reg@b50 reg@b25   (tau_w per zoo | means over zoos; regrets in points)"
    print("\nEach estimator alone, and the previous default (mean rank of 7):", file=out)
    print(header, file=out)
    for m in scored:
        _line(m, results[m], zoos, out)
    _line(f"previous default {legacy.name[:27]}", results[legacy.name], zoos, out)

    pools = {size: {o.name for o in candidates(scored, size)} for size in (3, RULE_MAX_SIZE)}
    held = {}
    for size in sorted(pools, reverse=True):
        print(f"\nLeave one zoo out: the rule (choose_ordering) over {len(pools[size])} candidates (combinations of up "
              f"to {size}) picks on the other {len(zoos) - 1} zoos; its pick is scored on the one held out.", file=out)
        print(f"{'held out':10s} {'picked':44s} {'tau_w':>6s} {'regret':>6s} | best single there (hindsight)", file=out)
        held[size] = []
        for z in zoos:
            train = {name: {k: v for k, v in by.items() if k != z} for name, by in results.items() if name in pools[size]}
            pick = choose_ordering(train)
            single = {m: results[m][z] for m in scored}
            best_single = max(single, key=lambda m: single[m]["weighted_tau"])
            r = results[pick.name][z]
            held[size].append({"zoo": z, "pick": pick.name} | r)
            print(f"{z:10s} {pick.name:44s} {r['weighted_tau']:6.3f} {r['regret']:6.1f} | {best_single} "
                  f"{single[best_single]['weighted_tau']:.3f}, regret {single[best_single]['regret']:.1f}", file=out)
        lozo_tau = float(np.mean([h["weighted_tau"] for h in held[size]]))
        lozo_regret = float(np.mean([h["regret"] for h in held[size]]))
        print(f"rule, held out: mean tau_w {lozo_tau:.3f}, mean top-1 regret {lozo_regret:.1f} points", file=out)
    overall = {m: float(np.mean([results[m][z]["weighted_tau"] for z in zoos])) for m in scored}
    best = max(overall, key=overall.get)
    best_regret = float(np.mean([results[best][z]["regret"] for z in zoos]))
    print(f"best single estimator over all zoos (chosen in hindsight): {best} {overall[best]:.3f}, {best_regret:.1f} "
          f"points; previous default: {np.mean([results[legacy.name][z]['weighted_tau'] for z in zoos]):.3f}, "
          f"{np.mean([results[legacy.name][z]['regret'] for z in zoos]):.1f} points", file=out)
    singles = {n: v for n, v in results.items() if n in pools[RULE_MAX_SIZE]}
    stacked = stacked_rule(cells, budgets, singles, zoos, held[RULE_MAX_SIZE], out)
    final = stacked_default([(s, a) for _, a, _, s in cells.values()], singles, DEFAULT_METRICS)
    print(f"\nThe stacked rule on all {len(zoos)} zoos gives: {final.name}\n(shipped default: {DEFAULT_ORDERING.name})",
          file=out)
    final_results, final_rows = judge_all(cells, budgets, [final])
    results.update(final_results)
    per_target.update(final_rows)
    _line("the default (in-sample)", results[final.name], zoos, out)
    print(f"{'per target':24s} {'tau_w':>6s} {'kendall':>7s} {'regret':>6s} {'reg@b50':>7s} {'reg@b25':>7s}", file=out)
    for (zoo, target) in cells:
        r = per_target[(final.name, zoo, target)]
        print(f"{zoo + '/' + target:24s} {r['weighted_tau']:6.3f} {r['kendall_tau']:7.3f} {r['regret']:6.1f} "
              f"{r['regret_b0']:7.1f} {r['regret_b1']:7.1f}", file=out)
    select_report(data, {(z, t): per_target[(final.name, z, t)]["regret"] for (z, t) in cells}, out)
    return {"final": final, "held_out": stacked, "held_out_single": held[RULE_MAX_SIZE], "held_out_by_pool": held,
            "results": results}


def stacked_rule(cells, budgets, singles, zoos, single_rows, out) -> list[dict]:
    """The default's rule (ordering.stacked_default) leave-one-zoo-out: the lead estimator and the
    stacker's weights come from the other zoos, the ordering is scored on the one held out."""
    from zooforge.selection.ordering import judge, order, stacked_default
    from zooforge.selection.rank import DEFAULT_METRICS

    print(f"\nLeave one zoo out: the default's rule (the rule's single estimator leads, a non-negative pairwise "
          f"stacker over the {len(DEFAULT_METRICS)} default estimators orders the rest), fitted on the other zoos:",
          file=out)
    print(f"{'held out':10s} {'tau_w':>6s} {'regret':>6s} {'reg@b50':>7s} {'reg@b25':>7s} | the single rule's pick held out",
          file=out)
    rows = []
    for z, single in zip(zoos, single_rows):
        train = [(s, a) for (zoo, _), (_, a, _, s) in cells.items() if zoo != z]
        o = stacked_default(train, {n: {k: v for k, v in by.items() if k != z} for n, by in singles.items()}, DEFAULT_METRICS)
        judged = [judge(order(s, o)["position"], a, g, budgets[z]) for (zoo, _), (_, a, g, s) in cells.items() if zoo == z]
        r = {k: float(np.nanmean([j[k] for j in judged])) for k in judged[0]}
        rows.append({"zoo": z, "pick": o.name} | r)
        print(f"{z:10s} {r['weighted_tau']:6.3f} {r['regret']:6.1f} {r['regret_b0']:7.1f} {r['regret_b1']:7.1f} | "
              f"{single['pick']} {single['weighted_tau']:.3f}, {single['regret']:.1f}", file=out)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("weighted_tau", "regret")}
    base = {k: float(np.mean([r[k] for r in single_rows])) for k in ("weighted_tau", "regret")}
    print(f"default's rule, held out: mean tau_w {mean['weighted_tau']:.3f} ({mean['weighted_tau'] - base['weighted_tau']:+.3f} "
          f"on the single rule's {base['weighted_tau']:.3f}), mean top-1 regret {mean['regret']:.2f} points (single: "
          f"{base['regret']:.2f})", file=out)
    return rows

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--zoo", action="append", choices=list(ZOO_TARGETS))
    b.add_argument("--work", type=Path, default=WORK)
    b.add_argument("--data", type=Path, default=DATA)
    c = sub.add_parser("rescore")
    c.add_argument("--zoo", action="append", choices=list(ZOO_TARGETS))
    c.add_argument("--work", type=Path, default=WORK)
    c.add_argument("--data", type=Path, default=DATA)
    c.add_argument("--every", action="store_true", help="re-score every estimator (rebuilt weights)")
    r = sub.add_parser("report")
    r.add_argument("--data", type=Path, default=DATA)
    s = sub.add_parser("select")
    s.add_argument("--zoo", action="append", choices=list(ZOO_TARGETS))
    s.add_argument("--budget", action="append", type=float, help=f"(default: {SELECT_BUDGETS})")
    s.add_argument("--work", type=Path, default=WORK)
    s.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        build(args.zoo or list(ZOO_TARGETS), args.data, args.work)
    elif args.cmd == "rescore":
        rescore(args.zoo or list(ZOO_TARGETS), args.data, args.work, args.every)
    elif args.cmd == "select":
        run_select(args.data, args.work, tuple(args.budget or SELECT_BUDGETS), args.zoo)
    else:
        report(load_data(args.data))


if __name__ == "__main__":
    main()
