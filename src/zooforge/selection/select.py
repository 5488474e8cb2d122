"""``select``: rank every model, then spend a stated budget of short fine-tunes on the leaders.

Transferability estimators stop at a ranking; a user then fine-tunes its top model and hopes. Here
the ranking is the prior and a small budget buys evidence: successive halving (Jamieson & Talwalkar,
AISTATS 2016; Li et al.'s Hyperband, JMLR 2018) over the models the ranking cannot tell apart.

1. ``rank`` scores the catalogue (features cached). The models the ranking cannot separate from its
   leader enter: the leader and every model whose 90% interval of the first estimator reaches the
   leader's (at least ``min_entrants``, at most ``max_entrants``), in ranking order, within the
   GMACs/params budgets. While the budget can still train every finalist for the full
   ``full_epochs``, further models enter in ranking order: a budget buys more candidates before it
   buys longer trials, never trials longer than the fine-tune it is measured against.
2. Round r trains each surviving model with the one training loop
   (:func:`zooforge.tuning.loop.train`, ``method`` as in ``tune``) on a stratified share of the
   training data and scores it on the rest: a validation split carved from the data it was given,
   never a test split. Epochs double from round to round and the last round trains for
   ``full_epochs`` (fewer only when the budget cannot pay for that with the models the ranking
   cannot separate). The better half (ties to the ranking's order) goes on, and the ranking's leader
   always does: it is the prior, and the last round keeps it unless the best other finalist beats
   it on the validation samples by a paired one-sided test at level
   :data:`zooforge.tuning.paired.ALPHA` (Bonferroni over the challengers), in trials as long as the
   ``full_epochs`` fine-tune they stand for (:func:`~zooforge.selection.halving.final_choice`). A
   handful of noisy validation points never overturns the ranking, nor does a lead after a fraction
   of the epochs (learning curves cross: a model that learns fast can lead early and end behind); a
   clear lead at full length does.
   The choice's fine-tuned weights are saved.
3. Cost is counted in training compute: epochs x training samples x GMACs per sample x 3 (forward
   and backward) for methods that train through the backbone, x 1 for the linear probe. The budget
   ``fraction`` is a share of fine-tuning *every* model fully (``full_epochs`` epochs, method
   ``full``); the schedule is charged up front for the most expensive models that could survive
   each round, and models are dropped from the end of the ranking while not even one epoch each
   fits. ``seconds`` caps wall time instead (or as well): no trial starts once it is spent, and the
   choice is then the best of the last round that finished.

Every finished trial is appended to ``<out>/trials.jsonl`` under a key of everything that
determines it (model entry, dataset fingerprint, method, epochs, learning rate, seed, split), so a
run killed at any point resumes without repeating a finished trial. The ranking is written to
``<out>/ranking.parquet`` as soon as it is computed, beside ``ranking.json``, a key of what it
depends on (the model entries, the dataset, the estimators and their versions, the resampling, the
budgets, the default ordering and zooforge's version): a rerun whose key matches reads it instead of
scoring the catalogue again (on cached features the linear probe alone costs seconds a model). The
chosen model's weights are saved as ``adapters.safetensors`` with ``chosen.json`` naming the trial
they come from, so a finished run run again loads them instead of fine-tuning the winner once more.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from zooforge.config import SelectConfig, build_config
from zooforge.errors import ZooforgeError
from zooforge.selection.halving import (eligible, entrants, final_choice, halving_rounds, halving_trials, plan_schedule,
                                        round_epochs, schedule_cost, successive_halving)
from zooforge.selection.select_store import VALIDATION_SPLIT, saved_choice, stored_ranking, trial_key, write_keyed
from zooforge.tuning.paired import ALPHA

__all__ = ["SelectConfig", "SelectResult", "select", "plan_schedule", "round_epochs", "halving_rounds",
           "successive_halving", "entrants", "rounds_table", "decision_sentence"]

TRAIN_FLOPS_FACTOR = 3.0        # forward + backward, relative to a forward pass


@dataclass
class SelectResult:
    model: str                               # the choice
    val_accuracy: float
    rounds: list[dict]                       # one row per trial: round, model, epochs, val_accuracy, seconds, cost
    entrants: list[str]
    spent: float                             # training compute spent (GMAC units, see the module docstring)
    fine_tune_all: float                     # the compute of fully fine-tuning every candidate
    seconds: float
    ranking: object = field(default=None, repr=False)       # the rank table (polars)
    task: object = field(default=None, repr=False)          # the chosen model, fine-tuned
    decision: dict = field(default_factory=dict)            # the last round's test: leader, challenger, lead_se

    @property
    def spent_fraction(self) -> float:
        return self.spent / self.fine_tune_all if self.fine_tune_all else float("nan")

    def record(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("ranking", "task")}
        return out | {"spent_fraction": self.spent_fraction}


# ---- the run ---------------------------------------------------------------------------------------
def select(catalogue, dataset, config: SelectConfig | None = None, *, out_dir: str | Path | None = None,
           log: Callable[[str], None] | None = None, **options) -> SelectResult:
    """Rank ``catalogue`` on ``dataset``, then confirm the choice with successive halving under the
    budget (module docstring). ``config``: a :class:`~zooforge.config.SelectConfig`; keyword
    ``options`` set or override its fields (``select(cat, data, fraction=0.1, models=["a*"])``).
    ``out_dir`` receives the trials (resumable), the result and the chosen model's weights; ``log``
    is called with each message."""
    import torch

    from zooforge.tuning.loop import TrainConfig, TrainingDiverged, outputs, train
    from zooforge.tuning.objectives import METRIC_NAMES, init_head, objective
    from zooforge.tuning.paired import keep_margin
    from zooforge.tuning.methods import build, inputs_for, save_adapters
    from zooforge.tuning.tune import DEFAULT_LR
    from zooforge.zoo import filter_entries, load_catalogue, load_dataset
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.cache import atomic_write_bytes
    from zooforge.zoo.features import progress_bar

    cfg = build_config(SelectConfig, config, options, "select")
    say = log or (lambda message: None)
    started = time.perf_counter()
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    entries = {e.id: e for e in filter_entries(catalogue if isinstance(catalogue, list) else load_catalogue(catalogue),
                                               list(cfg.models) if cfg.models else None)}
    out = Path(out_dir) if out_dir is not None else None
    table = stored_ranking(list(entries.values()), ds, cfg, out, say)
    from zooforge.selection.ordering import Ordering

    first = Ordering.parse(table["ordering"][0]).first_decided_by[0]     # whose intervals say who is near the top
    ranked = entrants(table, first, cfg.min_entrants, cfg.max_entrants)
    if not ranked:
        raise ZooforgeError("no model could be ranked within the budgets; nothing to fine-tune (see `rank`).")
    pool = (ranked + [r["model"] for r in eligible(table, first) if r["model"] not in ranked])
    pool = pool[:max(cfg.max_entrants, len(ranked))]             # the budget may add models after these
    gmacs = dict(zip(table["model"], table["gmacs"]))
    fit_idx, val_idx = ds.split_indices(VALIDATION_SPLIT, cfg.seed)
    n_fit = len(fit_idx)
    factor = 1.0 if cfg.method == "linear" else TRAIN_FLOPS_FACTOR
    per_epoch = [n_fit * float(gmacs[m]) * factor for m in pool]
    scored = [r["model"] for r in table.iter_rows(named=True) if r["gmacs"] is not None and r["error"] is None]
    fine_tune_all = sum(cfg.full_epochs * len(ds) * float(gmacs[m]) * TRAIN_FLOPS_FACTOR for m in scored)
    if cfg.fraction is not None:
        n_arms, schedule = plan_schedule(per_epoch, cfg.fraction * fine_tune_all, min_arms=len(ranked),
                                         max_epochs=cfg.full_epochs)
    else:                                           # only a time budget: the models the ranking cannot separate
        n_arms, schedule = len(ranked), round_epochs(len(ranked), cfg.full_epochs)
    if n_arms == 0:
        cheapest = min(per_epoch)
        raise ZooforgeError(f"the budget ({cfg.fraction:.3g} of fine-tuning all {len(scored)} models) cannot pay for "
                            f"one epoch of one model: that takes at least {cheapest / fine_tune_all:.3g} of it "
                            f"(--budget {math.ceil(cheapest / fine_tune_all * 1000) / 1000:g}).")
    arms = pool[:n_arms]
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.method]
    say(f"{len(ranked)} model(s) the ranking cannot separate; {n_arms} enter successive halving, epochs by round "
        f"{schedule} ({', '.join(arms)})")
    ledger_path = out / "trials.jsonl" if out else None
    done: dict[str, dict] = {}
    if ledger_path is not None and ledger_path.is_file():
        for line in ledger_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue                      # a line cut by a kill mid-write: that trial runs again
            done[row["key"]] = row
    fit, val = ds.subset(fit_idx, "select-fit"), ds.subset(val_idx, "select-val")
    y_fit, y_val = torch.as_tensor(fit.labels), torch.as_tensor(val.labels)
    trained: dict[str, object] = {}               # this round's fine-tuned models only (memory)
    latest_round = [0]
    spent_seconds = [0.0]
    spent = [0.0]
    charged: set[str] = set()                     # a trial asked for again (same epochs) is charged once
    judge = objective(ds.task)

    def charge(row: dict) -> None:
        if row["key"] not in charged:
            spent[0] += row["cost"]
            charged.add(row["key"])

    def trial(model_id: str, epochs: int, round_: int, record: bool = True) -> float:
        key = trial_key(entries[model_id], ds, cfg, epochs, lr)
        if key in done and "evidence" in done[key]:       # (a ledger line without evidence runs again)
            charge(done[key])
            return done[key]["val_accuracy"]
        if cfg.seconds is not None and spent_seconds[0] > cfg.seconds:
            raise _OutOfTime
        if round_ > latest_round[0]:
            trained.clear()                         # earlier rounds' models are not the choice
            latest_round[0] = round_
        backbone = Backbone.from_entry(entries[model_id])
        x_fit, x_val = inputs_for(backbone, fit), inputs_for(backbone, val)
        torch.manual_seed(cfg.seed)
        task = build(backbone, ds.num_classes, cfg.method, task=ds.task)
        init_head(task, ds.task, y_fit)
        t0 = time.perf_counter()
        run = train(task, x_fit, y_fit, TrainConfig(epochs=epochs, lr=lr, batch_size=cfg.batch_size, seed=cfg.seed,
                                                    device=cfg.device, progress=False))
        predicted = outputs(task, x_val)
        # a diverged run (NaN weights) is last, not scored by whatever NaN outputs happen to give
        acc = float("-inf") if run.diverged else judge.score(predicted, y_val)
        seconds = time.perf_counter() - t0
        cost = epochs * n_fit * float(gmacs[model_id]) * factor
        spent_seconds[0] += seconds
        row = {"key": key, "round": round_, "model": model_id, "epochs": epochs, "val_accuracy": acc,
               "seconds": seconds, "cost": cost, "evidence": judge.per_sample(predicted, y_val).tolist()}
        done[key] = row
        charge(row)
        trained[model_id] = task
        if record and ledger_path is not None:
            ledger_path.parent.mkdir(parents=True, exist_ok=True)
            with ledger_path.open("a") as fh:       # one line per finished trial: a kill loses one at most
                fh.write(json.dumps(row) + "\n")
        said = f"diverged, last ({run.diverged})" if run.diverged else f"validation {METRIC_NAMES[ds.task]} {acc:.4f}"
        say(f"round {round_}: {model_id} {epochs} epoch(s): {said} ({seconds:.1f} s)")
        advance(1)
        return acc

    decision: dict = {}

    def decide(finalists: list[str], epochs: int) -> str:
        """The ranking's leader, unless the best other finalist beats it in trials as long as the
        fine-tune (the module docstring, 2.)."""
        evidence = [torch.tensor(done[trial_key(entries[m], ds, cfg, epochs, lr)]["evidence"]) for m in finalists]
        leader = finalists.index(arms[0]) if arms[0] in finalists else None
        c = final_choice(evidence, leader, epochs, cfg.full_epochs)
        full_schedule = schedule_cost(per_epoch[:len(arms)], round_epochs(len(arms), cfg.full_epochs))
        decision.update(leader=arms[0], challenger=None if c["challenger"] is None else finalists[c["challenger"]],
                        lead_se=c["lead"], margin_se=keep_margin(len(finalists) - 1) if leader is not None else None,
                        chosen=finalists[c["kept"]], passed=c["passed"], epochs=epochs, full_epochs=cfg.full_epochs,
                        full_length_budget=full_schedule / fine_tune_all)
        return finalists[c["kept"]]

    with progress_bar(cfg.progress, "fine-tuning trials", halving_trials(len(arms))) as advance:
        try:
            winner, rows = successive_halving(arms, schedule, trial, incumbent=arms[0],
                                              decide=lambda finalists, _: decide(finalists, schedule[-1]))
        except _OutOfTime:
            finished = [r for r in done.values() if r["model"] in arms and "evidence" in r]
            if not finished:
                raise ZooforgeError(f"--budget-seconds {cfg.seconds:g} ran out before one trial finished.") from None
            best_round = max(r["round"] for r in finished)
            last = sorted((r for r in finished if r["round"] == best_round), key=lambda r: arms.index(r["model"]))
            winner = decide([r["model"] for r in last], last[0]["epochs"])
            rows = [{k: r[k] for k in ("round", "model", "epochs", "val_accuracy")}
                    for r in sorted(finished, key=lambda r: (r["round"], arms.index(r["model"])))]
            say(f"the time budget ran out in round {best_round + 1}: choosing among the models of round {best_round}")
    for row in rows:
        row.update({k: done.get(trial_key(entries[row["model"]], ds, cfg, row["epochs"], lr), {}).get(k)
                    for k in ("seconds", "cost")})
    final = [r for r in rows if r["model"] == winner][-1]
    if final["val_accuracy"] == float("-inf"):
        raise TrainingDiverged(f"the trial of {winner}, the choice, diverged at lr {lr:g}, as every trial of its round "
                               "did: its weights are no choice. Lower the learning rate (--lr).")
    task = trained.get(winner)
    if out is not None:
        winner_key = trial_key(entries[winner], ds, cfg, final["epochs"], lr)
        if task is None:                          # a finished run, run again: the weights it saved
            task = saved_choice(out, entries[winner], winner_key)
        if task is None:                          # resumed after the winner's trial: retrain it to save it
            saved = done.pop(winner_key)
            spent[0] -= saved["cost"]
            charged.discard(saved["key"])
            trial(winner, final["epochs"], final["round"], record=False)     # it is in the ledger already
            task = trained[winner]
        if winner in trained:                     # trained here: its weights, then which trial they are
            write_keyed(out / "chosen.json", {"key": winner_key, "model": winner}, lambda: save_adapters(task, out))
    result = SelectResult(winner, final["val_accuracy"], rows, arms, spent[0], fine_tune_all,
                          time.perf_counter() - started, table, task, decision)
    if out is not None:
        from zooforge.selection.plot import plot_rounds

        atomic_write_bytes(out / "result.json", json.dumps(result.record(), indent=2, default=str).encode())
        plot_rounds(rows, out / "rounds.png", chosen=winner)
    return result


def decision_sentence(decision: dict) -> str:
    """One sentence on the last round's test (``SelectResult.decision``) for the CLI and the report."""
    if not decision or decision.get("challenger") is None:
        return "One finalist: nothing to test against the ranking's leader." if decision else ""
    lead, margin = decision.get("lead_se"), decision.get("margin_se")
    if decision.get("margin_se") is None:
        return f"The ranking's leader was out of the last round; the best finalist, {decision['chosen']}, was chosen."
    if decision["chosen"] != decision["leader"]:
        verdict = "replaced it"
    elif decision.get("passed"):
        verdict = (f"led by enough, but after {decision['epochs']} of the fine-tune's {decision['full_epochs']} epochs: "
                   f"short trials prune the field and do not overturn the ranking, so the leader stays (a budget of "
                   f"{decision['full_length_budget']:.3g} trains these entrants for all {decision['full_epochs']})")
    else:
        verdict = "did not beat it by enough, so the leader stays"
    return (f"The ranking's leader {decision['leader']} against the best other finalist {decision['challenger']}: "
            f"a lead of {lead:+.2f} standard errors of the paired difference on the validation samples, where "
            f"{margin:.2f} is needed (one-sided, level {ALPHA:g}); the challenger {verdict}.")


class _OutOfTime(Exception):
    pass


def rounds_table(result: SelectResult):
    """The per-trial rows as a polars frame (for --out .parquet/.csv and reports)."""
    import polars as pl

    return pl.DataFrame(result.rounds, schema_overrides={"val_accuracy": pl.Float64, "seconds": pl.Float64,
                                                         "cost": pl.Float64})
