"""Cut a backbone into an ordered list of blocks that each run alone.

Cut points are the model's own (:mod:`.cutpoints`): timm ``feature_info`` modules (CNN stages, ViT
blocks), or the layers or stages of a Hugging Face vision encoder. We take the longest run of
consecutive cut modules that feed each other directly (module i+1's input *is* module i's output,
checked on a probe pass). Everything before that run (stem, max-pool, patch embedding, position
embedding, class token) becomes a *prefix* that belongs to block 0; it runs the model's own feature
forward (timm ``forward_features``, the HF base model) and stops at the first module of the run, and
modules the prefix never executes are pruned from its copy so its parameter count is honest.

Everything the model does after the run (stages that ``feature_info`` leaves out, a final conv or norm,
and for timm map-shaped models the pre-logits part of ``forward_head``: pooling, head norm, pre-logits
MLP) becomes a *tail* that belongs to the last block, found by recording which modules run after the
run's last module and checked on the probe pass. So the blocks of one model chained end to end give
exactly the features the model itself gives (a pooled (B, D, 1, 1) map for timm CNNs, the last map of
an HF CNN; normed patch tokens for transformers, which an assembly average-pools), and an assembly built
from one model is that model. Only the classifier is left out: an assembly brings its own head. A tail
that does not reproduce the model (non-module code between the modules) is left out, as a block is then
the honest unit.

Between blocks, every tensor is a channels-first map (B, C, H, W). The reshape is explicit at the edges
of each block: a transformer block group turns the map into tokens (B, H·W, C) on the way in and back
into a map on the way out (prefix tokens such as the class token are dropped at block 0's output, so
later blocks see patch tokens only); a channels-last stage (MambaOut) is permuted in and out. So blocks
of timm and Hugging Face models, CNNs and ViTs, stitch to each other in either direction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.reassembly.cutpoints import CutPoints, cut_points, run_features
from zooforge.zoo.backbone import Backbone, layout_of
from zooforge.zoo.cost import count_gmacs, count_params

__all__ = ["Block", "BlockInfo", "cut", "chain_modules"]


class _Stop(Exception):
    def __init__(self, value):
        self.value = value


def _modules_run(model: nn.Module, call) -> set[str]:
    """Names of the submodules of ``model`` that ``call()`` enters (eval mode, no grad)."""
    ran: set[str] = set()
    handles = [m.register_forward_pre_hook(lambda _m, _a, name=n: ran.add(name))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model.eval()
            call()
    finally:
        for h in handles:
            h.remove()
    return ran


def _prune(model: nn.Module, keep) -> None:
    """Replace every submodule whose name ``keep`` rejects by nn.Identity (deepest first)."""
    for name, _ in sorted(list(model.named_modules()), key=lambda t: -t[0].count(".")):
        if name and not keep(name):
            _set(model, name, nn.Identity())


class Prefix(nn.Module):
    """The model's feature forward up to the input of module ``stop``; unused modules pruned."""

    def __init__(self, model: nn.Module, stop: str, example: torch.Tensor, family: str = "timm"):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.stop, self.family = stop, family
        ran = _modules_run(self.model, lambda: self(example))
        # prune every module that did not run (later stages, final norm, head); keep the stop module
        # as an empty stand-in so the hook has somewhere to sit
        _prune(self.model, lambda name: name in ran or _is_ancestor(name, stop))
        _set(self.model, stop, _Probe())

    def forward(self, x):
        handle = self.model.get_submodule(self.stop).register_forward_pre_hook(_raise_input)
        try:
            run_features(self.model, self.family, x)
        except _Stop as s:
            return s.value
        finally:
            handle.remove()
        raise ZooforgeError(f"the prefix never reached module {self.stop!r}.")


class Tail(nn.Module):
    """The modules ``names`` (run in turn on the last block's native output) and, when ``pooled``, the
    model's ``forward_head(..., pre_logits=True)``, returned as a pooled (B, D, 1, 1) map. Holds a copy
    of the model pruned to what the tail runs, so its parameter count is honest."""

    def __init__(self, model: nn.Module, names: list[str], pooled: bool, example: torch.Tensor):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.names, self.pooled = list(names), pooled
        ran = _modules_run(self.model, lambda: self(example))
        keep = {a for n in ran for a in _ancestors(n)} | ran          # containers of what runs stay
        _prune(self.model, lambda name: name in keep)

    def forward(self, x):
        for n in self.names:
            x = self.model.get_submodule(n)(x)
        if self.pooled:
            return self.model.forward_head(x, pre_logits=True)[:, :, None, None]
        return x


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _modules_after(model: nn.Module, last: str, example: torch.Tensor, family: str) -> tuple[list[str], torch.Tensor]:
    """The outermost modules that the feature forward enters after module ``last`` returns, in call
    order, and the features."""
    state = {"after": False}
    entered: list[str] = []

    def pre(_m, _a, name):
        if state["after"]:
            entered.append(name)

    handles = [m.register_forward_pre_hook(lambda m_, a_, name=n: pre(m_, a_, name))
               for n, m in model.named_modules() if n and not _is_ancestor(n, last)]
    handles.append(model.get_submodule(last).register_forward_hook(lambda *_: state.__setitem__("after", True)))
    try:
        with torch.no_grad():
            model.eval()
            out = run_features(model, family, example)
    finally:
        for h in handles:
            h.remove()
    outer = [n for n in entered if not any(a in entered for a in _ancestors(n))]
    return outer, out


def _tail(model: nn.Module, last: str, last_out: torch.Tensor, example: torch.Tensor, layout: str,
          family: str) -> Tail | None:
    after, features = _modules_after(model, last, example, family)
    names = _reproducing(model, after, last_out, features)
    if names is None:
        return None
    with torch.no_grad():
        # the pre-logits head only for maps: a token model's head pools with a class token that
        # blocks fed by a stitch do not have, and it may read parameters that live on the model itself
        head = (layout != "tokens" and hasattr(model, "forward_head")
                and not any(True for _ in model.named_parameters(recurse=False)))
        if head:
            pooled = model.forward_head(features, pre_logits=True)
            head = pooled.dim() == 2
        if not names and not head:
            return None
    return Tail(model, names, head, last_out)


def _reproducing(model: nn.Module, after: list[str], last_out: torch.Tensor, features: torch.Tensor) -> list[str] | None:
    """The longest leading run of the modules ``after`` that, applied in turn to ``last_out``, gives
    ``features``: a Hugging Face base model runs its pooler after the final norm, and the pooler is no
    part of the features. None when no run does."""
    for k in range(len(after), -1, -1):
        h = last_out
        try:
            with torch.no_grad():
                for n in after[:k]:
                    h = model.get_submodule(n)(h)
        except (RuntimeError, TypeError, ValueError):      # the module does not take this tensor
            continue
        if torch.is_tensor(h) and h.shape == features.shape and torch.allclose(h, features, rtol=1e-5, atol=1e-6):
            return after[:k]
    return None


class _Probe(nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


def _raise_input(_module, args):
    raise _Stop(args[0])


def _is_ancestor(name: str, of: str) -> bool:
    return of == name or of.startswith(name + ".")


def _set(root: nn.Module, name: str, value: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    holder = root.get_submodule(parent) if parent else root
    if isinstance(holder, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        holder[int(child)] = value
    else:
        setattr(holder, child, value)


@dataclass(frozen=True)
class BlockInfo:
    model: str
    index: int
    modules: tuple[str, ...]           # the original module names this block runs
    in_shape: tuple[int, int, int]     # canonical (C, H, W) it expects ((3, H, W) for block 0: the image)
    out_shape: tuple[int, int, int]    # canonical (C, H, W) it returns
    params: int
    gmacs: float
    layout: str                        # native layout inside: nchw | nhwc | tokens


class Block(nn.Module):
    """One runnable block: canonical map in, canonical map out (block 0 takes the normalised image)."""

    def __init__(self, body: nn.Module, layout: str, prefix: nn.Module | None = None, prefix_tokens: int = 0,
                 grid: tuple[int, int] | None = None, tail: Tail | None = None):
        super().__init__()
        self.prefix, self.body, self.layout = prefix, body, layout
        self.prefix_tokens, self.grid = prefix_tokens, grid
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prefix is not None:
            x = self.prefix(x)                           # native layout already
        elif self.layout == "tokens":
            x = x.flatten(2).transpose(1, 2)             # (B, C, H, W) -> (B, H·W, C)
        elif self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        y = self.body(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if self.tail is not None:
            y = self.tail(y)
            if self.tail.pooled:
                return y
        return _to_map(y, self.layout, self.prefix_tokens if self.prefix is not None else 0, self.grid)


def _to_map(y: torch.Tensor, layout: str, drop_tokens: int, grid) -> torch.Tensor:
    if layout == "tokens":
        y = y[:, drop_tokens:]
        n = y.shape[1]
        h, w = grid if grid and grid[0] * grid[1] == n else (math.isqrt(n), n // max(1, math.isqrt(n)))
        if h * w != n:
            raise ZooforgeError(f"cannot fold {n} tokens into a grid; give a square patch grid.")
        return y.transpose(1, 2).reshape(y.shape[0], -1, h, w)
    if layout == "nhwc":
        return y.permute(0, 3, 1, 2)
    return y


def chain_modules(points: CutPoints) -> list[str]:
    """The longest run of cut modules that feed each other directly (ties: the later, deeper run)."""
    names, seen = points.names, points.seen
    direct = [seen[a][1] is not None and seen[a][1].shape == seen[b][0].shape and torch.equal(seen[a][1], seen[b][0])
              for a, b in zip(names[:-1], names[1:])]
    best, start = (0, 0), 0                  # (length, first index) of the longest direct run
    for i in range(len(names)):
        if i == 0 or not direct[i - 1]:
            start = i
        if i - start + 1 >= best[0]:
            best = (i - start + 1, start)
    return names[best[1]:best[1] + best[0]]


def _layout(t: torch.Tensor, channels: int | None) -> str:
    if t.dim() not in (3, 4):
        raise ZooforgeError(f"a block returned a {t.dim()}-d tensor; expected a map or tokens.")
    return layout_of(t, channels)


def cut(backbone: Backbone, max_blocks: int | None = None) -> tuple[list[Block], list[BlockInfo]]:
    """Blocks of ``backbone`` in order with their costs at its input size (see module docstring).

    ``max_blocks`` merges consecutive blocks (from the end of the run) so deep ViTs do not yield one
    block per transformer layer: groups are as even as possible.
    """
    points = cut_points(backbone)
    model, example, seen = backbone.model, points.example, points.seen
    run = chain_modules(points)
    groups = [[n] for n in run]
    if max_blocks is not None and len(groups) > max_blocks:
        size = len(run) / max_blocks
        groups = [run[round(i * size):round((i + 1) * size)] for i in range(max_blocks)]
    blocks, infos = [], []
    x = example
    for i, group in enumerate(groups):
        out_native = seen[group[-1]][1]
        layout = _layout(out_native, points.channels[group[-1]])
        body_modules = [copy.deepcopy(points.body(model, n)) for n in group]
        body = body_modules[0] if len(body_modules) == 1 else nn.Sequential(*body_modules)
        prefix = Prefix(model, group[0], example, points.family) if i == 0 else None
        tail = _tail(model, group[-1], out_native, example, layout, points.family) if i == len(groups) - 1 else None
        block = Block(body, layout, prefix, points.prefix_tokens if layout == "tokens" else 0, points.grid, tail).eval()
        try:
            with torch.no_grad():
                y = block(x)
        except Exception as exc:      # a layer that needs what only its own model gives it (e.g. a class token)
            raise ZooforgeError(f"model {backbone.id!r}: block {i} ({', '.join(group)}) does not run on its own "
                                f"({type(exc).__name__}: {exc}); this model is not cut.") from None
        in_shape = tuple(x.shape[1:])
        infos.append(BlockInfo(backbone.id, i, tuple(group), in_shape, tuple(y.shape[1:]),
                               count_params(block), count_gmacs(block, x), layout))
        blocks.append(block)
        x = y
    return blocks, infos
