"""What a model costs: parameters and multiply-accumulates at its input size.

GMACs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a single example
(MACs = FLOPs / 2: the counter counts a multiply-add as two FLOPs). Measured throughput is recorded by
the extraction engine, where the real batch size and device are known.

A model's GMACs depend on its architecture and input size, not on its weights, so they are
remembered on disk (``<zooforge cache>/timm_costs.json``) under an architecture key: the timm
listing (``zooforge catalogue timm --max-gmacs``) writes them, and loading a timm model of the same
architecture, head and input size reads them instead of running the FLOP counter again (an audit of
hundreds of models counts each architecture once, ever). The parameter count is always taken from
the loaded model and must equal the remembered one, or the model is counted afresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Cost", "count_params", "count_gmacs", "remembered_cost", "timm_cost_key", "COST_FILE"]

COST_FILE = "timm_costs.json"


@dataclass(frozen=True)
class Cost:
    num_params: int
    gmacs: float       # at the model's input size, batch 1

    @property
    def mparams(self) -> float:
        return self.num_params / 1e6


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (optionally trainable) parameters; shared tensors are counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@torch.no_grad()
def count_gmacs(model: nn.Module, *example_args, **example_kwargs) -> float:
    """Giga multiply-accumulates of ``model(*example_args, **example_kwargs)`` (batch of one)."""
    was_training = model.training
    # FlopCounterMode's module tracker hooks the gradient of every tensor a module receives; a
    # parameter passed into a submodule (timm's attention-pool latent) is a leaf that requires grad
    # and, under no_grad, has no gradient node to hook, so the count crashed. Nothing here trains.
    needs_grad = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in needs_grad:
            p.requires_grad_(False)
        with FlopCounterMode(display=False) as counter:
            model(*example_args, **example_kwargs)
    finally:
        for p in needs_grad:
            p.requires_grad_(True)
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def timm_cost_key(arch: str, input_size, num_classes: int, model_args: dict | None = None) -> str:
    """The key a timm architecture's cost is remembered under (the listing's and the loader's)."""
    import timm

    key = f"{arch}|{'x'.join(map(str, input_size))}|{num_classes}|timm {timm.__version__}"
    return key + (f"|{json.dumps(model_args, sort_keys=True, default=str)}" if model_args else "")


def remembered_cost(key: str, model: nn.Module, count: Callable[[], float], cache_dir=None) -> Cost:
    """The cost of ``model``: its parameters counted now, its GMACs remembered under ``key`` when the
    remembered parameter count agrees (else ``count()`` is run and remembered)."""
    params = count_params(model)
    path = cost_file(cache_dir)
    memo = read_costs(path)
    known = memo.get(key)
    if known is not None and int(known[0]) == params:
        return Cost(params, float(known[1]))
    gmacs = count()
    memo = read_costs(path) | {key: [params, gmacs]}      # re-read: another process may have added some
    write_costs(path, memo)
    return Cost(params, gmacs)


def cost_file(cache_dir=None) -> Path:
    from zooforge.zoo.cache import FeatureCache

    return Path(FeatureCache(cache_dir).root) / COST_FILE


def read_costs(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}                                  # missing or unreadable: counted again


def write_costs(path: Path, memo: dict) -> None:
    from zooforge.zoo.cache import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(memo, sort_keys=True).encode())
    except OSError:
        pass                                       # an unwritable cache costs a recount next time, nothing else
