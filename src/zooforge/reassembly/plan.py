"""DeRy's steps 1-3, no training: blocks → similarity → partition → scores → solution, as one frozen
:class:`Plan`.

1. Cut every model into blocks (:mod:`.blocks`) and run them on ``probe`` images drawn from the
   target training split, keeping each block's pooled output (LogME, CKA) and the maps of the first
   ``STITCH_PROBE`` images (to fit stitches). LogME needs about a thousand probe images before stage
   scores separate the models, hence the default of 1024.
2. Partition every model into K stages by CKA between blocks (:mod:`.similarity`, :mod:`.partition`).
3. Score each (model, stage) by LogME at the stage's output on the target labels, and each
   transition between two models by CKA between the two cut points (``compat="cka"``) or by the R²
   of the least-squares stitch between them (``compat="stitch"``); solve the CP-SAT program under the
   budget (:mod:`.solve`). The transition reward is counted in units of the typical spread of the
   stage scores (the median over stages of their standard deviation across models), so
   ``compat_weight`` = 1 means "a perfectly compatible transition is worth one standard deviation of
   LogME", whatever LogME's scale on this data.

What comes after (screening, training) is :mod:`.screen` and :mod:`.compose`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.metrics.logme import logme
from zooforge.reassembly.blocks import BlockInfo, cut
from zooforge.reassembly.partition import Partition, block_graph, partition
from zooforge.reassembly.solve import Candidate, Problem, Solution, SolveResult, solve
from zooforge.reassembly.stitch import Assembly, Stitch, init_stitch, recipe_for
from zooforge.config import COMPAT_KINDS, Budget

__all__ = ["Assembled", "Plan", "ProbeImages", "classes_only", "plan", "probe_blocks", "run_blocks", "stitch_fit",
           "STITCH_PROBE", "COMPAT_PROBE", "CKA_PROBE", "SCREEN_POOL"]

# Probe images whose maps are kept to fit stitches by least squares (pixels are the rows): the other
# probe images give pooled outputs only (LogME, CKA).
STITCH_PROBE = 128
# Of those, the images that fit each candidate stitch when scoring transitions (``compat="stitch"``).
COMPAT_PROBE = 64
# Probe images whose pooled outputs give block CKA (partition, transitions): CKA settles with far
# fewer samples than LogME needs, and its Gram matrices grow with the square of this.
CKA_PROBE = 512
# The screen draws from SCREEN_POOL x ``screen`` assemblies (the best per final block), ordered by
# the LogME of their own least-squares-stitched features before the best are trained briefly.
SCREEN_POOL = 3


class ProbeImages:
    """A fixed sample of the training split, as each backbone takes it (its ``prepare`` output),
    prepared once per preprocessing: models that prepare images alike share one copy."""

    def __init__(self, dataset, index: np.ndarray):
        self.dataset, self.index = dataset, index
        self._prepared: dict = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels[self.index]

    def inputs(self, backbone) -> dict[str, torch.Tensor]:
        key = backbone.preprocessing_key
        if key not in self._prepared:
            self._prepared[key] = backbone.prepare([self.dataset.image(int(i)) for i in self.index])
        return self._prepared[key]

    def images(self, backbone) -> torch.Tensor:
        return self.inputs(backbone)[backbone.input_key]


class Assembled(NamedTuple):
    model: Assembly                 # untrained: stages copied from the plan's blocks, stitches fitted
    stitch_r2: list[float]          # least-squares R² of each stitch between two models
    recipe: dict                    # what rebuilds it (``save_assembly`` / ``load_assembly``)


@dataclass(frozen=True)
class Plan:
    """Everything steps 1-3 computed; read-only (the blocks are copied before anything trains)."""

    dataset: object                          # the split the probe images came from (compose: its training split)
    entries: dict                            # model id -> CatalogueEntry, every model asked for
    backbones: dict                          # model id -> Backbone, those cut into at least K blocks
    blocks: dict[str, list[nn.Module]]       # model id -> its blocks in order
    infos: dict[str, list[BlockInfo]]
    maps: dict[str, list[torch.Tensor]]      # model id -> each block's output maps on the first STITCH_PROBE probe images
    partition: Partition
    problem: Problem
    solved: SolveResult                      # the solver's top-k
    diverse: list[Solution]                  # the best assembly per final block, for the screen
    left_out: dict[str, str]                 # model id -> why it could not take part
    probe: ProbeImages
    max_blocks: int | None
    seconds: dict[str, float]

    def single_model(self, model: str) -> Solution:
        """Model ``model`` as an assembly: its own candidate at every stage (no stitches)."""
        stages = self.problem.stages
        choice = tuple(next(i for i, c in enumerate(row) if c.model == model) for row in stages)
        cands = [row[i] for row, i in zip(stages, choice)]
        objective = sum(c.score for c in cands) + self.problem.compat_weight * (len(cands) - 1)
        return Solution(choice, cands, objective, self.problem.fixed_params + sum(c.params for c in cands),
                        self.problem.fixed_gmacs + sum(c.gmacs for c in cands))

    def assemble(self, solution: Solution) -> Assembled:
        """Build ``solution``: copies of its blocks (training one assembly must not change the blocks
        the next one is built from), each stitch between two models fitted by least squares on the
        probe maps, and a new head for the dataset's classes."""
        chosen = solution.candidates
        stages = [nn.Sequential(*[copy.deepcopy(self.blocks[c.model][i]) for i in range(*c.blocks)]) for c in chosen]
        first = self.backbones[chosen[0].model]
        x = self.probe.images(first)[:STITCH_PROBE]          # the images whose maps were kept
        stitches, r2 = [], []
        with torch.no_grad():
            h = run_blocks(list(stages[0]), x)[-1] if len(stages[0]) else x
            for k in range(len(chosen) - 1):
                a, b = chosen[k], chosen[k + 1]
                if a.model == b.model:
                    stitches.append(nn.Identity())
                else:
                    c_in = self.infos[a.model][a.blocks[1] - 1].out_shape[0]
                    c_out, hh, ww = self.infos[b.model][b.blocks[0]].in_shape
                    s = Stitch(c_in, c_out, tuple(h.shape[-2:]), (hh, ww))
                    r2.append(init_stitch(s, h, self.maps[b.model][b.blocks[0] - 1]))
                    stitches.append(s)
                h = run_blocks(list(stages[k + 1]), stitches[-1](h))[-1]
        out_channels = self.infos[chosen[-1].model][chosen[-1].blocks[1] - 1].out_shape[0]
        num_classes = self.dataset.num_classes
        input_size, mean, std = first.image_geometry()
        recipe = recipe_for([self.entries[c.model] for c in chosen], [c.blocks for c in chosen], stitches,
                            out_channels, num_classes, input_size, mean, std, self.max_blocks,
                            {"partition_cuts": {c.model: self.partition.cuts[c.model] for c in chosen}})
        return Assembled(Assembly(stages, stitches, out_channels, num_classes), r2, recipe)


@torch.no_grad()
def run_blocks(blocks, x: torch.Tensor, batch_size: int = 128) -> list[torch.Tensor]:
    """Maps after every block for inputs ``x``, kept whole: call it on few images."""
    return probe_blocks(blocks, x, len(x), batch_size)[1]


@torch.no_grad()
def probe_blocks(blocks, x: torch.Tensor, keep: int, batch_size: int = 128) -> tuple[list[torch.Tensor],
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


def stitch_fit(source: torch.Tensor, target: torch.Tensor) -> float:
    """R² of the least-squares stitch from ``source`` maps (N, C_a, H_a, W_a) to ``target`` maps
    (N, C_b, H_b, W_b): how much of what the next block expects a linear stitch can give it."""
    stitch = Stitch(source.shape[1], target.shape[1], tuple(source.shape[-2:]), tuple(target.shape[-2:]))
    return init_stitch(stitch, source, target)


def plan(catalogue, dataset, budget_gmacs: float | None, budget_params: float | None = None, *, stages: int = 4,
         models=None, max_blocks: int | None = 8, probe: int = 1024, top_k: int = 3, compat_weight: float = 1.0,
         compat: str = "cka", seed: int = 0, time_limit: float = 10.0, screen: int = 0) -> Plan:
    """Steps 1-3 (module docstring) within ``budget_gmacs`` GMACs and ``budget_params`` million
    parameters. ``screen`` > 1 also solves for the screen's diverse pool (SCREEN_POOL x ``screen``
    assemblies, the best per final block)."""
    if compat not in COMPAT_KINDS:
        raise ValueError(f"`compat` must be 'stitch' or 'cka'; got {compat!r}.")
    from zooforge.zoo import filter_entries, load_catalogue, load_dataset
    budget = Budget(budget_gmacs, budget_params)
    entries = catalogue if isinstance(catalogue, list) else load_catalogue(catalogue)
    entries = filter_entries(entries, list(models) if models else None)
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    classes_only(ds)
    if not entries:
        raise ZooforgeError("the catalogue has no models to compose from.")
    seconds = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    probe_images = ProbeImages(ds, np.sort(rng.choice(len(ds), size=min(probe, len(ds)), replace=False)))
    backbones, blocks, infos, reps, maps, left_out = _cut_models(entries, stages, max_blocks, probe_images)
    seconds["blocks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = block_graph({m: [r[:CKA_PROBE] for r in rs] for m, rs in reps.items()})
    part = partition(reps, stages, graph=graph)
    seconds["partition"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = list(backbones)
    cands = _stage_candidates(ids, part, infos, reps, probe_images.labels, stages, ds.num_classes)
    compats, stitch_params, stitch_gmacs = _transitions(ids, part, infos, maps, graph, stages, compat)
    spread = float(np.median([np.std([c.score for c in row]) for row in cands])) or 1.0
    problem = Problem(cands, compats, stitch_params, stitch_gmacs, compat_weight=compat_weight * spread)
    solved = solve(problem, budget.gmacs, budget.params_m, top_k=top_k, time_limit=time_limit, seed=seed)
    diverse = solve(problem, budget.gmacs, budget.params_m, top_k=SCREEN_POOL * screen, time_limit=time_limit,
                    seed=seed, distinct="last").solutions if screen > 1 else []
    seconds["solve"] = time.perf_counter() - t0
    return Plan(ds, {e.id: e for e in entries}, backbones, blocks, infos, maps, part, problem, solved, diverse,
                left_out, probe_images, max_blocks, seconds)


def classes_only(ds) -> None:
    """Refuse a regression or multi-label dataset, naming it: DeRy scores blocks with class-based
    estimators and trains a classifier."""
    from zooforge.zoo.targets import require_classification

    require_classification(ds, "reassembly (DeRy) scores blocks with class-based estimators and trains a classifier")


def _cut_models(entries, stages: int, max_blocks: int | None, probe: ProbeImages):
    """Step 1: load and cut every entry, and probe its blocks. A model that cannot be cut, or gives
    fewer blocks than stages, is left out with the reason (never silently)."""
    from zooforge.zoo.backbone import Backbone

    backbones, blocks, infos, reps, maps, left_out = {}, {}, {}, {}, {}, {}
    for e in entries:
        try:
            b = Backbone.from_entry(e)
            b.model.eval()
            bl, inf = cut(b, max_blocks)
        except ZooforgeError as exc:
            left_out[e.id] = str(exc)
            continue
        if len(bl) < stages:
            left_out[e.id] = f"{len(bl)} blocks < {stages} stages"
            continue
        backbones[e.id], blocks[e.id], infos[e.id] = b, bl, inf
        reps[e.id], maps[e.id] = probe_blocks(bl, probe.images(b), STITCH_PROBE)
    if not backbones:
        raise ZooforgeError(f"no model could be cut into {stages} stages: {left_out}")
    return backbones, blocks, infos, reps, maps, left_out


def _stage_candidates(ids, part: Partition, infos, reps, labels, stages: int, num_classes: int) -> list[list[Candidate]]:
    """Step 3a: each model's stage k as a candidate, with its blocks' cost (the last stage carries a
    new head) and LogME at the stage's output."""
    score = {(m, c): logme(reps[m][c - 1].numpy(), labels) for m in ids for c in set(part.cuts[m][1:])}
    cands = []
    for k in range(stages):
        row = []
        for m in ids:
            s, e = part.cuts[m][k], part.cuts[m][k + 1]
            params = sum(i.params for i in infos[m][s:e])
            gmacs = sum(i.gmacs for i in infos[m][s:e])
            if k == stages - 1:
                c_out = infos[m][e - 1].out_shape[0]
                params += c_out * num_classes + num_classes
                gmacs += (c_out * num_classes) / 1e9
            row.append(Candidate(m, (s, e), params, gmacs, float(score[m, e])))
        cands.append(row)
    return cands


def _transitions(ids, part: Partition, infos, maps, graph, stages: int, compat: str):
    """Step 3b: per transition k -> k+1, the (n, n) compatibility, stitch-parameter and stitch-GMAC
    matrices between every pair of models (a model followed by itself needs no stitch)."""
    compats, stitch_params, stitch_gmacs = [], [], []
    n = len(ids)
    for k in range(stages - 1):
        c, p, g = np.ones((n, n)), np.zeros((n, n), dtype=np.int64), np.zeros((n, n))
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
        stitch_params.append(p)
        stitch_gmacs.append(g)
    return compats, stitch_params, stitch_gmacs
