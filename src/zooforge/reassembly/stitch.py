"""Stitch blocks of different models into one network, save it, and rebuild it from its recipe.

A stitching layer maps the map one block returns (C_a, H_a, W_a) to the map the next block expects
(C_b, H_b, W_b): resample the grid (adaptive average pooling when it shrinks, bilinear interpolation
when it grows), then a 1×1 convolution. Because blocks exchange channels-first maps (see
:mod:`zooforge.reassembly.blocks`), the 1×1 convolution *is* the linear token projection on the
transformer side, and CNN↔ViT stitching is the resampling plus that projection, the token↔map reshape
being done by the ViT block itself. DeRy's reference stitch is BN → conv → LeakyReLU with a random
initialisation; ours is linear and starts from the least-squares map between the two models'
representations on probe images (:func:`init_stitch`), so an untrained assembly already passes
meaningful features from stage to stage.

An :class:`Assembly` is stages of blocks, stitches between them and a new head (global average pool
+ linear). Its recipe (JSON) names, per stage, the catalogue entry and the block range; with the
safetensors weights it rebuilds the identical module (:func:`load_assembly`).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zooforge.errors import ZooforgeError

__all__ = ["Stitch", "Assembly", "init_stitch", "save_assembly", "load_assembly", "RECIPE_VERSION"]

RECIPE_VERSION = 2        # 2: the last block carries its model's tail (see blocks.py)


class Stitch(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, in_grid: tuple[int, int], out_grid: tuple[int, int]):
        super().__init__()
        self.in_grid, self.out_grid = tuple(in_grid), tuple(out_grid)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.out_grid:
            return x
        if x.shape[-2] >= self.out_grid[0] and x.shape[-1] >= self.out_grid[1]:
            return F.adaptive_avg_pool2d(x, self.out_grid)
        return F.interpolate(x, size=self.out_grid, mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.proj(self.resample(x))

    def spec(self) -> dict:
        return {"in_channels": self.proj.in_channels, "out_channels": self.proj.out_channels,
                "in_grid": list(self.in_grid), "out_grid": list(self.out_grid)}


@torch.no_grad()
def init_stitch(stitch: Stitch, source: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> float:
    """Least-squares (ridge) fit of the 1×1 projection from ``source`` maps to ``target`` maps, pixel by
    pixel on the resampled grid; returns the fraction of target variance explained (R²)."""
    x = stitch.resample(source.float())
    if x.shape[-2:] != target.shape[-2:]:
        raise ZooforgeError(f"stitch grids disagree: {tuple(x.shape[-2:])} vs {tuple(target.shape[-2:])}.")
    xs = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double()
    ys = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    xm, ym = xs.mean(0), ys.mean(0)
    xc, yc = xs - xm, ys - ym
    gram = xc.T @ xc
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)   # (C_a, C_b)
    stitch.proj.weight.copy_(w.T.reshape(stitch.proj.weight.shape).float())
    stitch.proj.bias.copy_((ym - xm @ w).float())
    resid = ((xc @ w - yc) ** 2).sum()
    total = (yc ** 2).sum().clamp_min(1e-12)
    return float(1 - resid / total)


class Assembly(nn.Module):
    """stage_0 → stitch_0 → stage_1 → ... → stage_{K-1} → GAP → linear head."""

    def __init__(self, stages: list[nn.Module], stitches: list[nn.Module], out_channels: int, num_classes: int):
        super().__init__()
        if len(stitches) != len(stages) - 1:
            raise ValueError("an assembly of K stages needs K-1 stitches (nn.Identity where none).")
        self.stages = nn.ModuleList(stages)
        self.stitches = nn.ModuleList(stitches)
        self.head = nn.Linear(out_channels, num_classes)

    def features(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The map after stage ``upto`` (default: the last), stitches included."""
        last = len(self.stages) - 1 if upto is None else upto
        for k in range(last + 1):
            x = self.stages[k](x)
            if k < last:
                x = self.stitches[k](x)
        return x

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _entry_dict(entry) -> dict:
    out = {}
    for f in fields(entry):
        v = getattr(entry, f.name)
        if f.name == "catalogue":
            continue
        out[f.name] = str(Path(v).resolve()) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out


def build_assembly(recipe: dict) -> Assembly:
    """The (untrained) module a recipe describes: blocks from the named models' weights."""
    from zooforge.reassembly.blocks import cut
    from zooforge.zoo import CatalogueEntry
    from zooforge.zoo.backbone import Backbone

    if recipe.get("version") != RECIPE_VERSION:
        raise ZooforgeError(f"recipe version {recipe.get('version')!r}; this zooforge reads version {RECIPE_VERSION}.")
    stages, cache = [], {}
    for stage in recipe["stages"]:
        entry = CatalogueEntry(**{k: tuple(v) if k in ("input_size", "mean", "std", "tags") and v is not None else v
                                  for k, v in stage["entry"].items()})
        key = (entry.id, stage.get("max_blocks"))
        if key not in cache:
            cache[key] = cut(Backbone.from_entry(entry), stage.get("max_blocks"))[0]
        start, end = stage["blocks"]
        stages.append(nn.Sequential(*[cache[key][i] for i in range(start, end)]))
    stitches = [nn.Identity() if s is None else Stitch(s["in_channels"], s["out_channels"], s["in_grid"], s["out_grid"])
                for s in recipe["stitches"]]
    return Assembly(stages, stitches, recipe["out_channels"], recipe["num_classes"])


def recipe_for(entries: list, block_ranges: list[tuple[int, int]], stitches: list, out_channels: int,
               num_classes: int, input_size, mean, std, max_blocks: int | None, extra: dict | None = None) -> dict:
    return {"version": RECIPE_VERSION, "input_size": list(input_size), "mean": mean and list(mean),
            "std": std and list(std),
            "num_classes": num_classes, "out_channels": out_channels,
            "stages": [{"model": e.id, "entry": _entry_dict(e), "blocks": list(r), "max_blocks": max_blocks}
                       for e, r in zip(entries, block_ranges)],
            "stitches": [None if isinstance(s, nn.Identity) else s.spec() for s in stitches],
            **({"info": extra} if extra else {})}


def save_assembly(model: Assembly, recipe: dict, out_dir: str | Path) -> Path:
    from safetensors.torch import save

    from zooforge.zoo.cache import atomic_write_bytes

    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "assembly.safetensors", save(state))
    atomic_write_bytes(out / "recipe.json", json.dumps(recipe, indent=2).encode())
    return out


def load_assembly(path: str | Path) -> tuple[Assembly, dict]:
    """Rebuild a saved assembly from ``recipe.json`` and load ``assembly.safetensors`` into it."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    recipe_file, weights = folder / "recipe.json", folder / "assembly.safetensors"
    for f in (recipe_file, weights):
        if not f.is_file():
            raise ZooforgeError(f"missing {f}; an assembly folder holds recipe.json and assembly.safetensors.")
    recipe = json.loads(recipe_file.read_text())
    model = build_assembly(recipe)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise ZooforgeError(f"{weights} does not fit its recipe: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    return model.eval(), recipe
