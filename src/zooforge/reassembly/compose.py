"""``compose``: the DeRy pipeline from a catalogue, a dataset and a budget to a trained assembly.

1-3. :func:`.plan.plan`: cut, probe, partition by CKA, score, solve under the budget;
4. :mod:`.screen`: train a shortlist briefly on 80% of the training split (or in each of
   ``screen_folds`` folds), keep a mix only if it beats the best single model that fits by more than
   the validation noise (a paired test of ``screen_evidence`` at ``screen_level``);
5. train the kept assembly on the whole training split with the one loop (optionally stitches and
   head first, blocks frozen, for ``stitch_epochs``);
6. fine-tune the best single zoo model within the same budget (the first of those that fit as ``rank``
   orders them on the training split: by default the ordering ``zooforge rank`` recommends) with the
   same loop and epochs, and report both on the held-out split. The screen's single model is the
   same one (the first of that order that could be cut into stages).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from zooforge.config import ComposeConfig, build_config
from zooforge.errors import ZooforgeError
from zooforge.reassembly.plan import Plan, classes_only, plan
from zooforge.reassembly.screen import check_folds, screen, shortlist
from zooforge.reassembly.stitch import Assembly, save_assembly
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.zoo.cache import atomic_write_bytes

__all__ = ["ComposeConfig", "ComposeResult", "compose", "ranked_singles"]


@dataclass
class ComposeResult:
    status: str
    explanation: str
    stages: list[dict]                       # stage, model, blocks, params, gmacs, score
    params: int
    gmacs: float
    accuracy: float | None = None
    baseline: dict | None = None             # best single model within budget: id, params, gmacs, accuracy and
                                             # the ordering that named it (None: the one rank recommends)
    alternatives: list[dict] = field(default_factory=list)
    within_stage_similarity: float | None = None
    stitch_r2: list[float] = field(default_factory=list)
    screened: list[dict] = field(default_factory=list)   # candidates tried briefly, with val accuracy
    seconds: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)           # model id -> why it could not take part
    unranked: dict = field(default_factory=dict)           # model id -> why rank could not place it (it fits the
                                                           # budget whole but cannot be the single model)
    model: Assembly | None = field(default=None, repr=False)
    recipe: dict | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "recipe")}


def compose(catalogue, dataset, config: ComposeConfig | None = None, *, out_dir: str | Path | None = None,
            **options) -> ComposeResult:
    """The whole DeRy pipeline (module docstring) under ``config`` (a :class:`ComposeConfig`; keyword
    ``options`` set or override its fields: ``compose("demo", "demo:glyphs", budget_gmacs=0.002)``).
    Budgets are GMACs and millions of parameters. ``out_dir`` receives the assembly, its recipe and
    ``result.json``."""
    from zooforge.selection.rank import checked_ordering
    from zooforge.tuning.methods import inputs_for
    from zooforge.zoo import load_dataset

    cfg = build_config(ComposeConfig, config, options, "compose")
    ds = dataset if hasattr(dataset, "fingerprint") else load_dataset(dataset)
    classes_only(ds)                              # before the split, so the refusal names the data as given
    train_ds, test_ds = ds.split(cfg.split, cfg.seed)
    if cfg.screen > 1:
        check_folds(cfg.screen_folds, len(train_ds))          # before cutting and probing every model
    if cfg.screen > 1 or cfg.baseline:
        checked_ordering(cfg.ordering)                          # likewise: it names the single model at the end
    p = plan(catalogue, train_ds, cfg.budget_gmacs, cfg.budget_params, stages=cfg.stages, models=cfg.models,
             max_blocks=cfg.max_blocks, probe=cfg.probe, top_k=cfg.top_k, compat_weight=cfg.compat_weight,
             compat=cfg.compat, seed=cfg.seed, screen=cfg.screen)
    if not p.solved.solutions:
        raise ZooforgeError(f"cannot compose within the budget: {p.solved.explain()}.")
    train_cfg = _train_config(cfg)
    best, screened = p.solved.solutions[0], []
    unranked: dict[str, str] = {}
    singles = (ranked_singles(p, cfg.budget, ordering=cfg.ordering, unplaced=unranked)
               if cfg.screen > 1 or cfg.baseline else [])
    if cfg.screen > 1:
        pool = p.diverse + [s for s in p.solved.solutions if all(s.choice != d.choice for d in p.diverse)]
        best, screened = screen(p, shortlist(p, pool, cfg.budget, cfg.screen, cfg.seed, singles), train_ds, train_cfg,
                                cfg.screen_epochs or cfg.epochs, cfg.seed, cfg.screen_folds, cfg.screen_evidence,
                                cfg.screen_level)
    result = ComposeResult(
        p.solved.status, p.solved.explain(),
        [{"stage": k, "model": c.model, "blocks": f"{c.blocks[0]}-{c.blocks[1] - 1}", "params": c.params,
          "gmacs": c.gmacs, "score": c.score} for k, c in enumerate(best.candidates)],
        best.params, best.gmacs,
        alternatives=[{"models": [c.model for c in s.candidates], "objective": s.objective, "params": s.params,
                       "gmacs": s.gmacs} for s in p.solved.solutions],
        within_stage_similarity=p.partition.similarity, seconds=dict(p.seconds), screened=screened,
        left_out=dict(p.left_out), unranked=unranked)
    torch.manual_seed(cfg.seed)
    result.model, result.stitch_r2, result.recipe = p.assemble(best)
    first = p.backbones[best.candidates[0].model]
    t0 = time.perf_counter()
    _fit(result.model, inputs_for(first, train_ds), torch.as_tensor(train_ds.labels), train_cfg, cfg.stitch_epochs)
    result.accuracy = evaluate_accuracy(result.model, inputs_for(first, test_ds), torch.as_tensor(test_ds.labels))
    result.seconds["train"] = time.perf_counter() - t0
    if cfg.baseline and singles:
        result.baseline = _baseline(p, singles[0], train_ds, test_ds, cfg)
    if out_dir is not None:
        save_assembly(result.model.cpu(), result.recipe, out_dir)
        atomic_write_bytes(Path(out_dir) / "result.json", json.dumps(result.record(), indent=2, default=float).encode())
    return result


def _train_config(cfg: ComposeConfig, **changes) -> TrainConfig:
    return TrainConfig(**{"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed,
                          "progress": cfg.progress, "device": cfg.device, **changes})


def _fit(model: nn.Module, x_tr, y_tr, cfg: TrainConfig, frozen_first: int):
    """Stitches and head first (``frozen_first`` epochs, blocks frozen), then everything."""
    history = []
    if frozen_first and isinstance(model, Assembly):
        for p_ in model.stages.parameters():
            p_.requires_grad_(False)
        r = train(model, x_tr, y_tr, TrainConfig(**{**cfg.__dict__, "epochs": frozen_first, "checkpoint_dir": None}))
        history += r.check("training the assembly's stitches and head").history
        for p_ in model.stages.parameters():
            p_.requires_grad_(True)
    r = train(model, x_tr, y_tr, cfg).check("training the assembly")
    return history + r.history


def ranked_singles(p: Plan, budget, ordering=None, *, cache_dir=None, unplaced: dict | None = None) -> list[str]:
    """The ids of the plan's models whose whole network with a new head for the plan's classes fits
    ``budget``, best first, as ``rank`` orders them on the plan's dataset (compose: the training split):
    by default the ordering ``zooforge rank`` recommends, ``ordering`` another (``"logme"``: LogME on
    the whole split). One that cannot be scored is left out, as ``rank`` never recommends it, and
    goes into ``unplaced`` (id -> why) when a dict is given."""
    from zooforge.selection.rank import ranked_ids
    from zooforge.zoo.backbone import Backbone

    c = p.dataset.num_classes
    fits = []
    for mid, entry in p.entries.items():
        b = p.backbones.get(mid) or Backbone.from_entry(entry)
        if budget.fits(b.gmacs, b.num_params + b.feature_dim * c + c):
            fits.append(entry)
    if not fits:
        return []
    unplaced = {} if unplaced is None else unplaced
    try:
        return ranked_ids(fits, p.dataset, ordering, cache_dir=cache_dir, unplaced=unplaced)
    except ZooforgeError:
        if len(unplaced) == len(fits):      # none could be ranked: said in ``unplaced``, and there is no single model
            return []
        raise


def _baseline(p: Plan, model: str, train_ds, test_ds, cfg: ComposeConfig) -> dict:
    """``model`` (the first of :func:`ranked_singles`) fine-tuned whole, with a new head, by the
    assembly's loop and epochs (its stitch epochs included)."""
    from zooforge.tuning.methods import build, inputs_for
    from zooforge.zoo.backbone import Backbone

    b = p.backbones.get(model) or Backbone.from_entry(p.entries[model])
    torch.manual_seed(cfg.seed)
    task = build(b, train_ds.num_classes, "full")    # cut() copied what it took, so b's weights are still pristine
    train(task, inputs_for(task.backbone, train_ds), torch.as_tensor(train_ds.labels),
          _train_config(cfg, epochs=cfg.epochs + cfg.stitch_epochs)).check(f"fine-tuning the single model {model}")
    return {"model": model, "params": task.total_params, "gmacs": b.gmacs, "ordering": cfg.ordering,
            "accuracy": evaluate_accuracy(task, inputs_for(task.backbone, test_ds), torch.as_tensor(test_ds.labels))}
