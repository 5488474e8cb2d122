"""Do the aggregators earn their place? Each against the single best model and a plain ensemble.

    python benchmarks/aggregate.py [--zoo demo --zoo timm2 --zoo timm4 --zoo text] [--target shapes ...]
                                   [--seed 0 --seed 1] [--epochs 5] [--per-class 60] [--ordering logme]
                                   [--report [--group timm3,timm4,timm5,timm6 ...]]

``--report`` prints the stored rows of the zoos given with ``--zoo`` (all, if none), and ``--group``
adds a summary over those zoos.

Rows, per (zoo, target, seed), all at the same number of training epochs, on the same split
(image zoos: ``--per-class`` images a class, 80% train, 20% held out; the text zoo: its truth
protocol in benchmarks/selection.py, 40 sentences a class to train (10 for topics@10) and 50 held
out, 6 epochs, batch 16, rates 3e-5 and 1e-4; the held-out part is only scored):

* ``single``: the top-1 fine-tuned alone (full), its learning rate validated inside the
  training split (``lr="auto"``: 80/20, the method's grid), i.e. ``ensemble(top_k=1, lr="auto")``;
* ``ensemble-3``: the top-3, each fine-tuned alone the same way, logits averaged (3x the
  inference of one model);
* ``btuning-3``: B-Tuning of the top model with the top-3 as teachers (T = 0.1, λ by validation
  from 0, 1, 10 and the reference's 100: the default);
* ``zootuning``: Zoo-Tuning over every model of the top-ranked architecture that has at least 3
  models in the zoo (the paper's setting: one architecture, several sources);
* ``zootuning-3``: Zoo-Tuning as ``zooforge aggregate --method zootuning`` runs it by default: the
  top-ranked model and the next 2 of its architecture (fewer where it has fewer; where it is alone of
  its kind, the highest-ranked model that is not, with a warning: ``extra.passed_over``). Added
  2026-12-07 with that default and run once on every zoo; nothing is chosen on it;
* ``hubpathway``: Hub-Pathway over the top-4, routing each input to 2, each member also trained on
  the inputs routed to it (the per-member term at its default weight), the generator starting with
  its default lead for the top-ranked member.

"Top" is by the ordering ``zooforge rank`` recommends (the shipped default), as every aggregator
ranks the zoo by default; ``--ordering logme`` ranks by LogME alone, the papers' choice and every
row stored without an ``ordering`` field (rows are kept per ordering; ``--report`` shows the
``--ordering`` asked).

The aggregators train at the learning rate that validation chose for the single model on the same
target and seed (they fine-tune the same kind of networks; validating each aggregator's own rate
would multiply its cost by the grid's size). Columns: held-out accuracy, parameters and GMACs per input at
inference (counted as the model runs: Hub-Pathway's routed members only), training seconds. The
summary counts, per aggregator, the targets x seeds where it reaches the single model, and the mean
difference. ``timm2`` to ``timm6`` and ``text`` (all-MiniLM-L6-v2 and 8 variants) are
benchmarks/selection.py's other zoos (built there, in its work folder). Zoo-Tuning's architectures
are told apart by their parameter shapes (the text zoo's truncated MiniLMs are the same model name with fewer layers).

Every finished row is appended to ``benchmarks/.aggregate/rows.jsonl``: killed, a rerun goes on where
it stopped; ``--report`` prints the tables from that file alone. A run ranks each cell's training split
once (``rank_once``: every row of a cell asks for the same ranking) and prints how many rankings it
computed for how many were asked.

``--hub-exploit W`` runs Hub-Pathway with its per-member (exploitation) term at weight W, stored as
the row ``hubpathway exploit=W`` unless W is the default. How the default was chosen, written before
any run with the term (2026-12-07): the weights 0 (no term, the rows before), 0.3 and 1, on timm3 to
timm6 and text (4 targets x 2 seeds each); the weight with the best mean difference from the single
model on the other four zoos (ties: the smaller) is scored on the fifth, in every rotation. The
default becomes the weight chosen on all five only if those held-out differences average more than
the held-out differences of 0; otherwise it stays 0. Outcome: 0.3 in every rotation, held out -4.57
points against -4.99 for 0, so 0.3 is the default (rows stored before it: ``hubpathway exploit=0
lead=0``; the rotation is printed among the rows at lead 0).

``--hub-lead L`` starts Hub-Pathway's generator with L added to the top-ranked member's logit (stored
as the row ``hubpathway lead=L`` unless L is the default, 0: the paper's generator, which starts with
no preference, and load balancing then spreads the inputs so that each of the 4 members trains on
about half of them, the top one included). How the default would change, written before any run with
a lead (2026-12-07): the leads 0 and 3, on timm3 to timm6 and text (4 targets x 2 seeds each, the
members ranked by the recommended ordering); the lead with the best mean difference from the single
model on the other four zoos (ties: the smaller) is scored on the fifth, in every rotation. The
default becomes the lead chosen on all five only if those held-out differences average more than
0's on the same zoos; otherwise it stays 0. Outcome: 3 in every rotation, held out +0.6 points
against -4.3 for 0, so 3 is the default; run afterwards on demo and timm2 (not used in the choice):
+1.2 against -2.4. Rows stored before it are named with ``lead=0`` (``hubpathway lead=0``,
``hubpathway exploit=0 lead=0``, ``hubpathway exploit=1 lead=0``).

``--zoo-gate-lr R`` runs Zoo-Tuning with its gates at R times the kernels' rate, stored as the row
``zootuning gate_lr=R`` unless R is the default (``GATE_LR``, 10, chosen on benchmarks/zootuning.py's
groups of the demo, timm2 and text zoos, where 1x to 10x moved the lead over the top member from
-0.0 to +1.0 on images and -5.6 to -3.7 on text: the gates, new and from scratch, hardly leave their
start in these short fine-tunes). How a rate would replace it, written before any run at another
rate (2026-12-07): the rates 10, 30 and 100, on timm3 to timm6 and text (4 targets x 2 seeds each);
the rate with the best mean difference from the single model on the other four zoos (ties: the
smaller) is scored on the fifth, in every rotation. The default becomes the rate chosen on all five
only if those held-out differences average more than 10's on the same zoos; otherwise it stays 10.
Outcome (rows ranked by LogME, ``--ordering logme``): 30 chosen with each image zoo held out, 10
with text held out; held out -0.6 points against -0.4 for 10, so 10 stays. Kept fixed, 30 would be
+0.1 and 100 -2.6: 100 gains on text (+3.8 against -2.2, the gates leaving the random MiniLM on
relation) and loses 4 points on images.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
WORK = HERE / ".aggregate"
TARGETS = ("shapes", "counting", "glyphs", "orientation")      # the demo targets that do not saturate
TEXT_TARGETS = ("negation", "relation", "topics@10", "intent")  # the selection benchmark's text targets
ROWS = ("single", "ensemble-3", "btuning-3", "zootuning", "zootuning-3", "hubpathway")
AGGREGATORS = ROWS[2:]


@dataclass(frozen=True)
class Setting:
    """How one (zoo, target) is trained: the data, the train share, epochs, batch and rate grid."""
    data: str
    split: float
    epochs: int
    per_class: int          # the rows' key: images a class (image zoos) or training sentences a class (text)
    batch_size: int = 32
    lr_grid: tuple[float, ...] | None = None     # None: the full method's grid (zooforge.tuning.tune.LR_GRID)


def _selection():
    sys.path.insert(0, str(HERE))
    import selection                                         # benchmarks/selection.py builds the other zoos

    return selection


def setting(zoo: str, target: str, epochs: int, per_class: int) -> Setting:
    if zoo != "text":
        return Setting(f"demo:{target}?n={per_class}", 0.8, epochs, per_class)
    selection = _selection()
    p = selection.target_protocol(zoo, target)
    n = p.train_per_class + p.test_per_class
    return Setting(f"demo:{selection.split_target(target)[0]}?n={n}", p.train_per_class / n, p.epochs,
                   p.train_per_class, p.batch_size, tuple(sorted(p.lrs)))


def catalogue_of(zoo: str):
    if zoo == "demo":
        return "demo"
    selection = _selection()
    return str(selection.catalogue_path(zoo, selection.WORK))


def zootuning_members(catalogue, data: str, split: float, seed: int, ordering=None) -> list[str]:
    """Every model of the top-ranked architecture among those with at least 3 models in the zoo
    (``architecture_group``: the top of the table Zoo-Tuning itself reads, min_models=3)."""
    from zooforge.selection.aggregate._common import load_members, split_dataset
    from zooforge.selection.aggregate.architecture import architecture_group
    from zooforge.zoo import load_catalogue

    entries = load_catalogue(catalogue)
    _, train_ds, _ = split_dataset(data, split, seed)
    ranked = load_members(entries, None, len(entries), train_ds, ordering=ordering, load=False)
    return [e.id for e in architecture_group(ranked, None, min_models=3)[0]]


# The rows that can run at another setting than their method's default: (row family, the option it
# varies) -> the command-line flag (Hub-Pathway's per-member weight and its generator's lead for the top
# member; Zoo-Tuning's gate rate). A row varies one option at a time.
VARIED = {("hubpathway", "exploit"): "--hub-exploit", ("hubpathway", "lead"): "--hub-lead",
          ("zootuning", "gate_lr"): "--zoo-gate-lr"}


def default_setting(family: str, what: str) -> float:
    from zooforge.selection.aggregate.hubpathway import EXPLOIT, LEAD
    from zooforge.selection.aggregate.zootuning import GATE_LR

    return {("hubpathway", "exploit"): EXPLOIT, ("hubpathway", "lead"): LEAD, ("zootuning", "gate_lr"): GATE_LR}[
        (family, what)]


def row_settings(family: str, row: str) -> dict[str, float]:
    """The settings a row of ``family`` names (``hubpathway exploit=1 lead=0``: {exploit: 1, lead: 0});
    those it does not name ran at their defaults."""
    return {k: float(v) for k, _, v in (t.partition("=") for t in row[len(family):].split())}


def setting_row(family: str, what: str, value: float) -> str:
    """The row's name: ``family`` at its method's default setting, else with the setting
    (``hubpathway exploit=1``, ``hubpathway lead=0``, ``zootuning gate_lr=30``)."""
    return family if value == default_setting(family, what) else f"{family} {what}={value:g}"


def setting_value(family: str, what: str, row: str) -> float:
    """The setting of ``what`` a row of ``family`` ran at: :func:`setting_row` read back."""
    return row_settings(family, row).get(what, default_setting(family, what))


def families_of_variants(family: str, what: str, names) -> dict[tuple, list[str]]:
    """The rows among ``names`` of ``family`` grouped by their settings other than ``what`` (rows differing
    only in ``what``): each group is one choice of ``what``, the others held where that group ran them."""
    groups: dict[tuple, list[str]] = {}
    for row in names:
        if row == family or row.startswith(family + " "):
            others = tuple(sorted((k, v) for k, v in row_settings(family, row).items() if k != what))
            groups.setdefault(others, []).append(row)
    return groups


def rank_once() -> dict[str, int]:
    """Make ``zooforge.selection.rank.ranked_ids`` rank each split once in this process: every row of a
    cell (and ``zootuning_members``) ranks the same training split of the same models by the same
    ordering, and the library ranks it again for each. Keyed on the models' ids, the split's content
    (its fingerprint), the ordering and the feature cache. Returns counts ({"asked", "ranked"}) that
    the run prints at the end."""
    import importlib

    module = importlib.import_module("zooforge.selection.rank")      # (the package's `rank` is the function)
    ranked_ids, memo, counts = module.ranked_ids, {}, {"asked": 0, "ranked": 0}

    def once(entries, dataset, ordering=None, *, cache_dir=None, progress=False, unplaced=None):
        key = (tuple(e.id for e in entries), dataset.fingerprint, str(getattr(ordering, "name", ordering)),
               str(cache_dir))
        counts["asked"] += 1
        if key not in memo:
            counts["ranked"] += 1
            lost: dict = {}
            memo[key] = (ranked_ids(entries, dataset, ordering, cache_dir=cache_dir, progress=progress,
                                    unplaced=lost), lost)
        ids, lost = memo[key]
        if unplaced is not None:
            unplaced.update(lost)
        return list(ids)

    module.ranked_ids = once
    return counts


def run_row(row: str, catalogue, s: Setting, seed: int, lr: float, varied: dict | None = None,
            ordering: str | None = None) -> dict:
    """One row of one cell; ``varied``: the option of ``VARIED`` set for this row's family, {name: value}."""
    from zooforge.selection.aggregate import btuning, ensemble, hubpathway, zootuning
    from zooforge.tuning.loop import TrainConfig

    cfg = TrainConfig(epochs=s.epochs, lr=lr, batch_size=s.batch_size, seed=seed, progress=False)
    common = {"config": cfg, "seed": seed, "split": s.split, "ordering": ordering}
    data = s.data
    if row == "single":
        r = ensemble(catalogue, data, top_k=1, lr="auto", lr_grid=s.lr_grid, **common)
    elif row == "ensemble-3":
        r = ensemble(catalogue, data, top_k=3, lr="auto", lr_grid=s.lr_grid, **common)
    elif row == "btuning-3":
        r = btuning(catalogue, data, top_k=3, **common)
    elif row == "zootuning-3":
        r = zootuning(catalogue, data, top_k=3, **common)
    elif row == "zootuning":
        r = zootuning(catalogue, data, models=zootuning_members(catalogue, data, s.split, seed, ordering), top_k=None,
                      **common, **(varied or {}))
    else:
        r = hubpathway(catalogue, data, candidates=4, top_k=2, **common, **(varied or {}))
    return {"accuracy": r.accuracy, "params": r.total_params, "gmacs": r.gmacs, "seconds": r.seconds,
            "members": r.members, "weights": [round(float(w), 4) for w in r.weights],
            "lr": lr, "extra": {k: v for k, v in r.extra.items() if k in (
                "lr", "member_accuracy", "collapsed_accuracy", "collapsed_gmacs", "strength", "student", "gate_lr",
                "passed_over", "exploit", "lead")}}


def load_rows(path: Path) -> dict[tuple, dict]:
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["zoo"], r["target"], r["seed"], r["row"], r["epochs"], r["per_class"],
                      r.get("ordering", "logme"))] = r           # rows stored before the field: LogME's
    return rows


def report(rows: dict, epochs: int, per_class: int, ordering: str = "default", groups: list[str] = (),
           only: list[str] | None = None) -> None:
    """The stored rows' tables (of the zoos ``only`` names, if given): every cell, then per zoo, over all
    zoos and over each of ``groups`` (comma-separated zoos) the mean difference from the single model
    with its standard error, and, for rows that passed over the top-ranked model (Zoo-Tuning's default
    group), those cells apart."""
    def wanted(k):
        s = setting(k[0], k[1], epochs, per_class)
        return (k[4], k[5], k[6]) == (s.epochs, s.per_class, ordering)

    chosen = [r for k, r in rows.items() if wanted(k) and (not only or k[0] in only)]
    cells = sorted({(r["zoo"], r["target"], r["seed"]) for r in chosen})
    names = list(ROWS) + sorted({r["row"] for r in chosen} - set(ROWS))     # Hub-Pathway at other weights too
    at = {(r["zoo"], r["target"], r["seed"], r["row"]): r for r in chosen}
    print(f"image zoos: {epochs} epochs, {per_class} images a class (80% train / 20% held out); "
          f"text: its truth protocol; the zoo ranked by the {ordering} ordering\n")
    print(f"{'zoo':<6} {'target':<12} {'seed':>4} {'row':<11} {'acc':>6} {'- single':>8} {'params':>9} "
          f"{'GMACs':>8} {'s':>6}  members")
    for zoo, target, seed in cells:
        single = at.get((zoo, target, seed, "single"))
        for row in names:
            r = at.get((zoo, target, seed, row))
            if r is None:
                continue
            diff = f"{r['accuracy'] - single['accuracy']:+8.3f}" if single else f"{'':>8}"
            members = ", ".join(m.split("/")[-1] for m in r["members"])
            print(f"{zoo:<6} {target:<12} {seed:>4} {row:<11} {r['accuracy']:>6.3f} {diff} {r['params']:>9,} "
                  f"{r['gmacs']:>8.4f} {r['seconds']:>6.1f}  {members}")
    print(f"\n{'row':<11} {'cells':>5} {'mean acc':>8} {'mean - single':>13} {'(SE)':>7} {'>= single':>9} "
          f"{'GMACs x single':>14} {'params x single':>15}")
    zoos_run = sorted({c[0] for c in cells})
    sets = [(z,) for z in zoos_run] + ([tuple(zoos_run)] if len(zoos_run) > 1 else [])
    sets += [tuple(g.split(",")) for g in groups]

    def summary(label: str, chosen: list[tuple]) -> None:
        pairs = [(at[c], at[c[:3] + ("single",)]) for c in chosen]
        diffs = np.array([a["accuracy"] - s["accuracy"] for a, s in pairs])
        se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        cost = np.median([a["gmacs"] / s["gmacs"] for a, s in pairs])
        size = np.median([a["params"] / s["params"] for a, s in pairs])
        print(f"{label:<11} {len(pairs):>5} {np.mean([a['accuracy'] for a, _ in pairs]):>8.3f} "
              f"{diffs.mean():>+13.3f} {se:>7.3f} {int((diffs >= 0).sum()):>4} of {len(pairs):<2} {cost:>13.2f}x "
              f"{size:>14.2f}x")

    for zoos in sets:
        print(" + ".join(zoos))
        for row in names:
            chosen = [c + (row,) for c in cells if c[0] in zoos and c + (row,) in at and c + ("single",) in at]
            if chosen:
                summary(row, chosen)
    for row in names:                 # Zoo-Tuning's default group where the top-ranked model was alone of its kind
        over = [c + (row,) for c in cells if at.get(c + (row,), {}).get("extra", {}).get("passed_over")
                and c + ("single",) in at]
        if over:
            print(f"{row}, the cells where it passed over the top-ranked model:")
            summary(row, over)
    for family, what in VARIED:
        for others, variants in families_of_variants(family, what, {k[3] for k in at}).items():
            leave_one_zoo_out(at, cells, family, what, variants, others)


def leave_one_zoo_out(at: dict, cells: list[tuple], family: str, what: str, variants: list[str],
                      others: tuple = ()) -> None:
    """The choice rule of the module docstring for ``family``'s rows ``variants``, which differ only in
    ``what`` (``others``: the settings they share, where not the defaults): on each zoo held out, the
    setting with the best mean difference from the single model on the other zoos (ties: the smaller),
    scored on the held-out zoo; only settings run on every cell compete."""
    variants = sorted(variants, key=lambda row: setting_value(family, what, row))
    cells = [c for c in cells if c + ("single",) in at and all(c + (v,) in at for v in variants)]
    zoos = sorted({c[0] for c in cells})
    if len(variants) < 2 or len(zoos) < 2:
        return

    def diff(v, chosen):
        return float(np.mean([at[c + (v,)]["accuracy"] - at[c + ("single",)]["accuracy"] for c in chosen]))

    held = "".join(f", {k}={v:g}" for k, v in others)
    print(f"\n{family}{held}: {what} chosen leave one zoo out among " + ", ".join(
        f"{setting_value(family, what, v):g}" for v in variants) + f" ({len(cells)} cells with every setting)")
    chosen: list[float] = []          # the held-out differences of the setting each rotation chose, per cell
    for zoo in zoos:
        train, test = [c for c in cells if c[0] != zoo], [c for c in cells if c[0] == zoo]
        best = max(variants, key=lambda v: (round(diff(v, train), 6), -setting_value(family, what, v)))
        chosen += [diff(best, test)] * len(test)
        print(f"  held out {zoo:<6} chosen on the others: {setting_value(family, what, best):g} "
              f"({diff(best, train):+.3f} there), held out {diff(best, test):+.3f}")
    every = max(variants, key=lambda v: (round(diff(v, cells), 6), -setting_value(family, what, v)))
    print(f"  held-out mean of the chosen: {np.mean(chosen):+.3f}; of each setting kept fixed: " + ", ".join(
        f"{setting_value(family, what, v):g} {diff(v, cells):+.3f}" for v in variants)
        + f"; chosen on every zoo: {setting_value(family, what, every):g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", action="append", choices=list(_selection().ZOO_TARGETS))   # the selection benchmark's
    ap.add_argument("--target", action="append")
    ap.add_argument("--seed", action="append", type=int)
    ap.add_argument("--row", action="append", choices=ROWS)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--hub-exploit", type=float, help="Hub-Pathway's per-member weight [default: hubpathway's "
                    "EXPLOIT]; another weight is stored as its own row")
    ap.add_argument("--zoo-gate-lr", type=float, help="Zoo-Tuning's gate rate as a multiple of the kernels' "
                    "[default: zootuning's GATE_LR]; another rate is stored as its own row")
    ap.add_argument("--hub-lead", type=float, help="Hub-Pathway's starting logit for the top-ranked member "
                    "[default: hubpathway's LEAD]; another lead is stored as its own row")
    ap.add_argument("--ordering", default="default", help="what ranks the zoo for every row: default (the "
                    "ordering zooforge rank recommends) or an ordering's name, e.g. logme [default: default]")
    ap.add_argument("--report", action="store_true", help="print the tables from the stored rows only")
    ap.add_argument("--group", action="append", default=[], help="also summarise over these zoos, comma-separated "
                    "(e.g. timm3,timm4,timm5,timm6)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    WORK.mkdir(exist_ok=True)
    store = WORK / "rows.jsonl"
    rows = load_rows(store)
    given = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in VARIED.items()}
    if not args.report:
        ranking = rank_once()
        for zoo in args.zoo or ["demo"]:
            catalogue = catalogue_of(zoo)
            for target in args.target or (TEXT_TARGETS if zoo == "text" else TARGETS):
                s = setting(zoo, target, args.epochs, args.per_class)
                for seed in args.seed or [0, 1]:
                    for asked in args.row or ROWS:
                        varied = {what: value for (family, what), value in given.items()
                                  if family == asked and value is not None}
                        if len(varied) > 1:
                            raise SystemExit(f"a row varies one option at a time; {asked} got {sorted(varied)}")
                        row = setting_row(asked, *next(iter(varied.items()))) if varied else asked
                        key = (zoo, target, seed, row, s.epochs, s.per_class, args.ordering)
                        if key in rows:
                            continue
                        single = rows.get((zoo, target, seed, "single", s.epochs, s.per_class, args.ordering))
                        if single is None and row != "single":
                            raise SystemExit(f"{zoo} {target} seed {seed}: run the single row first (its "
                                             "validated rate is the one the others train at)")
                        lr = single["extra"]["lr"][0] if single else 1e-3   # single: validated, not this
                        r = run_row(asked, catalogue, s, seed, lr, varied,
                                    None if args.ordering == "default" else args.ordering)
                        record = dict(zip(("zoo", "target", "seed", "row", "epochs", "per_class", "ordering"), key)) | r
                        with store.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        rows[key] = record
                        print(f"{zoo} {target} seed {seed} {row}: {r['accuracy']:.3f} ({r['seconds']:.0f} s)",
                              flush=True)
        print(f"rankings: {ranking['ranked']} computed for {ranking['asked']} asked (one per split, models and "
              "ordering)")
    report(rows, args.epochs, args.per_class, args.ordering, args.group, args.zoo)


if __name__ == "__main__":
    main()
