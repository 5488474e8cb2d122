"""``compose``: the DeRy pipeline from a catalogue, a dataset and a budget to a trained assembly.

1. cut every image model into blocks (:mod:`.blocks`) and run them on ``probe`` (1024) images from
   the target training split, keeping each block's pooled output (and the maps of the first
   ``STITCH_PROBE`` images, to fit stitches). LogME needs that many: on the 10-class demo glyphs
   target, stage LogMEs on 256 images are flat (every model about -0.217, the no-information value)
   and separate the useful stems only from about a thousand;
2. partition every model into K stages (:mod:`.partition`);
3. score each (model, stage) by LogME at the stage's output on the target labels, and each
   transition by CKA between the two cut points (``compat="cka"``) or by the R² of the least-squares
   stitch between them (``compat="stitch"``: how much of what the next block expects a linear stitch
   can give it); solve the CP-SAT program under the budget (:mod:`.solve`). The transition reward is
   counted in units of the typical spread of the stage scores (the median over stages of their
   standard deviation across models), so ``compat_weight`` = 1 means "a perfectly compatible
   transition is worth one standard deviation of LogME", whatever the scale of LogME on this data;
4. screen: the solver's best assembly for each of the 3 x ``screen`` best final blocks and its plain
   top-k (a structurally diverse pool; the plain top-k mostly differs in early stages) are built and
   stitched by least squares, and ordered by their *assembly LogME* (:func:`assembly_logme`: the best
   LogME among the untrained assembly's own stage outputs, which sees what a block gives when fed a
   stitched imitation of its usual input, not what it gives inside its own model). The best
   ``screen`` - 1 of them and the LogME-best single model within budget (an assembly of one model:
   blocks chained end to end give the model's own features) are trained on 80% of the training
   split for ``screen_epochs`` (default: ``epochs``, because stitched mixes start slowly: on demo
   glyphs a mix trails the single model for 4 of 10 epochs and ends 0.1-0.3 above it, so a 2-epoch
   screen always kept the single model). The best mix on the other 20% is kept if it beats the
   single model by more than one standard error of the paired difference (``SCREEN_MARGIN``),
   otherwise the single model is: the result does not fall below it by more than the screen's noise;
5. train the kept assembly on the whole training split with the one loop (optionally stitches and
   head first, blocks frozen, for ``stitch_epochs``);
6. fine-tune the best single zoo model within the same budget (LogME-best among those that fit) with
   the same loop and epochs, and report both on the held-out split.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.metrics.logme import logme
from zooforge.reassembly.blocks import cut
from zooforge.reassembly.partition import block_graph, partition
from zooforge.reassembly.solve import Candidate, Problem, Solution, SolveResult, solve
from zooforge.reassembly.stitch import Assembly, Stitch, init_stitch, recipe_for, save_assembly
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, predict, train
from zooforge.tuning.tune import VALIDATION_SPLIT
from zooforge.zoo.cache import atomic_write_bytes

__all__ = ["ComposeResult", "compose", "plan"]


@dataclass
class ComposeResult:
    status: str
    explanation: str
    stages: list[dict]                       # stage, model, blocks, params, gmacs, score
    params: int
    gmacs: float
    accuracy: float | None = None
    baseline: dict | None = None             # best single model within budget: id, params, gmacs, accuracy
    alternatives: list[dict] = field(default_factory=list)
    within_stage_similarity: float | None = None
    stitch_r2: list[float] = field(default_factory=list)
    screened: list[dict] = field(default_factory=list)   # candidates tried briefly, with val accuracy
    seconds: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)           # model id -> why it could not take part
    model: Assembly | None = field(default=None, repr=False)
    recipe: dict | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "recipe")}


def _probe_inputs(p: dict, backbone) -> dict[str, torch.Tensor]:
    """The probe images as ``backbone`` takes them (its ``prepare`` output), once per plan and
    preprocessing: models with the same transform share one copy. ``plan`` fills the cache for the
    models it cuts; others (a baseline it skipped) are added here."""
    return _prepared(p.setdefault("probe_inputs", {}), backbone, p["dataset"], p["probe_index"])


def _prepared(cache: dict, backbone, dataset, index) -> dict[str, torch.Tensor]:
    if backbone.transform not in cache:
        cache[backbone.transform] = backbone.prepare([dataset.image(int(i)) for i in index])
    return cache[backbone.transform]


def _probe_images(p: dict, backbone) -> torch.Tensor:
    return _probe_inputs(p, backbone)["x"]


@torch.no_grad()
def _run_blocks(blocks, x: torch.Tensor, batch_size: int = 128) -> list[torch.Tensor]:
    """Maps after every block for inputs ``x``, kept whole: call it on few images."""
    return _probe_blocks(blocks, x, len(x), batch_size)[1]


@torch.no_grad()
def _probe_blocks(blocks, x: torch.Tensor, keep: int, batch_size: int = 128) -> tuple[list[torch.Tensor],
                                                                                       list[torch.Tensor]]:
    """Run ``blocks`` in a chain over ``x`` in batches: (every block's globally pooled output (N, C)
    for all of ``x``, every block's map for the first ``keep`` images only). Memory is O(N·C), not
    O(N·C·H·W): a thousand probe images through a 224-pixel network would not fit otherwise."""
    pooled: list[list[torch.Tensor]] = [[] for _ in blocks]
    maps: list[list[torch.Tensor]] = [[] for _ in blocks]
    for i in range(0, len(x), batch_size):
        h = x[i:i + batch_size]
        for j, b in enumerate(blocks):
            h = b(h)
            pooled[j].append(h.mean(dim=(2, 3)))
            if i < keep:
                maps[j].append(h[:keep - i])
    return [torch.cat(o) for o in pooled], [torch.cat(m) if m else torch.empty(0) for m in maps]


def plan(catalogue, dataset, budget_gmacs: float | None, budget_params: float | None = None, *, stages: int = 4,
         models=None, max_blocks: int | None = 8, probe: int = 1024, top_k: int = 3, compat_weight: float = 1.0,
         compat: str = "cka", seed: int = 0, time_limit: float = 10.0, screen: int = 0) -> dict:
    """Steps 1–3: blocks, partition, proxy scores and the CP-SAT solution (no training). ``compat``:
    how a transition between two models is scored, "stitch" (R² of the least-squares stitch) or
    "cka" (CKA between the two cut points' pooled outputs)."""
    if compat not in ("stitch", "cka"):
        raise ValueError(f"`compat` must be 'stitch' or 'cka'; got {compat!r}.")
    from zooforge.zoo import filter_entries, load_catalogue, load_dataset
    from zooforge.zoo.backbone import Backbone

    entries = catalogue if isinstance(catalogue, list) else load_catalogue(catalogue)
    entries = filter_entries(entries, list(models) if models else None)
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    _classes_only(ds)
    if not entries:
        raise ZooforgeError("the catalogue has no models to compose from.")
    timings = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), size=min(probe, len(ds)), replace=False))
    labels = ds.labels[idx]
    backbones, blocks, infos, maps, reps, skipped, inputs = {}, {}, {}, {}, {}, {}, {}
    for e in entries:
        try:
            b = Backbone.from_entry(e)
            b.model.eval()
            bl, inf = cut(b, max_blocks)
        except ZooforgeError as exc:
            skipped[e.id] = str(exc)
            continue
        if len(bl) < stages:
            skipped[e.id] = f"{len(bl)} blocks < {stages} stages"
            continue
        backbones[e.id], blocks[e.id], infos[e.id] = b, bl, inf
        reps[e.id], maps[e.id] = _probe_blocks(bl, _prepared(inputs, b, ds, idx)["x"], STITCH_PROBE)
    if len(backbones) < 1:
        raise ZooforgeError(f"no model could be cut into {stages} stages: {skipped}")
    timings["blocks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = block_graph({m: [r[:CKA_PROBE] for r in rs] for m, rs in reps.items()})
    part = partition(reps, stages, graph=graph)
    timings["partition"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = list(backbones)
    score = {(m, c): logme(reps[m][c - 1].numpy(), labels) for m in ids for c in set(part.cuts[m][1:])}
    num_classes = ds.num_classes
    cands = []
    for k in range(stages):
        row = []
        for m in ids:
            s, e = part.cuts[m][k], part.cuts[m][k + 1]
            params = sum(i.params for i in infos[m][s:e])
            gm = sum(i.gmacs for i in infos[m][s:e])
            if k == stages - 1:
                c_out = infos[m][e - 1].out_shape[0]
                params += c_out * num_classes + num_classes
                gm += (c_out * num_classes) / 1e9
            row.append(Candidate(m, (s, e), params, gm, float(score[m, e])))
        cands.append(row)
    compats, sp, sg = [], [], []
    for k in range(stages - 1):
        n = len(ids)
        c = np.ones((n, n))
        p = np.zeros((n, n), dtype=np.int64)
        g = np.zeros((n, n))
        for i, a in enumerate(ids):
            for j, b in enumerate(ids):
                if a == b:
                    continue
                ca, cb = part.cuts[a][k + 1], part.cuts[b][k + 1]
                c_in = infos[a][ca - 1].out_shape[0]
                c_out, h, w = infos[b][cb].in_shape
                if compat == "cka":
                    c[i, j] = graph.edges[(a, ca), (b, cb)]["weight"]
                else:
                    c[i, j] = max(0.0, stitch_fit(maps[a][ca - 1][:COMPAT_PROBE], maps[b][cb - 1][:COMPAT_PROBE]))
                p[i, j] = c_in * c_out + c_out
                g[i, j] = c_in * c_out * h * w / 1e9
        compats.append(c)
        sp.append(p)
        sg.append(g)
    spreads = [float(np.std([c.score for c in row])) for row in cands]
    spread = float(np.median(spreads)) or 1.0
    problem = Problem(cands, compats, sp, sg, compat_weight=compat_weight * spread)
    solved = solve(problem, budget_gmacs, None if budget_params is None else budget_params, top_k=top_k,
                   time_limit=time_limit, seed=seed)
    diverse = solve(problem, budget_gmacs, None if budget_params is None else budget_params,
                    top_k=SCREEN_POOL * screen, time_limit=time_limit, seed=seed,
                    distinct="last").solutions if screen > 1 else []
    timings["solve"] = time.perf_counter() - t0
    return {"dataset": ds, "entries": {e.id: e for e in entries}, "backbones": backbones, "blocks": blocks,
            "infos": infos, "maps": maps, "partition": part, "problem": problem, "solved": solved,
            "skipped": skipped, "probe_index": idx, "max_blocks": max_blocks, "seconds": timings,
            "diverse": diverse, "probe_inputs": inputs}


# Screening draws from SCREEN_POOL x ``screen`` assemblies, ordered by the LogME of their own
# least-squares-stitched features (no training) before the best ``screen`` are trained briefly.
SCREEN_POOL = 3
# Probe images whose maps are kept to fit stitches by least squares (pixels are the rows): the
# other probe images give pooled outputs only (LogME, CKA).
STITCH_PROBE = 128
# Of those, the images that fit each candidate stitch when scoring transitions.
COMPAT_PROBE = 64
# Probe images whose pooled outputs give block CKA (partition, transitions): CKA settles with far
# fewer samples than LogME needs, and its Gram matrices grow with the square of this.
CKA_PROBE = 512


def stitch_fit(source: torch.Tensor, target: torch.Tensor) -> float:
    """R² of the least-squares stitch from ``source`` maps (N, C_a, H_a, W_a) to ``target`` maps
    (N, C_b, H_b, W_b): how much of what the next block expects a linear stitch can give it."""
    stitch = Stitch(source.shape[1], target.shape[1], tuple(source.shape[-2:]), tuple(target.shape[-2:]))
    return init_stitch(stitch, source, target)


def _assemble(p: dict, solution, num_classes: int) -> tuple[Assembly, list[float], dict]:
    blocks, infos, maps = p["blocks"], p["infos"], p["maps"]
    chosen = solution.candidates
    # copies: training one assembly must not change the blocks the next one is built from
    stages = [nn.Sequential(*[copy.deepcopy(blocks[c.model][i]) for i in range(*c.blocks)]) for c in chosen]
    first = p["backbones"][chosen[0].model]
    x = _probe_images(p, first)[:STITCH_PROBE]          # the images whose maps plan() kept
    stitches, r2 = [], []
    h = None
    with torch.no_grad():
        h = _run_blocks(list(stages[0]), x)[-1] if len(stages[0]) else x
        for k in range(len(chosen) - 1):
            a, b = chosen[k], chosen[k + 1]
            if a.model == b.model:
                stitches.append(nn.Identity())
            else:
                c_in = infos[a.model][a.blocks[1] - 1].out_shape[0]
                c_out, hh, ww = infos[b.model][b.blocks[0]].in_shape
                s = Stitch(c_in, c_out, tuple(h.shape[-2:]), (hh, ww))
                r2.append(init_stitch(s, h, maps[b.model][b.blocks[0] - 1]))
                stitches.append(s)
            h = _run_blocks(list(stages[k + 1]), stitches[-1](h))[-1]
    out_channels = infos[chosen[-1].model][chosen[-1].blocks[1] - 1].out_shape[0]
    model = Assembly(stages, stitches, out_channels, num_classes)
    t = first.transform
    recipe = recipe_for([p["entries"][c.model] for c in chosen], [c.blocks for c in chosen], stitches,
                        out_channels, num_classes, t.input_size, t.mean, t.std, p["max_blocks"],
                        {"partition_cuts": {c.model: p["partition"].cuts[c.model] for c in chosen}})
    return model, r2, recipe


def _fit(model: nn.Module, x_tr, y_tr, cfg: TrainConfig, frozen_first: int):
    """Stitches and head first (``frozen_first`` epochs, blocks frozen), then everything."""
    history = []
    if frozen_first and isinstance(model, Assembly):
        for p_ in model.stages.parameters():
            p_.requires_grad_(False)
        r = train(model, x_tr, y_tr, TrainConfig(**{**cfg.__dict__, "epochs": frozen_first, "checkpoint_dir": None}))
        history += r.history
        for p_ in model.stages.parameters():
            p_.requires_grad_(True)
    r = train(model, x_tr, y_tr, cfg)
    return history + r.history


def compose(catalogue, dataset, budget_gmacs: float | None, budget_params: float | None = None, *, stages: int = 4,
            models=None, epochs: int = 10, stitch_epochs: int = 0, lr: float = 1e-3, batch_size: int = 64,
            split: float = 0.8, seed: int = 0, top_k: int = 3, screen: int = 4, screen_epochs: int | None = None,
            max_blocks: int | None = 8, probe: int = 1024, compat_weight: float = 1.0, compat: str = "cka",
            baseline: bool = True,
            out_dir: str | Path | None = None, progress: bool = False, device: str | None = None) -> ComposeResult:
    """The whole DeRy pipeline (module docstring); ``budget_params`` in parameters. ``screen`` <= 1
    keeps the solver's best assembly without screening."""
    from zooforge.tuning.methods import inputs_for
    from zooforge.zoo import load_dataset

    screen_epochs = epochs if screen_epochs is None else screen_epochs
    if epochs < 1 or stitch_epochs < 0 or screen_epochs < 1:
        raise ValueError(f"`epochs` and `screen_epochs` must be >= 1 and `stitch_epochs` >= 0; got "
                         f"{epochs}, {screen_epochs}, {stitch_epochs}.")
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    _classes_only(ds)
    train_ds, test_ds = ds.split(split, seed)
    p = plan(catalogue, train_ds, budget_gmacs, budget_params, stages=stages, models=models, max_blocks=max_blocks,
             probe=probe, top_k=top_k, compat_weight=compat_weight, compat=compat, seed=seed, screen=screen)
    solved: SolveResult = p["solved"]
    if not solved.solutions:
        raise ZooforgeError(f"cannot compose within the budget: {solved.explain()}.")
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress, device=device)
    best, screened = solved.solutions[0], []
    if screen > 1:
        pool = p["diverse"] + [s for s in solved.solutions if all(s.choice != d.choice for d in p["diverse"])]
        best, screened = _screen(p, _screen_candidates(p, pool, budget_gmacs, budget_params, screen, seed),
                                 train_ds, cfg, screen_epochs, seed)
    rows = [{"stage": k, "model": c.model, "blocks": f"{c.blocks[0]}-{c.blocks[1] - 1}", "params": c.params,
             "gmacs": c.gmacs, "score": c.score} for k, c in enumerate(best.candidates)]
    alternatives = [{"models": [c.model for c in s.candidates], "objective": s.objective, "params": s.params,
                     "gmacs": s.gmacs} for s in solved.solutions]
    result = ComposeResult(solved.status, solved.explain(), rows, best.params, best.gmacs, alternatives=alternatives,
                           within_stage_similarity=p["partition"].similarity, seconds=dict(p["seconds"]),
                           screened=screened, left_out=dict(p["skipped"]))
    torch.manual_seed(seed)
    model, r2, recipe = _assemble(p, best, ds.num_classes)
    result.stitch_r2, result.model, result.recipe = r2, model, recipe
    first = p["backbones"][best.candidates[0].model]
    x_tr, x_te = inputs_for(first, train_ds), inputs_for(first, test_ds)
    y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
    t0 = time.perf_counter()
    _fit(model, x_tr, y_tr, cfg, stitch_epochs)
    result.accuracy = evaluate_accuracy(model, x_te, y_te)
    result.seconds["train"] = time.perf_counter() - t0
    if baseline:
        result.baseline = _baseline(p, train_ds, test_ds, budget_gmacs, budget_params, cfg, stitch_epochs, seed)
    if out_dir is not None:
        save_assembly(model.cpu(), recipe, out_dir)
        atomic_write_bytes(Path(out_dir) / "result.json", json.dumps(result.record(), indent=2, default=float).encode())
    return result


def _single_model_solution(p: dict, model: str) -> Solution:
    """Model ``model`` as an assembly: its own candidate at every stage (no stitches)."""
    problem: Problem = p["problem"]
    choice = tuple(next(i for i, c in enumerate(row) if c.model == model) for row in problem.stages)
    cands = [row[i] for row, i in zip(problem.stages, choice)]
    objective = sum(c.score for c in cands) + problem.compat_weight * (len(cands) - 1)
    return Solution(choice, cands, objective, problem.fixed_params + sum(c.params for c in cands),
                    problem.fixed_gmacs + sum(c.gmacs for c in cands))


def assembly_logme(p: dict, solution: Solution) -> float:
    """The screen's training-free proxy for an assembly: the best LogME among its stage outputs
    (:func:`stage_logme`) on the probe images, untrained, its blocks chained with least-squares
    stitches. Stitched, a block fed a poor imitation of its usual input scores what it really gives,
    not what it gives in its own model. The best stage, not the last: fine-tuning can carry a
    representation that an early stage computes to the head, so an assembly is worth about its most
    task-informative stage. On the demo glyphs target (23 assemblies trained 10 epochs each) this
    ranks them with Spearman 0.77 against 0.54 for the last stage alone."""
    return max(stage_logme(p, solution))


def stage_logme(p: dict, solution: Solution, model: Assembly | None = None) -> list[float]:
    """LogME of the globally pooled output of every stage of the (untrained) assembly."""
    if model is None:
        model = _assemble(p, solution, p["dataset"].num_classes)[0]
    return _stage_logme(p, solution, model)


def _stage_logme(p: dict, solution: Solution, model: Assembly) -> list[float]:
    # each stage with the stitch that feeds it, so the chain's pooled outputs are the stages' outputs
    units = [model.stages[0]] + [nn.Sequential(s, st) for s, st in zip(model.stitches, model.stages[1:])]
    pooled, _ = _probe_blocks(units, _probe_images(p, p["backbones"][solution.candidates[0].model]), keep=0)
    labels = p["dataset"].labels[p["probe_index"]]
    return [logme(f.double().numpy(), labels) for f in pooled]


class Shortlisted(NamedTuple):
    solution: Solution
    assembly_logme: float        # max of stage_logme
    model: Assembly              # built (seeded) and scored, not yet trained: the screen trains this one
    stage_logme: list[float]


def _screen_candidates(p: dict, solutions: list[Solution], budget_gmacs, budget_params, keep: int,
                       seed: int = 0) -> list[Shortlisted]:
    """What the screen trains: the ``keep`` best of the solver's ``solutions`` by
    :func:`assembly_logme`, with the LogME-best single model that fits the budget (its last stage's
    score is LogME on the model's own features) always among them, last. Each assembly is built once,
    after ``torch.manual_seed(seed)``; only the shortlisted ones are kept in memory."""
    fits = [s for s in (_single_model_solution(p, m) for m in p["backbones"])
            if (budget_gmacs is None or s.gmacs <= budget_gmacs) and (budget_params is None or s.params <= budget_params)]
    single = max(fits, key=lambda s: s.candidates[-1].score) if fits else None

    def built(sol: Solution) -> Shortlisted:
        torch.manual_seed(seed)
        model = _assemble(p, sol, p["dataset"].num_classes)[0]
        stages = _stage_logme(p, sol, model)
        return Shortlisted(sol, max(stages), model, stages)

    room = keep - 1 if single is not None else keep
    shortlist: list[Shortlisted] = []
    for sol in solutions:
        if single is None or sol.choice != single.choice:
            # stable: among equal scores the solver's order wins, as in a sort of the whole pool
            shortlist = sorted(shortlist + [built(sol)], key=lambda s: -s.assembly_logme)[:room]
    return shortlist + ([built(single)] if single is not None else [])


def _screen(p: dict, candidates: list[Shortlisted], train_ds, cfg: TrainConfig, epochs: int, seed: int):
    """Train each shortlisted assembly on 80% of ``train_ds`` for ``epochs``; validate on the other
    20%. The best mix (ties: the shortlist's order) is kept only if it beats the single model (the
    shortlist's last entry, when one fits the budget) by more than ``SCREEN_MARGIN`` standard errors
    of the paired difference in per-sample correctness; otherwise the single model is kept: with
    a validation set of a hundred images, a mix that merely ties it is as likely to be worse.
    Returns the kept solution and one record per candidate (``kept`` marks the one)."""
    from zooforge.tuning.methods import inputs_for

    fit_ds, val_ds = train_ds.split(VALIDATION_SPLIT, seed + 1)
    y_val = torch.as_tensor(val_ds.labels)
    short = TrainConfig(**{**cfg.__dict__, "epochs": epochs, "checkpoint_dir": None, "progress": False})
    records, correct, inputs = [], [], {}
    for sol, proxy, model, stages in candidates:
        first = p["backbones"][sol.candidates[0].model]
        key = first.transform
        if key not in inputs:
            inputs[key] = (inputs_for(first, fit_ds), inputs_for(first, val_ds))
        (x_fit, x_val) = inputs[key]
        t0 = time.perf_counter()
        train(model, x_fit, torch.as_tensor(fit_ds.labels), short)
        correct.append((predict(model, x_val) == y_val).double())
        records.append({"models": [c.model for c in sol.candidates], "blocks": [list(c.blocks) for c in sol.candidates],
                        "objective": sol.objective, "assembly_logme": proxy, "stage_logme": stages,
                        "params": sol.params, "gmacs": sol.gmacs, "val_accuracy": float(correct[-1].mean()),
                        "seconds": time.perf_counter() - t0, "kept": False})
    # the last is the single model when one fits; and if none fits, no one-model assembly can be here
    single = len(candidates) - 1 if len({c.model for c in candidates[-1].solution.candidates}) == 1 else None
    keep, best_mix, margin = _keep(correct, single)
    if margin is not None:
        records[best_mix]["margin_se"] = margin         # its lead over the single model, in standard errors
    records[keep]["kept"] = True
    return candidates[keep].solution, records


# A mix replaces the single model only when its validation accuracy is higher by more than this many
# standard errors of the paired difference (see _screen).
SCREEN_MARGIN = 1.0


def _keep(correct: list[torch.Tensor], single: int | None) -> tuple[int, int | None, float | None]:
    """Which screened candidate to keep from their per-sample validation correctness (0/1 each):
    the best mix (earliest on ties) if there is no ``single`` or it beats ``correct[single]`` by more
    than ``SCREEN_MARGIN`` standard errors of the paired difference; else ``single``. Returns
    (kept, best mix or None, the best mix's lead over the single model in standard errors or None)."""
    mixes = [i for i in range(len(correct)) if i != single]
    if not mixes:
        return single, None, None
    best = max(mixes, key=lambda i: (float(correct[i].mean()), -i))
    if single is None:
        return best, best, None
    diff = (correct[best] - correct[single]).double()
    gain = float(diff.mean())
    se = float(diff.std() / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    margin = gain / se if se > 0 else (0.0 if gain == 0 else float(np.sign(gain)) * np.inf)
    return (best if gain > SCREEN_MARGIN * se else single), best, margin


def _baseline(p, train_ds, test_ds, budget_gmacs, budget_params, cfg, extra_epochs, seed) -> dict | None:
    """The LogME-best single model whose full cost (with a new head) fits the budget, fine-tuned alike."""
    from zooforge.tuning.methods import build, inputs_for
    from zooforge.zoo.backbone import Backbone

    c = train_ds.num_classes
    fits = []
    for mid, entry in p["entries"].items():
        b = p["backbones"].get(mid) or Backbone.from_entry(entry)
        dim = b.model.num_features if hasattr(b.model, "num_features") else 0
        params = b.num_params + dim * c + c
        gm = b.gmacs
        if (budget_gmacs is None or gm <= budget_gmacs) and (budget_params is None or params <= budget_params):
            fits.append((mid, b, params, gm))
    if not fits:
        return None
    labels = p["dataset"].labels[p["probe_index"]]      # the plan's dataset is ``train_ds``
    scored = []
    for mid, b, params, gm in fits:
        x = _probe_inputs(p, b)
        with torch.no_grad():
            feats = torch.cat([b.forward({k: v[i:i + 128] for k, v in x.items()})["features"]
                               for i in range(0, len(p["probe_index"]), 128)])
        scored.append((logme(feats.numpy(), labels), mid, b, params, gm))
    scored.sort(key=lambda t: -t[0])
    _, mid, b, params, gm = scored[0]
    torch.manual_seed(seed)
    task = build(b, c, "full")          # cut() copied what it took, so b's weights are still pristine
    x_tr, x_te = inputs_for(task.backbone, train_ds), inputs_for(task.backbone, test_ds)
    y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
    train(task, x_tr, y_tr, TrainConfig(**{**cfg.__dict__, "epochs": cfg.epochs + extra_epochs}))
    return {"model": mid, "params": task.total_params, "gmacs": gm, "accuracy": evaluate_accuracy(task, x_te, y_te)}


def _classes_only(ds) -> None:
    from zooforge.zoo.targets import require_classification

    require_classification(ds, "reassembly (DeRy) scores blocks with class-based estimators and trains a classifier")
