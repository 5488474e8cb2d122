"""Rebuild the demo truth: fine-tuned accuracy of every demo model on every demo target task.

    python -m zooforge.demo.truth                 # all 14 models x 7 tasks x 2 seeds (~25 min, 2 cores)
    python -m zooforge.demo.truth --task size --task tags   # (re)build these; the file keeps the others
    python -m zooforge.demo.truth --task shapes --out /tmp/truth.json

Protocol (the one transferability papers use, scaled down): each model is fully fine-tuned with the
shared training loop (:func:`zooforge.tuning.loop.train`) on the ranked data ``demo:<task>?n=100``,
for each learning rate of a small grid; the learning rate is chosen on a stratified 20% validation
split of that data, and the chosen run is scored on the task's separate test split
(``demo:<task>?n=50``, split ``test``: images the estimators never see). Two seeds (initialisation,
order and the validation split) per cell; ``accuracy`` is their mean. A regression or multi-label
task (``demo:size``, ``demo:tags``: 500 training and 250 test samples) trains with its own loss, and
``accuracy`` holds its R^2 or mAP.

The script is resumable: every finished run is appended to ``<out>.partial.jsonl`` and skipped on rerun;
the final JSON is written atomically when all runs are done. Each run carries a key of everything
its result depends on (the protocol, the model's catalogue entry and checkpoint file, the task
generator's version, torch's version); runs of another key are not reused, and the script says how
many it dropped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["PROTOCOL", "Protocol", "load_truth", "truth_for", "fine_tune_accuracy", "run_key", "stored_runs",
           "record_runs", "main"]

HERE = Path(__file__).parent
TRUTH_FILE = HERE / "truth.json"


@dataclass(frozen=True)
class Protocol:
    method: str = "full"
    train_per_class: int = 100       # = what `zooforge demo` ranks
    test_per_class: int = 50
    val_fraction: float = 0.2
    epochs: int = 8
    batch_size: int = 32
    lrs: tuple[float, ...] = (1e-3, 2e-4)
    seeds: tuple[int, ...] = (0, 1)


PROTOCOL = Protocol()
# demo:size and demo:tags have no classes: their runs train on train_per_class x this many samples
# (500, what `zooforge rank demo demo:size` ranks by default) and test on test_per_class x this many.
KIND_SAMPLES_PER_CLASS = 5


def load_truth(path: str | Path = TRUTH_FILE) -> dict:
    """The shipped truth: {"protocol": ..., "accuracy": {task: {model: mean accuracy}}, "runs": [...]}."""
    from zooforge.errors import ZooforgeError

    path = Path(path)
    if not path.is_file():
        raise ZooforgeError(f"demo truth {path} is missing; rebuild it with `python -m zooforge.demo.truth`.")
    return json.loads(path.read_text())


def truth_for(task: str, path: str | Path = TRUTH_FILE) -> dict[str, float] | None:
    """{model id: mean fine-tuned accuracy} for one demo target task, or None when it has no truth."""
    return load_truth(path)["accuracy"].get(task)


def fine_tune_accuracy(entry, task: str, seed: int, protocol: Protocol = PROTOCOL) -> dict:
    """One cell-seed of the protocol: the learning-rate sweep, the choice on validation, the test score."""
    from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
    from zooforge.tuning.methods import build, inputs_for
    from zooforge.tuning.objectives import init_head
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone

    from zooforge.zoo.demo.kinds import KIND_TASKS

    # a regression or multi-label task has no classes to count per: as many samples as 5 classes'
    per = KIND_SAMPLES_PER_CLASS if task in KIND_TASKS else 1
    data = load_dataset(f"demo:{task}?n={protocol.train_per_class * per}")
    test = load_dataset(f"demo:{task}?n={protocol.test_per_class * per}", "test")
    fit, val = data.split(1 - protocol.val_fraction, seed)
    best, inputs = None, None
    for lr in protocol.lrs:
        backbone = Backbone.from_entry(entry)          # fresh weights: full fine-tuning changes them in place
        if inputs is None:                             # preprocessing does not depend on the weights
            inputs = [inputs_for(backbone, d) for d in (fit, val, test)]
        x_fit, x_val, x_test = inputs
        torch.manual_seed(seed)
        model = build(backbone, data.num_classes, protocol.method, task=data.task)
        init_head(model, data.task, torch.as_tensor(fit.labels))
        cfg = TrainConfig(epochs=protocol.epochs, batch_size=protocol.batch_size, lr=lr, seed=seed,
                          device="cpu", progress=False)
        train(model, x_fit, torch.as_tensor(fit.labels), cfg)
        val_acc = evaluate_accuracy(model, x_val, torch.as_tensor(val.labels))
        if best is None or val_acc > best["val_accuracy"]:
            best = {"lr": lr, "val_accuracy": val_acc,
                    "accuracy": evaluate_accuracy(model, x_test, torch.as_tensor(test.labels))}
    return {"model": entry.id, "task": task, "seed": seed} | best


def run_key(entry, task: str, seed: int, protocol: Protocol = PROTOCOL) -> str:
    """The digest a finished run must match to be reused on resume."""
    import hashlib

    from zooforge.zoo.catalogue import entry_digest
    from zooforge.zoo.demo.tasks import GENERATOR_VERSION

    # by content: the truth travels with the repository, where modification times do not survive
    key = {"protocol": asdict(protocol), "entry": entry_digest(entry, checkpoint_content=True), "task": task, "seed": seed,
           "generator": GENERATOR_VERSION, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def stored_runs(partial: Path) -> list[dict]:
    """The runs a resumable truth build appended to ``partial`` (one JSON line each), [] before any."""
    return [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []


def record_runs(todo, run, partial: Path) -> list[dict]:
    """Run every (target, entry, seed) of ``todo`` with ``run`` (which returns the run's dict, its
    ``key`` included), appending each finished run to ``partial`` at once, so that a crash loses at
    most one; prints progress with an ETA. Returns the new runs."""
    out = []
    start = time.perf_counter()
    for i, (target, entry, seed) in enumerate(todo, 1):
        row = run(target, entry, seed)
        out.append(row)
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
        eta = (time.perf_counter() - start) / i * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {target:14s} {entry.id:30s} seed {seed}: test {row['accuracy']:.3f} "
              f"(lr {row['lr']:g}); ETA {eta / 60:.1f} min", flush=True)
    return out


def _summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        cells.setdefault((r["task"], r["model"]), []).append(r["accuracy"])
    out: dict[str, dict[str, float]] = {}
    for (task, model), accs in sorted(cells.items()):
        out.setdefault(task, {})[model] = float(np.mean(accs))
    return out


def main(argv: list[str] | None = None) -> None:
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.cache import atomic_write_bytes
    from zooforge.zoo.demo.tasks import TARGET_TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TRUTH_FILE)
    parser.add_argument("--task", action="append", help="target task(s) (default: all)")
    parser.add_argument("--model", action="append", help="model id(s) (default: the whole demo zoo)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    tasks = args.task or list(TARGET_TASKS)
    entries = [e for e in load_catalogue("demo") if not args.model or e.id in args.model]
    partial = args.out.with_suffix(".partial.jsonl")
    stored = stored_runs(partial)
    by_id = {e.id: e for e in load_catalogue("demo")}
    runs = [r for r in stored if r["model"] in by_id and r.get("key") == run_key(by_id[r["model"]], r["task"], r["seed"])]
    if len(runs) < len(stored):
        print(f"{len(stored) - len(runs)} run(s) in {partial} were made with another protocol, model file or "
              f"version: not reused", flush=True)
    done = {(r["task"], r["model"], r["seed"]) for r in runs}
    todo = [(t, e, s) for t in tasks for e in entries for s in PROTOCOL.seeds if (t, e.id, s) not in done]
    print(f"{len(done)} run(s) already in {partial}; {len(todo)} to go", flush=True)
    runs += record_runs(todo, lambda task, entry, seed: fine_tune_accuracy(entry, task, seed)
                        | {"key": run_key(entry, task, seed)}, partial)
    # the other tasks' runs already in --out stay: building one task adds it to the shipped truth
    others = [r for r in json.loads(args.out.read_text())["runs"] if r["task"] not in tasks] if args.out.is_file() else []
    runs = others + runs
    record = {"protocol": asdict(PROTOCOL), "torch": torch.__version__,
              "accuracy": _summarise(runs), "runs": sorted(runs, key=lambda r: (r["task"], r["model"], r["seed"]))}
    atomic_write_bytes(args.out, json.dumps(record, indent=1).encode())
    partial.unlink(missing_ok=True)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
