"""Do the aggregators earn their place? Each against the single best model and a plain ensemble.

    python benchmarks/aggregate.py [--zoo demo --zoo timm2 --zoo timm4 --zoo text] [--target shapes ...]
                                   [--seed 0 --seed 1] [--epochs 5] [--per-class 60] [--ordering logme]
                                   [--report]

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
  the inputs routed to it (the per-member term at its default weight).

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
it stopped; ``--report`` prints the tables from that file alone.

``--hub-exploit W`` runs Hub-Pathway with its per-member (exploitation) term at weight W, stored as
the row ``hubpathway exploit=W`` unless W is the default. How the default was chosen, written before
any run with the term (2026-12-07): the weights 0 (no term, the rows before), 0.3 and 1, on timm3 to
timm6 and text (4 targets x 2 seeds each); the weight with the best mean difference from the single
model on the other four zoos (ties: the smaller) is scored on the fifth, in every rotation. The
default becomes the weight chosen on all five only if those held-out differences average more than
the held-out differences of 0; otherwise it stays 0. Outcome: 0.3 in every rotation, held out -4.57
points against -4.99 for 0, so 0.3 is the default (rows stored before it: ``hubpathway exploit=0``).

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


# The rows that can run at another setting than their method's default: the option each one varies
# (Hub-Pathway's per-member weight, --hub-exploit; Zoo-Tuning's gate rate, --zoo-gate-lr).
VARIED = {"hubpathway": "exploit", "zootuning": "gate_lr"}


def default_setting(family: str) -> float:
    from zooforge.selection.aggregate.hubpathway import EXPLOIT
    from zooforge.selection.aggregate.zootuning import GATE_LR

    return {"hubpathway": EXPLOIT, "zootuning": GATE_LR}[family]


def setting_row(family: str, value: float) -> str:
    """The row's name: ``family`` at its method's default setting, else with the setting
    (``hubpathway exploit=1``, ``zootuning gate_lr=30``)."""
    return family if value == default_setting(family) else f"{family} {VARIED[family]}={value:g}"


def setting_value(family: str, row: str) -> float:
    """The setting a row of ``family`` ran at: :func:`setting_row` read back."""
    return default_setting(family) if row == family else float(row.rpartition("=")[2])


def run_row(row: str, catalogue, s: Setting, seed: int, lr: float, exploit: float | None = None,
            gate_lr: float | None = None, ordering: str | None = None) -> dict:
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
                      **common, **({} if gate_lr is None else {"gate_lr": gate_lr}))
    else:
        r = hubpathway(catalogue, data, candidates=4, top_k=2, **common,
                       **({} if exploit is None else {"exploit": exploit}))
    return {"accuracy": r.accuracy, "params": r.total_params, "gmacs": r.gmacs, "seconds": r.seconds,
            "members": r.members, "weights": [round(float(w), 4) for w in r.weights],
            "lr": lr, "extra": {k: v for k, v in r.extra.items() if k in (
                "lr", "member_accuracy", "collapsed_accuracy", "collapsed_gmacs", "strength", "student", "gate_lr",
                "passed_over")}}


def load_rows(path: Path) -> dict[tuple, dict]:
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["zoo"], r["target"], r["seed"], r["row"], r["epochs"], r["per_class"],
                      r.get("ordering", "logme"))] = r           # rows stored before the field: LogME's
    return rows


def report(rows: dict, epochs: int, per_class: int, ordering: str = "default") -> None:
    def wanted(k):
        s = setting(k[0], k[1], epochs, per_class)
        return (k[4], k[5], k[6]) == (s.epochs, s.per_class, ordering)

    chosen = [r for k, r in rows.items() if wanted(k)]
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
    print(f"\n{'row':<11} {'cells':>5} {'mean acc':>8} {'mean - single':>13} {'>= single':>9} {'GMACs x single':>14}")
    zoos_run = sorted({c[0] for c in cells})
    for zoos in [(z,) for z in zoos_run] + ([tuple(zoos_run)] if len(zoos_run) > 1 else []):
        print(" + ".join(zoos))
        for row in names:
            pairs = [(at[c + (row,)], at[c + ("single",)]) for c in cells
                     if c[0] in zoos and c + (row,) in at and c + ("single",) in at]
            if not pairs:
                continue
            diffs = np.array([a["accuracy"] - s["accuracy"] for a, s in pairs])
            cost = np.median([a["gmacs"] / s["gmacs"] for a, s in pairs])
            print(f"{row:<11} {len(pairs):>5} {np.mean([a['accuracy'] for a, _ in pairs]):>8.3f} "
                  f"{diffs.mean():>+13.3f} {int((diffs >= 0).sum()):>4} of {len(pairs):<2} {cost:>13.2f}x")
    for family, what in VARIED.items():
        leave_one_zoo_out(at, cells, family, what)


def leave_one_zoo_out(at: dict, cells: list[tuple], family: str, what: str) -> None:
    """The choice rule of the module docstring for ``family``'s rows at several settings: on each zoo
    held out, the setting with the best mean difference from the single model on the other zoos (ties:
    the smaller), scored on the held-out zoo; only settings run on every cell compete."""
    variants = sorted({k[3] for k in at if k[3] == family or k[3].startswith(family + " ")},
                      key=lambda row: setting_value(family, row))
    cells = [c for c in cells if c + ("single",) in at and all(c + (v,) in at for v in variants)]
    zoos = sorted({c[0] for c in cells})
    if len(variants) < 2 or len(zoos) < 2:
        return

    def diff(v, chosen):
        return float(np.mean([at[c + (v,)]["accuracy"] - at[c + ("single",)]["accuracy"] for c in chosen]))

    print(f"\n{family}: {what} chosen leave one zoo out among " + ", ".join(
        f"{setting_value(family, v):g}" for v in variants) + f" ({len(cells)} cells with every setting)")
    chosen: list[float] = []          # the held-out differences of the setting each rotation chose, per cell
    for zoo in zoos:
        train, test = [c for c in cells if c[0] != zoo], [c for c in cells if c[0] == zoo]
        best = max(variants, key=lambda v: (round(diff(v, train), 6), -setting_value(family, v)))
        chosen += [diff(best, test)] * len(test)
        print(f"  held out {zoo:<6} chosen on the others: {setting_value(family, best):g} "
              f"({diff(best, train):+.3f} there), held out {diff(best, test):+.3f}")
    every = max(variants, key=lambda v: (round(diff(v, cells), 6), -setting_value(family, v)))
    print(f"  held-out mean of the chosen: {np.mean(chosen):+.3f}; of each setting kept fixed: " + ", ".join(
        f"{setting_value(family, v):g} {diff(v, cells):+.3f}" for v in variants)
        + f"; chosen on every zoo: {setting_value(family, every):g}")


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
    ap.add_argument("--ordering", default="default", help="what ranks the zoo for every row: default (the "
                    "ordering zooforge rank recommends) or an ordering's name, e.g. logme [default: default]")
    ap.add_argument("--report", action="store_true", help="print the tables from the stored rows only")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    WORK.mkdir(exist_ok=True)
    store = WORK / "rows.jsonl"
    rows = load_rows(store)
    if not args.report:
        for zoo in args.zoo or ["demo"]:
            catalogue = catalogue_of(zoo)
            for target in args.target or (TEXT_TARGETS if zoo == "text" else TARGETS):
                s = setting(zoo, target, args.epochs, args.per_class)
                for seed in args.seed or [0, 1]:
                    for asked in args.row or ROWS:
                        value = {"hubpathway": args.hub_exploit, "zootuning": args.zoo_gate_lr}.get(asked)
                        row = asked if value is None else setting_row(asked, value)
                        key = (zoo, target, seed, row, s.epochs, s.per_class, args.ordering)
                        if key in rows:
                            continue
                        single = rows.get((zoo, target, seed, "single", s.epochs, s.per_class, args.ordering))
                        if single is None and row != "single":
                            raise SystemExit(f"{zoo} {target} seed {seed}: run the single row first (its "
                                             "validated rate is the one the others train at)")
                        lr = single["extra"]["lr"][0] if single else 1e-3   # single: validated, not this
                        r = run_row(asked, catalogue, s, seed, lr, args.hub_exploit, args.zoo_gate_lr,
                                    None if args.ordering == "default" else args.ordering)
                        record = dict(zip(("zoo", "target", "seed", "row", "epochs", "per_class", "ordering"), key)) | r
                        with store.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        rows[key] = record
                        print(f"{zoo} {target} seed {seed} {row}: {r['accuracy']:.3f} ({r['seconds']:.0f} s)",
                              flush=True)
    report(rows, args.epochs, args.per_class, args.ordering)


if __name__ == "__main__":
    main()
