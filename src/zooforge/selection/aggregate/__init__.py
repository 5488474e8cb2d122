"""Combining several chosen models: B-Tuning, Zoo-Tuning and Hub-Pathway.

Each takes a catalogue and a dataset (or explicit member ids), trains with the one loop of
:mod:`zooforge.tuning.loop` and returns an :class:`AggregateResult` (held-out accuracy, trainable
and total parameters, inference GMACs, time, the members' weights, the trained model);
:func:`save_result` writes it. :func:`ensemble` (the top-k fine-tuned alone, logits averaged; with
k = 1 the single best model) is the baseline the three are judged against.
:func:`aggregate` runs any of them from one :class:`~zooforge.config.AggregateConfig` (what
``zooforge aggregate`` calls).
"""

from zooforge.config import AggregateConfig, build_config

from zooforge.selection.aggregate._common import AggregateResult, save_result
from zooforge.selection.aggregate.btuning import btuning
from zooforge.selection.aggregate.ensemble import ensemble
from zooforge.selection.aggregate.hubpathway import hubpathway
from zooforge.selection.aggregate.zootuning import zootuning

METHODS = {"btuning": btuning, "zootuning": zootuning, "hubpathway": hubpathway, "ensemble": ensemble}

__all__ = ["AggregateResult", "METHODS", "aggregate", "btuning", "ensemble", "hubpathway", "save_result", "zootuning"]


def aggregate(catalogue, dataset, config: AggregateConfig | None = None, *, cache_dir=None,
              **options) -> AggregateResult:
    """Aggregate zoo models on ``dataset`` by ``config.method`` (keyword ``options`` set or override
    the config's fields). ``top_k`` is how many models the ranking gives (``config.ordering``: by
    default the order ``zooforge rank`` recommends): B-Tuning's teachers, Zoo-Tuning's experts (at
    least two), the candidates Hub-Pathway routes among (two per input; at least two) or the ensemble's
    members; explicit ``models`` replace the ranking."""
    from zooforge.tuning.loop import TrainConfig

    cfg = build_config(AggregateConfig, config, options, "aggregate")
    loop = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                       progress=cfg.progress)
    common = {"models": list(cfg.models) if cfg.models else None, "config": loop, "seed": cfg.seed,
              "ordering": cfg.ordering, "progress": cfg.progress}
    if cfg.method == "hubpathway":
        return hubpathway(catalogue, dataset, candidates=None if cfg.models else cfg.top_k, top_k=2, **common)
    if cfg.method == "zootuning":
        return zootuning(catalogue, dataset, top_k=cfg.top_k, **common)
    if cfg.method == "ensemble":
        return ensemble(catalogue, dataset, top_k=cfg.top_k, cache_dir=cache_dir, **common)
    btuning_only = {k: getattr(cfg, k) for k in ("strength", "temperature") if getattr(cfg, k) is not None}
    return btuning(catalogue, dataset, top_k=cfg.top_k, cache_dir=cache_dir, **btuning_only, **common)
