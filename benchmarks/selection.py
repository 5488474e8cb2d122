"""How well does each estimator, and each way of combining them, pick the model to fine-tune?

    python benchmarks/selection.py build            # zoos, fine-tune truth, estimator scores (resumable)
    python benchmarks/selection.py rescore          # only estimator columns whose definition changed (no truth)
    python benchmarks/selection.py select           # `zooforge select` at 5..100% budgets on every target (resumable)
    python benchmarks/selection.py report           # tables, leave-one-zoo-out and select's regret, from the stored data

Six zoos of different kinds, each with its own target tasks:

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
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE / "selection_data.json"
WORK = HERE / ".selection"              # weights, text model folders, feature cache, partial runs (not committed)

TIMM2 = (  # (id, arch, source task or None, model_args, source epochs)
    ("timm2/convnext2-shapes", "test_convnext2", "shapes-source", {}, 20),
    ("timm2/convnext2-textures", "test_convnext2", "textures-source", {}, 20),
    ("timm2/convnext2-counting", "test_convnext2", "counting-source", {}, 20),
    ("timm2/effgn-glyphs", "test_efficientnet_gn", "glyphs-source", {}, 20),
    ("timm2/effgn-orientation", "test_efficientnet_gn", "orientation-source", {}, 20),
    ("timm2/vit3-shapes", "test_vit3", "shapes-source", {"img_size": 32}, 20),
    ("timm2/vit3-counting", "test_vit3", "counting-source", {"img_size": 32}, 20),
    ("timm2/nfnet-textures", "test_nfnet", "textures-source", {}, 20),
    ("timm2/coatnet-orientation", "test_coatnet", "orientation-source", {"img_size": 32}, 20),
    ("timm2/convnext2-glyphs-short", "test_convnext2", "glyphs-source", {}, 3),
    ("timm2/vitrelpos-random", "test_vit_relpos", None, {"img_size": 32}, 0),
    ("timm2/effln-random", "test_efficientnet_ln", None, {}, 0),
)

TIMM3 = (  # same fields as TIMM2: four architectures, each trained on several source tasks
    ("timm3/convnext3-shapes", "test_convnext3", "shapes-source", {}, 20),
    ("timm3/convnext3-textures", "test_convnext3", "textures-source", {}, 20),
    ("timm3/convnext3-counting", "test_convnext3", "counting-source", {}, 20),
    ("timm3/convnext3-glyphs", "test_convnext3", "glyphs-source", {}, 20),
    ("timm3/evos-orientation", "test_efficientnet_evos", "orientation-source", {}, 20),
    ("timm3/evos-colour", "test_efficientnet_evos", "colour-source", {}, 20),
    ("timm3/evos-shapes", "test_efficientnet_evos", "shapes-source", {}, 20),
    ("timm3/evos-glyphs", "test_efficientnet_evos", "glyphs-source", {}, 20),
    ("timm3/vit2-textures", "test_vit2", "textures-source", {"img_size": 32}, 20),
    ("timm3/vit2-counting", "test_vit2", "counting-source", {"img_size": 32}, 20),
    ("timm3/vit2-orientation", "test_vit2", "orientation-source", {"img_size": 32}, 20),
    ("timm3/vit2-colour", "test_vit2", "colour-source", {"img_size": 32}, 20),
    ("timm3/vit4-shapes", "test_vit4", "shapes-source", {"img_size": 32}, 20),
    ("timm3/vit4-glyphs", "test_vit4", "glyphs-source", {"img_size": 32}, 20),
    ("timm3/vit4-orientation-short", "test_vit4", "orientation-source", {"img_size": 32}, 3),
    ("timm3/vit4-random", "test_vit4", None, {"img_size": 32}, 0),
)

TIMM4 = (  # same fields: five architectures (the size of a small hub zoo), four checkpoints each
    ("timm4/maxvit-shapes", "test_maxvit", "shapes-source", {"img_size": 32}, 20),
    ("timm4/maxvit-counting", "test_maxvit", "counting-source", {"img_size": 32}, 20),
    ("timm4/maxvit-textures", "test_maxvit", "textures-source", {"img_size": 32}, 20),
    ("timm4/maxvit-orientation", "test_maxvit", "orientation-source", {"img_size": 32}, 20),
    ("timm4/resnet-glyphs", "test_resnet", "glyphs-source", {}, 20),
    ("timm4/resnet-counting", "test_resnet", "counting-source", {}, 20),
    ("timm4/resnet-orientation", "test_resnet", "orientation-source", {}, 20),
    ("timm4/resnet-shapes", "test_resnet", "shapes-source", {}, 20),
    ("timm4/effgn-shapes", "test_efficientnet_gn", "shapes-source", {}, 20),
    ("timm4/effgn-textures", "test_efficientnet_gn", "textures-source", {}, 20),
    ("timm4/effgn-counting", "test_efficientnet_gn", "counting-source", {}, 20),
    ("timm4/effgn-colour-short", "test_efficientnet_gn", "colour-source", {}, 3),
    ("timm4/vit3-glyphs", "test_vit3", "glyphs-source", {"img_size": 32}, 20),
    ("timm4/vit3-textures", "test_vit3", "textures-source", {"img_size": 32}, 20),
    ("timm4/vit3-orientation", "test_vit3", "orientation-source", {"img_size": 32}, 20),
    ("timm4/vit3-colour", "test_vit3", "colour-source", {"img_size": 32}, 20),
    ("timm4/byobnet-shapes", "test_byobnet", "shapes-source", {}, 20),
    ("timm4/byobnet-glyphs", "test_byobnet", "glyphs-source", {}, 20),
    ("timm4/byobnet-textures", "test_byobnet", "textures-source", {}, 20),
    ("timm4/byobnet-random", "test_byobnet", None, {}, 0),
)

TIMM5 = (  # same fields: five architectures of the other zoos on source tasks they did not get there,
    # trained for 20, 20, 8 and 3 epochs (hub checkpoints differ in how long they were trained too)
    ("timm5/effnet-counting", "test_efficientnet", "counting-source", {}, 20),
    ("timm5/effnet-orientation", "test_efficientnet", "orientation-source", {}, 20),
    ("timm5/effnet-colour", "test_efficientnet", "colour-source", {}, 8),
    ("timm5/effnet-shapes-short", "test_efficientnet", "shapes-source", {}, 3),
    ("timm5/convnext2-orientation", "test_convnext2", "orientation-source", {}, 20),
    ("timm5/convnext2-colour", "test_convnext2", "colour-source", {}, 20),
    ("timm5/convnext2-glyphs", "test_convnext2", "glyphs-source", {}, 8),
    ("timm5/convnext2-random", "test_convnext2", None, {}, 0),
    ("timm5/vit-shapes", "test_vit", "shapes-source", {"img_size": 32}, 20),
    ("timm5/vit-counting", "test_vit", "counting-source", {"img_size": 32}, 20),
    ("timm5/vit-textures", "test_vit", "textures-source", {"img_size": 32}, 8),
    ("timm5/vit-colour-short", "test_vit", "colour-source", {"img_size": 32}, 3),
    ("timm5/mambaout-shapes", "test_mambaout", "shapes-source", {}, 20),
    ("timm5/mambaout-glyphs", "test_mambaout", "glyphs-source", {}, 20),
    ("timm5/mambaout-orientation", "test_mambaout", "orientation-source", {}, 8),
    ("timm5/mambaout-counting-short", "test_mambaout", "counting-source", {}, 3),
    ("timm5/nfnet-shapes", "test_nfnet", "shapes-source", {}, 20),
    ("timm5/nfnet-counting", "test_nfnet", "counting-source", {}, 20),
    ("timm5/nfnet-glyphs", "test_nfnet", "glyphs-source", {}, 8),
    ("timm5/nfnet-random", "test_nfnet", None, {}, 0),
)

TIMM_ZOOS = {"timm2": TIMM2, "timm3": TIMM3, "timm4": TIMM4, "timm5": TIMM5}      # the image zoos this script trains, by name

# (id, layers kept, top layers re-initialised, noise (x each tensor's std), pretrained)
TEXT = (
    ("text/minilm-l6", 6, 0, 0.0, True),
    ("text/minilm-l6-random", 6, 0, 0.0, False),
    ("text/minilm-l4", 4, 0, 0.0, True),
    ("text/minilm-l2", 2, 0, 0.0, True),
    ("text/minilm-l1", 1, 0, 0.0, True),
    ("text/minilm-l6-reinit2", 6, 2, 0.0, True),
    ("text/minilm-l6-reinit4", 6, 4, 0.0, True),
    ("text/minilm-l6-noise05", 6, 0, 0.5, True),
    ("text/minilm-l6-noise15", 6, 0, 1.5, True),
)


def _protocols():
    from zooforge.demo.truth import PROTOCOL, Protocol

    text = Protocol(train_per_class=40, test_per_class=50, epochs=6, batch_size=16, lrs=(1e-4, 3e-5))
    return {"demo": PROTOCOL, "timm2": PROTOCOL, "timm3": PROTOCOL, "timm4": PROTOCOL, "timm5": PROTOCOL, "text": text}


# "task@n": the task trained (truth) and ranked on n samples a class instead of the protocol's: the
# way to make a target that every model masters at 100 a class separate them again.
ZOO_TARGETS = {
    "demo": ("colour", "counting", "glyphs", "orientation", "position", "shapes", "textures",
             "orientation@20", "textures@20"),
    "timm2": ("shapes", "textures", "counting", "orientation", "position", "glyphs", "orientation@20", "textures@20"),
    "timm3": ("counting", "glyphs", "orientation@20", "shapes", "textures@20"),
    "timm4": ("counting", "glyphs", "orientation@20", "shapes", "textures@20"),
    "timm5": ("counting", "glyphs", "orientation@20", "shapes@20", "textures@20"),
    "text": ("topics@10", "intent", "negation", "relation"),
}
MAX_BEST, MIN_SPREAD = 0.98, 0.05       # the saturation rule (module docstring)
# What `rank` ordered by before this benchmark chose: the mean rank of these seven (a reference row).
PREVIOUS_DEFAULT = ("logme", "leep", "nce", "hscore_shrink", "gbc", "transrate", "sfda")


# --- building the zoos ------------------------------------------------------------------------------

def build_timm_zoo(zoo: str, work: Path) -> Path:
    """Train the models of ``TIMM_ZOOS[zoo]`` on their source tasks; its catalogue's path."""
    from zooforge.demo.build import DemoModel, build_model, write_catalogue

    models = TIMM_ZOOS[zoo]
    out = work / zoo
    specs = tuple(DemoModel(i, a, s, m) for i, a, s, m, _ in models)
    for spec, (*_, epochs) in zip(specs, models):
        if spec.source_task and not (out / spec.weights_file).is_file():
            print(f"training {spec.id} on demo:{spec.source_task} ({epochs} epochs)", flush=True)
            build_model(spec, out, epochs=epochs, progress=False)
    return write_catalogue(out, specs, f"The image zoo {zoo} of benchmarks/selection.py (built by its `build`).")


def build_text(work: Path) -> Path:
    import torch
    import transformers

    from zooforge.zoo.catalogue import load_catalogue

    out = work / "text"
    out.mkdir(parents=True, exist_ok=True)
    base = load_catalogue("text-demo")[0]
    from zooforge.zoo.loaders import packaged_folder

    source = packaged_folder(base)
    lines = ["# MiniLM variants for benchmarks/selection.py (built by its `build`).", ""]
    for mid, layers, reinit, noise, pretrained in TEXT:
        folder = out / mid.split("/")[1]
        name = source
        if reinit or noise:
            name = folder.name
            if not (folder / "config.json").is_file():
                print(f"writing {mid}", flush=True)
                model = transformers.AutoModel.from_pretrained(source)
                gen = torch.Generator().manual_seed(0)
                with torch.no_grad():
                    for layer in model.encoder.layer[len(model.encoder.layer) - reinit:]:
                        for module in layer.modules():
                            if isinstance(module, torch.nn.Linear):
                                module.weight.normal_(0.0, model.config.initializer_range, generator=gen)
                                module.bias.zero_()
                            elif isinstance(module, torch.nn.LayerNorm):
                                module.weight.fill_(1.0)
                                module.bias.zero_()
                    if noise:
                        for p in model.parameters():
                            if p.ndim > 1:
                                p.add_(torch.randn(p.shape, generator=gen) * noise * p.std())
                model.save_pretrained(folder)
                transformers.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
        lines += ["[[model]]", f'id = "{mid}"', 'source = "hf"', f'name = "{name}"', 'modality = "text"']
        if not pretrained:
            lines.append("pretrained = false")
        if layers < 6:
            lines.append(f"model_args = {{ num_hidden_layers = {layers} }}")
        lines += ['tags = ["minilm"]', ""]
    path = out / "catalogue.toml"
    path.write_text("\n".join(lines))
    return path


def catalogue_path(zoo: str, work: Path):
    if zoo in TIMM_ZOOS:
        return build_timm_zoo(zoo, work)
    return {"demo": lambda: "demo", "text": lambda: build_text(work)}[zoo]()


# --- truth and scores -------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"zoos": {}}


def _save(data: dict, path: Path) -> None:
    from zooforge.zoo.cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def split_target(target: str) -> tuple[str, int | None]:
    """``"orientation@20"`` -> ("orientation", 20): the task trained and ranked on 20 samples a class."""
    task, _, n = target.partition("@")
    return task, int(n) if n else None


def target_protocol(zoo: str, target: str):
    from dataclasses import replace

    protocol = _protocols()[zoo]
    n = split_target(target)[1]
    return replace(protocol, train_per_class=n) if n else protocol


def _threads() -> int:
    """Two threads (this machine's cores) unless OMP_NUM_THREADS says otherwise, e.g. 1 to leave a
    core free while a long truth build runs."""
    return int(os.environ.get("OMP_NUM_THREADS") or 2)


def target_data(zoo: str, target: str) -> str:
    return f"demo:{split_target(target)[0]}?n={target_protocol(zoo, target).train_per_class}"


def build_truth(zoo: str, entries, targets, work: Path) -> dict[str, list[dict]]:
    """Every (target, model, seed) run of the target's protocol, resumable through a partial jsonl."""
    from zooforge.demo.truth import fine_tune_accuracy, load_truth, record_runs, run_key, stored_runs

    out: dict[str, list[dict]] = {}
    computed = list(targets)
    if zoo == "demo":                                   # shipped: the demo truth is the same protocol's output
        shipped = load_truth()["runs"]
        for t in [t for t in targets if split_target(t)[1] is None]:
            out[t] = [r for r in shipped if r["task"] == t]
            computed.remove(t)
    partial = work / f"{zoo}.truth.jsonl"
    stored = stored_runs(partial)
    by_id = {e.id: e for e in entries}

    def key(entry, target, seed):
        return run_key(entry, split_target(target)[0], seed, target_protocol(zoo, target))

    runs = [r for r in stored if r["model"] in by_id and r.get("key") == key(by_id[r["model"]], r.get("target", r["task"]), r["seed"])]
    done = {(r.get("target", r["task"]), r["model"], r["seed"]) for r in runs}
    todo = [(t, e, s) for t in computed for e in entries for s in target_protocol(zoo, t).seeds if (t, e.id, s) not in done]
    print(f"{zoo}: {len(done)} truth run(s) stored, {len(todo)} to go", flush=True)
    runs += record_runs(todo, lambda target, entry, seed: (
        fine_tune_accuracy(entry, split_target(target)[0], seed, target_protocol(zoo, target))
        | {"key": key(entry, target, seed), "target": target}), partial)
    for t in computed:
        out[t] = [r for r in runs if r.get("target", r["task"]) == t]
    return out


def build_scores(zoo: str, catalogue, target: str, work: Path, estimators=None) -> dict:
    """Every registered estimator (or those named) on the data the truth was trained on, and each
    model's cost."""
    from zooforge.metrics import list_estimators
    from zooforge.selection.rank import rank

    estimators = list(estimators or list_estimators())
    table = rank(catalogue, target_data(zoo, target), estimators, bootstrap=0,
                 cache_dir=work / "cache", progress=False)
    out = {}
    for row in table.iter_rows(named=True):
        if row["error"]:
            raise RuntimeError(f"{row['model']} failed on {target}: {row['error']}")
        out[row["model"]] = {"gmacs": row["gmacs"], "params_m": row["params_m"],
                             "scores": {m: row[m] for m in estimators}, "skipped": row["skipped"]}
    return out


def score_versions() -> dict[str, int]:
    """Each estimator's definition version (``zooforge.metrics.REGISTRY``): a stored column scored
    under an older one is re-scored (from the cached features; the truth is kept)."""
    from zooforge.metrics import REGISTRY

    return {name: est.version for name, est in REGISTRY.items()}


def rescore_stale(zoo: str, catalogue, target: str, cell: dict, work: Path, every: bool = False) -> None:
    """Re-score the estimators whose definition changed since ``cell`` was scored (``every``: all of
    them, for a zoo whose weights were rebuilt), in place."""
    current = score_versions()
    versions = cell.setdefault("score_versions", {})
    stale = list(current) if every else [m for m, v in current.items() if versions.get(m, 1) < v]
    if not stale:
        return
    fresh = build_scores(zoo, catalogue, target, work, stale)
    for m in stale:
        change = [abs(fresh[k]["scores"][m] - v["scores"][m]) for k, v in cell["models"].items()
                  if fresh[k]["scores"][m] is not None and v["scores"][m] is not None]
        print(f"{zoo}/{target}: {m} re-scored (version {current[m]}; mean |change| "
              f"{np.mean(change) if change else float('nan'):.4f})", flush=True)
        for k, v in cell["models"].items():
            v["scores"][m] = fresh[k]["scores"][m]
        versions[m] = current[m]


def build(zoos, data_path: Path, work: Path) -> dict:
    import torch

    from zooforge.zoo import load_catalogue

    torch.set_num_threads(_threads())
    data = _load(data_path)
    for zoo in zoos:
        catalogue = catalogue_path(zoo, work)
        entries = load_catalogue(catalogue)
        targets = ZOO_TARGETS[zoo]
        runs = build_truth(zoo, entries, targets, work)
        record = data["zoos"].setdefault(zoo, {"targets": {}})
        from dataclasses import asdict

        record["protocol"] = asdict(_protocols()[zoo])      # a target "task@n" trains and ranks on n a class
        for target in targets:
            cell = record["targets"].setdefault(target, {})
            cell["runs"] = sorted(({k: r[k] for k in ("model", "seed", "lr", "val_accuracy", "accuracy")}
                                   for r in runs[target]), key=lambda r: (r["model"], r["seed"]))
            accs: dict[str, list[float]] = {}
            for r in runs[target]:
                accs.setdefault(r["model"], []).append(r["accuracy"])
            cell["truth"] = {m: float(np.mean(a)) for m, a in sorted(accs.items())}
            if "models" not in cell:
                print(f"{zoo}/{target}: scoring", flush=True)
                cell["models"] = build_scores(zoo, catalogue, target, work)
                cell["score_versions"] = score_versions()
            rescore_stale(zoo, catalogue, target, cell, work)
            _save(data, data_path)
    return data


def rescore(zoos, data_path: Path, work: Path, every: bool = False) -> dict:
    """Only the stale estimator columns of the stored targets (no truth run): what a changed
    estimator needs, even where the work folder (and its partial truth runs) is gone. ``every``
    re-scores all estimators, for zoos whose weights were rebuilt (training on another machine is
    not bit-identical); not resumable within a zoo."""
    import torch

    torch.set_num_threads(_threads())
    data = _load(data_path)
    for zoo in zoos:
        if zoo not in data["zoos"]:
            continue
        catalogue = catalogue_path(zoo, work)
        for target, cell in data["zoos"][zoo]["targets"].items():
            if "models" in cell:
                rescore_stale(zoo, catalogue, target, cell, work, every)
                _save(data, data_path)
    return data


# --- select: short fine-tunes under a budget --------------------------------------------------------

SELECT_BUDGETS = (0.05, 0.10, 0.15, 0.30, 1.0)
# Bumped when select's rule changes: stored runs of an older rule are run again. 2: the budget buys
# models before epochs, trials never longer than the protocol's epochs, the leader kept unless beaten.
SELECT_VERSION = 4          # 3: the same rule from the default ordering linear_probe; 4: its 5 fold draws


def run_select(data_path: Path, work: Path, budgets=SELECT_BUDGETS, zoos=None) -> dict:
    """``zooforge.selection.select`` on every used target at each budget (a share of fine-tuning
    every model fully); the choice and the compute spent go into the data file, one run at a time.
    The trials' learning rate is the zoo protocol's first (a user sets --lr for a text zoo too)."""
    import torch

    from zooforge.selection.select import SelectConfig, select

    torch.set_num_threads(_threads())
    data = _load(data_path)
    used = {z: t for z, t in targets_used(data).items() if not zoos or z in zoos}
    catalogues = {z: catalogue_path(z, work) for z in used}
    for budget in budgets:                         # every target at the small budgets first
        for zoo, target in [(z, t) for z, ts in used.items() for t in ts]:
            protocol = target_protocol(zoo, target)
            cell = data["zoos"][zoo]["targets"][target]
            done = cell.setdefault("select", {})
            if done.get(f"{budget:g}", {}).get("version") == SELECT_VERSION:
                continue
            start = time.perf_counter()
            result = select(catalogues[zoo], target_data(zoo, target),
                            SelectConfig(fraction=budget, lr=protocol.lrs[0], full_epochs=protocol.epochs, seed=0),
                            out_dir=work / "select" / zoo / target / f"{budget:g}", cache_dir=work / "cache",
                            progress=False)
            done[f"{budget:g}"] = {"model": result.model, "spent_fraction": result.spent_fraction,
                                   "entrants": result.entrants, "seconds": time.perf_counter() - start,
                                   "decision": result.decision, "version": SELECT_VERSION}
            truth = cell["truth"]
            print(f"{zoo}/{target} budget {budget:g}: {result.model} (regret "
                  f"{100 * (max(truth.values()) - truth[result.model]):.1f} points, spent "
                  f"{result.spent_fraction:.3f}, {len(result.entrants)} entrants)", flush=True)
            _save(data, data_path)
    return data


def select_report(data: dict, results_final, out=sys.stdout) -> None:
    """Regret of ``select`` at each budget against the default ordering's top-1 (budget 0)."""
    rows = {}
    for zoo, targets in targets_used(data).items():
        for target in targets:
            cell = data["zoos"][zoo]["targets"][target]
            truth = cell["truth"]
            best = max(truth.values())
            for budget, r in cell.get("select", {}).items():
                if r.get("version") == SELECT_VERSION:            # runs of an older rule are not reported
                    rows.setdefault(budget, {})[(zoo, target)] = 100 * (best - truth[r["model"]])
    if not rows:
        print("\nselect: not run yet (python benchmarks/selection.py select)", file=out)
        return
    print("\nselect (successive halving on the leaders) vs the default ordering's first model; regret in points:",
          file=out)
    rows = {"0": dict(results_final)} | rows            # budget 0: the ranking's first model, no fine-tune
    for budget in sorted(rows, key=float):
        regrets = rows[budget]
        worse = [f"{z}/{t}" for (z, t), r in regrets.items() if r > results_final.get((z, t), np.inf) + 1e-9]
        zoos = sorted({z for z, _ in regrets})
        by_zoo = ", ".join(f"{z} {np.mean([r for (y, _), r in regrets.items() if y == z]):.2f}" for z in zoos)
        print(f"  budget {float(budget):>5.0%}: mean regret {np.mean(list(regrets.values())):5.2f} over "
              f"{len(regrets)} targets ({by_zoo}); worse than the ranking's top-1 on: {', '.join(worse) or 'none'}",
              file=out)


# --- the report -------------------------------------------------------------------------------------

def targets_used(data: dict) -> dict[str, list[str]]:
    """{zoo: targets whose truth does not saturate} (MAX_BEST, MIN_SPREAD)."""
    out = {}
    for zoo, record in data["zoos"].items():
        keep = []
        for target, cell in record["targets"].items():
            acc = np.array(list(cell["truth"].values()))
            if "models" in cell and acc.max() < MAX_BEST and acc.max() - acc.min() >= MIN_SPREAD:
                keep.append(target)
        out[zoo] = sorted(keep)
    return out


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
        report(_load(args.data))


if __name__ == "__main__":
    main()
