"""DeRy's step 4: which assemblies to train briefly, and which one to keep.

The shortlist: the solver's best assembly for each of the SCREEN_POOL x ``screen`` best final blocks
and its plain top-k (a structurally diverse pool; the plain top-k mostly differs in early stages),
each built with least-squares stitches and ordered by its *assembly LogME* (:func:`assembly_logme`),
plus the best single model within budget as ``rank`` orders them (an assembly of one model: its
blocks chained end to end give the model's own features). The screen trains each on 80% of the
training split and keeps the best mix only if it beats the single model on the other 20% by more
than the noise of picking the best of several (:func:`keep`: a one-sided paired test at level
``alpha`` with a Bonferroni correction over the mixes compared); otherwise the single model. What
the test compares on each validation image is ``evidence`` (:func:`per_image_evidence`): by default
minus the Brier score of the candidate's class probabilities, which tells two candidates apart on
the images both get right, or both wrong, where 0/1 correctness sees no difference. With
``folds`` = k the split is k-fold cross-validation instead: k trainings per candidate, and the test
sees every training image once (out-of-fold evidence, pooled; the folds' fits overlap, so the pooled
test is the usual slightly optimistic one of cross-validated comparisons).

The defaults, ``SCREEN_EVIDENCE`` = "brier" at ``SCREEN_ALPHA`` = 0.5, were chosen leave-one-zoo-out
by ``python benchmarks/keep_rule.py`` on six image zoos (96 compose runs, every candidate also trained
on the whole split and scored on held-out data): held out, choosing the evidence and level on the
other five zoos gains +5.22 points over the single model against +4.62 for the earlier 0/1 test at
0.05, ahead of it in 32 runs against 23 and behind in 5 against 0. ``python benchmarks/compose.py``
measures the result.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import torch
from torch import nn

from zooforge.metrics.logme import logme
from zooforge.reassembly.plan import Plan, probe_blocks
from zooforge.reassembly.solve import Solution
from zooforge.reassembly.stitch import Assembly
from zooforge.tuning.loop import TrainConfig, outputs, train
from zooforge.tuning.paired import keep, keep_margin
from zooforge.tuning.tune import VALIDATION_SPLIT
from zooforge.config import SCREEN_EVIDENCE_KINDS, Budget, ComposeConfig
from zooforge.errors import ZooforgeError

__all__ = ["SCREEN_ALPHA", "SCREEN_EVIDENCE", "Shortlisted", "assembly_logme", "check_folds", "keep", "keep_margin",
           "per_image_evidence", "screen", "shortlist", "stage_logme", "validation_rows"]

# The screen's test, by default: its level and what it compares on each validation image
# (:func:`per_image_evidence`), chosen together leave-one-zoo-out on six image zoos
# (``python benchmarks/keep_rule.py``; ``ComposeConfig.screen_level`` and ``screen_evidence``).
SCREEN_ALPHA = ComposeConfig.screen_level
SCREEN_EVIDENCE = ComposeConfig.screen_evidence


def per_image_evidence(probs: torch.Tensor, labels: torch.Tensor, kind: str = SCREEN_EVIDENCE) -> torch.Tensor:
    """A candidate's evidence on each validation image, higher is better, from its class
    probabilities ``probs`` (N, C): ``correct`` 0/1; ``p_true`` the probability of the true class;
    ``brier`` minus the Brier score; ``loglik`` the log-probability of the true class, floored at
    1e-4 (one confident mistake does not outweigh a hundred images)."""
    probs, labels = probs.double(), labels.long()
    if kind == "correct":
        return (probs.argmax(-1) == labels).double()
    true = probs[torch.arange(len(labels)), labels]
    if kind == "p_true":
        return true
    if kind == "loglik":
        return true.clamp_min(1e-4).log()
    if kind == "brier":
        return -(probs - torch.nn.functional.one_hot(labels, probs.shape[1])).square().sum(1)
    raise ValueError(f"the screen's evidence must be one of {tuple(SCREEN_EVIDENCE_KINDS)}; got {kind!r}.")


class Shortlisted(NamedTuple):
    solution: Solution
    assembly_logme: float        # max of stage_logme
    model: Assembly              # built (seeded) and scored, not yet trained: the screen trains this one
    stage_logme: list[float]


def assembly_logme(plan: Plan, solution: Solution) -> float:
    """The screen's training-free proxy for an assembly: the best LogME among its stage outputs
    (:func:`stage_logme`) on the probe images, untrained, its blocks chained with least-squares
    stitches. Stitched, a block fed an imitation of its usual input scores what it really gives, not
    what it gives inside its own model. The best stage, not the last: fine-tuning can carry what an
    early stage computes to the head, so an assembly is worth about its most task-informative stage."""
    return max(stage_logme(plan, solution))


def stage_logme(plan: Plan, solution: Solution, model: Assembly | None = None) -> list[float]:
    """LogME of the globally pooled output of every stage of the (untrained) assembly ``model``
    (built from ``solution`` when not given)."""
    if model is None:
        model = plan.assemble(solution).model
    # each stage with the stitch that feeds it, so the chain's pooled outputs are the stages' outputs
    units = [model.stages[0]] + [nn.Sequential(s, st) for s, st in zip(model.stitches, model.stages[1:])]
    pooled, _ = probe_blocks(units, plan.probe.images(plan.backbones[solution.candidates[0].model]), keep=0)
    return [logme(f.double().numpy(), plan.probe.labels) for f in pooled]


def shortlist(plan: Plan, solutions: list[Solution], budget: Budget, size: int, seed: int = 0,
              singles: Sequence[str] = ()) -> list[Shortlisted]:
    """What the screen trains: the ``size`` best of ``solutions`` by :func:`assembly_logme`, with the
    best single model last: the first of ``singles`` (model ids, best first:
    :func:`zooforge.reassembly.compose.ranked_singles`) that was cut into the plan's stages and fits
    ``budget``. Each assembly is built once, after ``torch.manual_seed(seed)``; only the shortlisted
    ones are kept in memory."""
    fits = (plan.single_model(m) for m in singles if m in plan.backbones)
    single = next((s for s in fits if budget.fits(s.gmacs, s.params)), None)

    def built(sol: Solution) -> Shortlisted:
        torch.manual_seed(seed)
        model = plan.assemble(sol).model
        stages = stage_logme(plan, sol, model)
        return Shortlisted(sol, max(stages), model, stages)

    room = size - 1 if single is not None else size
    kept: list[Shortlisted] = []
    for sol in solutions:
        if single is None or sol.choice != single.choice:
            # stable: among equal scores the solver's order wins, as in a sort of the whole pool
            kept = sorted(kept + [built(sol)], key=lambda s: -s.assembly_logme)[:room]
    return kept + ([built(single)] if single is not None else [])


def check_folds(folds: int, n: int) -> None:
    """Refuse a k-fold screen with fewer training images than folds (before any work is done)."""
    if folds > n:
        raise ZooforgeError(f"--screen-folds {folds} (`screen_folds`) needs at least {folds} training images to "
                            f"validate on; the training split has {n}. Use fewer folds, or 1 for one 80/20 split.")


def validation_rows(train_ds, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The screen's (fit, validation) row indices of ``train_ds``: one 80/20 split (``folds`` <= 1)
    or stratified ``folds``-fold cross-validation, seeded by ``seed`` + 1."""
    rows = ([train_ds.split_indices(VALIDATION_SPLIT, seed + 1)] if folds <= 1
            else train_ds.fold_indices(folds, seed + 1))
    return [(torch.as_tensor(fit), torch.as_tensor(val)) for fit, val in rows]


def screen(plan: Plan, candidates: list[Shortlisted], train_ds, cfg: TrainConfig, epochs: int,
           seed: int, folds: int = 1, evidence: str = SCREEN_EVIDENCE,
           alpha: float = SCREEN_ALPHA) -> tuple[Solution, list[dict]]:
    """Train each shortlisted assembly for ``epochs`` and validate it: with ``folds`` = 1 on 80% of
    ``train_ds`` and the other 20%; with ``folds`` = k >= 2 by stratified k-fold cross-validation, k
    trainings each, so that every training image validates once and the test below sees all of them
    (k = 5 trains on 80% each time, as the single split does). Keep one by :func:`keep` at level
    ``alpha`` on the pooled out-of-fold ``evidence`` (the single model is the shortlist's last entry
    when one fits the budget). Returns the kept solution and one record per candidate (``kept`` marks
    the one; ``val_score`` is the mean evidence the test compared, ``val_accuracy`` the share right)."""
    import copy

    from zooforge.tuning.methods import inputs_for

    check_folds(folds, len(train_ds))
    rows = validation_rows(train_ds, folds, seed)
    labels = torch.as_tensor(train_ds.labels)
    y_val = torch.cat([labels[val] for _, val in rows])
    short = TrainConfig(**{**cfg.__dict__, "epochs": epochs, "checkpoint_dir": None, "progress": False})
    records, scores, inputs = [], [], {}
    for sol, proxy, model, stages in candidates:
        first = plan.backbones[sol.candidates[0].model]
        if first.preprocessing_key not in inputs:            # each image preprocessed once, whatever the folds
            inputs[first.preprocessing_key] = inputs_for(first, train_ds)
        x = inputs[first.preprocessing_key]
        t0 = time.perf_counter()
        logits = []
        for f, (fit, val) in enumerate(rows):
            run = model if f == len(rows) - 1 else copy.deepcopy(model)     # every fold starts from the same weights
            train(run, x[fit], labels[fit], short)
            logits.append(outputs(run, x[val]))
        probs = torch.softmax(torch.cat(logits).double(), -1)
        scores.append(per_image_evidence(probs, y_val, evidence))
        records.append({"models": [c.model for c in sol.candidates], "blocks": [list(c.blocks) for c in sol.candidates],
                        "objective": sol.objective, "assembly_logme": proxy, "stage_logme": stages,
                        "params": sol.params, "gmacs": sol.gmacs,
                        "val_accuracy": float((probs.argmax(-1) == y_val).double().mean()), "evidence": evidence,
                        "val_score": float(scores[-1].mean()), "folds": len(rows),
                        "seconds": time.perf_counter() - t0, "kept": False})
    # the last is the single model when one fits; and if none fits, no one-model assembly can be here
    single = len(candidates) - 1 if len({c.model for c in candidates[-1].solution.candidates}) == 1 else None
    kept, best_mix, margin = keep(scores, single, alpha=alpha)
    if margin is not None:
        records[best_mix]["margin_se"] = margin         # its lead over the single model, in standard errors
    records[kept]["kept"] = True
    return candidates[kept].solution, records
