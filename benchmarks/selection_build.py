"""Truth and estimator scores of the selection benchmark (``benchmarks/selection.py build`` and
``rescore``): every fine-tune run and every estimator's score per (zoo, target), written to the
data file one finished step at a time, and the saturation rule that says which targets are used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from selection_zoos import ZOO_TARGETS, catalogue_path, protocols, split_target, target_data, target_protocol

MAX_BEST, MIN_SPREAD = 0.98, 0.05       # the saturation rule (selection.py's docstring)


def load_data(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"zoos": {}}


def save_data(data: dict, path: Path) -> None:
    from zooforge.zoo.cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def torch_threads() -> int:
    """Two threads (this machine's cores) unless OMP_NUM_THREADS says otherwise, e.g. 1 to leave a
    core free while a long truth build runs."""
    return int(os.environ.get("OMP_NUM_THREADS") or 2)


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

    torch.set_num_threads(torch_threads())
    data = load_data(data_path)
    for zoo in zoos:
        catalogue = catalogue_path(zoo, work)
        entries = load_catalogue(catalogue)
        targets = ZOO_TARGETS[zoo]
        runs = build_truth(zoo, entries, targets, work)
        record = data["zoos"].setdefault(zoo, {"targets": {}})
        from dataclasses import asdict

        record["protocol"] = asdict(protocols()[zoo])      # a target "task@n" trains and ranks on n a class
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
            save_data(data, data_path)
    return data


def rescore(zoos, data_path: Path, work: Path, every: bool = False) -> dict:
    """Only the stale estimator columns of the stored targets (no truth run): what a changed
    estimator needs, even where the work folder (and its partial truth runs) is gone. ``every``
    re-scores all estimators, for zoos whose weights were rebuilt (training on another machine is
    not bit-identical); not resumable within a zoo."""
    import torch

    torch.set_num_threads(torch_threads())
    data = load_data(data_path)
    for zoo in zoos:
        if zoo not in data["zoos"]:
            continue
        catalogue = catalogue_path(zoo, work)
        for target, cell in data["zoos"][zoo]["targets"].items():
            if "models" in cell:
                rescore_stale(zoo, catalogue, target, cell, work, every)
                save_data(data, data_path)
    return data


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
