"""What a model costs: parameters and multiply-accumulates at its input size.

GMACs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a single example
(MACs = FLOPs / 2: the counter counts a multiply-add as two FLOPs). Measured throughput is recorded by
the extraction engine, where the real batch size and device are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Cost", "count_params", "count_gmacs"]


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
