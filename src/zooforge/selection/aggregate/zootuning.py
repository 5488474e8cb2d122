"""Zoo-Tuning: adaptive aggregation of same-architecture models' parameters (Shu et al., ICML 2021,
"Zoo-Tuning: Adaptive Transfer from a Zoo of Models").

Every convolution and linear layer of the target network holds the K models' kernels W_1..W_K and
uses, per sample, the kernel Σ_k g_k(x) A_k W_k, where
  * g(x) is a data-dependent gate: global-average-pool of the layer's input → Linear → ReLU →
    Linear → softmax over the K models (weights sum to one; the reference uses independent sigmoids,
    ``gate="sigmoid"``; we normalise so the aggregate stays on the scale of one kernel). The last gate layer starts at
    zero except for a ``lead`` logit on the first (top-ranked) model: with ``lead=0`` training starts
    from the plain average of the models, which for independently trained models whose channels do
    not line up is a poor network; the default ``lead=3`` starts near the top model's function and
    lets the gates and alignments bring the others in;
  * optionally (``align=True``; off by default, as in the paper), A_k is a learned output-channel
    alignment (identity-initialised C_out × C_out matrix), meant to let independently trained models
    whose channels are permuted relative to each other be mixed. It is off by default because it
    breaks the property that aggregation should have: Zoo-Tuning of one expert, or of k copies of
    it, is plain fine-tuning of that expert. Without A_k it is (Adam is invariant to the gates'
    scaling of each copy's gradient, so the copies move together, and the gates get no gradient;
    ``tests/selection/test_aggregate.py`` checks it to 1e-3 of the logits); with A_k trained at the
    kernels' learning rate, two epochs on 80 demo images move one expert's logits by 40% of their
    scale away from its own plain fine-tuning (1.24 of 3.03).
The gates are the only part that starts from scratch; ``gate_lr`` (default ``GATE_LR`` = 10) trains
them at that multiple of the kernels' rate (``lr_scale`` on their parameters, read by the training
loop's optimiser); at the kernels' own rate they barely leave their start in a short fine-tune.
Per-sample kernels run as one grouped convolution (batch as groups, as CondConv does), not K convs.
A layer gates each row it is given: an image, or each window where the network runs it on windows
(a MaxViT's attention), so ``ZooTuned.mean_gates`` averages over every row a layer gated.
Normalisation layers take the average of the models' parameters (weighted by the same prior as
the gates), BatchNorm running statistics included. The reference ``backbone.py`` resets the running
statistics instead (``norm_stats="reset"``); either way they are re-estimated on the target data
within the first few dozen steps (``python benchmarks/zootuning.py``: identical held-out accuracy in
all 8 BatchNorm runs after 80 steps).
``python benchmarks/zootuning.py`` measures each of these choices alone against the architecture's
members fine-tuned alone.

``ZooTuned.collapse(x)`` folds the gates, averaged over ``x``, into one plain network of the original
architecture and size (the reference's "lite" mode freezes an EMA of the gates the same way): the
aggregate distilled by weight folding into a single deployable model.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from zooforge.errors import ZooforgeError, finite_number
from zooforge.selection.aggregate._common import AggregateResult, Timer, inference_gmacs, load_members, split_dataset
from zooforge.selection.aggregate.architecture import (GroupWarning, architecture_group, check_same_architecture,
                                                       group_warning, source_head)
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.tuning.methods import MethodConfig, TaskModel, inputs_for

__all__ = ["zootuning", "ZooTuned", "AggregatedLayer", "aggregate_models", "GATES", "GATE_LR"]

# "softmax": the models' weights sum to one per sample (ours); "sigmoid": each in (0, 1) on its own,
# as in the reference ``ada_agg.py``, so the aggregate kernel's scale moves with the gates.
GATES = ("softmax", "sigmoid")
# The gates' rate as a multiple of the kernels': chosen leave-one-group-out over 1x, 10x and a lead
# that gives the top member 95% of every gate (``python benchmarks/zootuning.py``): 10x in every
# rotation of 4 groups (3 image architectures, the text zoo's MiniLMs).
GATE_LR = 10.0


class AggregatedLayer(nn.Module):
    """A Conv2d or Linear whose kernel is a per-sample gated mixture of K models' kernels."""

    def __init__(self, layers: list[nn.Module], hidden: int = 16, align: bool = True, lead: float = 0.0,
                 gate: str = "softmax"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"`gate` must be one of {GATES}; got {gate!r}.")
        first = layers[0]
        self.gate_kind = gate
        self.kind = "conv" if isinstance(first, nn.Conv2d) else "linear"
        self.k = len(layers)
        self.weight = nn.Parameter(torch.stack([l.weight.detach().clone() for l in layers]))   # (K, out, ...)
        self.bias = (nn.Parameter(torch.stack([l.bias.detach().clone() for l in layers]))
                     if first.bias is not None else None)
        if self.kind == "conv":
            self.stride, self.padding, self.dilation, self.groups = first.stride, first.padding, first.dilation, first.groups
            if isinstance(self.padding, str) or first.padding_mode != "zeros":
                raise ZooforgeError("Zoo-Tuning supports zero-padded convolutions with numeric padding.")
        in_dim, out_dim = (first.in_channels, first.out_channels) if self.kind == "conv" else (first.in_features, first.out_features)
        self.gate = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.k))
        nn.init.zeros_(self.gate[2].weight)
        nn.init.zeros_(self.gate[2].bias)
        with torch.no_grad():
            self.gate[2].bias[0] = lead          # prior preference for the first (top-ranked) model
        self.align = nn.Parameter(torch.eye(out_dim).repeat(self.k, 1, 1)) if align else None
        self.last_gates: torch.Tensor | None = None
        # (sum of the gates, rows gated) while ZooTuned.mean_gates records: a layer may gate more rows
        # than the batch has images (a MaxViT's attention runs on every window) or run twice a pass
        self.tally: list | None = None

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        summary = x.mean(dim=(2, 3)) if self.kind == "conv" else (x.mean(dim=1) if x.dim() == 3 else x)
        if x.dim() > 3 and self.kind == "linear":
            summary = x.flatten(1, -2).mean(dim=1)
        logits = self.gate(summary)
        g = torch.softmax(logits, dim=-1) if self.gate_kind == "softmax" else torch.sigmoid(logits)
        self.last_gates = g.detach()
        if self.tally is not None:
            self.tally[0] = self.tally[0] + self.last_gates.sum(0)
            self.tally[1] += len(g)
        return g

    def kernels(self) -> torch.Tensor:
        if self.align is None:
            return self.weight
        return torch.einsum("koc,kc...->ko...", self.align, self.weight)

    def biases(self) -> torch.Tensor | None:
        if self.bias is None or self.align is None:
            return self.bias
        return torch.einsum("koc,kc->ko", self.align, self.bias)

    def folded(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kernel and bias for fixed model weights ``g`` (K,)."""
        w = torch.einsum("k,k...->...", g, self.kernels())
        b_k = self.biases()
        return w, None if b_k is None else torch.einsum("k,ko->o", g, b_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gates(x)                                            # (B, K)
        kernels = self.kernels()
        b_k = self.biases()
        bias = None if b_k is None else g @ b_k                      # (B, out)
        if self.kind == "linear":
            w = torch.einsum("bk,koi->boi", g, kernels)
            shape = x.shape
            y = torch.einsum("bni,boi->bno", x.reshape(shape[0], -1, shape[-1]), w)
            if bias is not None:
                y = y + bias[:, None, :]
            return y.reshape(*shape[:-1], -1)
        b, c, h, wd = x.shape
        w = torch.einsum("bk,k...->b...", g, kernels)                 # (B, out, in/groups, kh, kw)
        y = F.conv2d(x.reshape(1, b * c, h, wd), w.reshape(-1, *w.shape[2:]), None,
                     self.stride, self.padding, self.dilation, self.groups * b)
        y = y.reshape(b, -1, *y.shape[-2:])
        if bias is not None:
            y = y + bias[:, :, None, None]
        return y


def aggregate_models(models: list[nn.Module], skip: set[str] = frozenset(), *, align: bool = False,
                     hidden: int = 16, lead: float = 3.0, gate: str = "softmax", norm_stats: str = "average") -> nn.Module:
    """A copy of ``models[0]`` whose conv/linear layers aggregate all ``models`` (see module doc).
    ``norm_stats="reset"`` restarts batch norms' running statistics (the reference's choice) instead
    of averaging the models'."""
    if norm_stats not in ("average", "reset"):
        raise ValueError(f"`norm_stats` must be 'average' or 'reset'; got {norm_stats!r}.")
    target = copy.deepcopy(models[0])
    named = [dict(m.named_modules()) for m in models]
    for name, module in list(target.named_modules()):
        if not name or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        if isinstance(module, (nn.Conv2d, nn.Linear)) and type(module) in (nn.Conv2d, nn.Linear):
            setattr(parent, child, AggregatedLayer([n[name] for n in named], hidden, align, lead, gate))
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            prior = torch.softmax(torch.tensor([lead] + [0.0] * (len(models) - 1)), 0)
            with torch.no_grad():
                for pname, p in module.named_parameters(recurse=False):
                    stacked = torch.stack([dict(n[name].named_parameters(recurse=False))[pname] for n in named])
                    p.copy_(torch.einsum("k,k...->...", prior, stacked))
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats \
                        and norm_stats == "reset":
                    module.reset_running_stats()
                elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                    for bname in ("running_mean", "running_var"):
                        stacked = torch.stack([getattr(n[name], bname) for n in named])
                        getattr(module, bname).copy_(torch.einsum("k,k...->...", prior, stacked))
    return target


class ZooTuned(TaskModel):
    """A TaskModel whose body aggregates several models; ``mean_gates()`` and ``collapse()``."""

    def aggregated_layers(self) -> list[tuple[str, AggregatedLayer]]:
        return [(n, m) for n, m in self.body.named_modules() if isinstance(m, AggregatedLayer)]

    @torch.no_grad()
    def mean_gates(self, x: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
        """Each aggregated layer's gates averaged over every row it gated on ``x`` (an image, or each
        window of one where the layer runs on windows), in eval mode."""
        was = self.training
        self.eval()
        layers = self.aggregated_layers()
        for _, layer in layers:
            layer.tally = [0, 0]
        try:
            for i in range(0, len(x), batch_size):
                self(x[i:i + batch_size])
            return {n: layer.tally[0] / layer.tally[1] for n, layer in layers}
        finally:
            for _, layer in layers:
                layer.tally = None
            self.train(was)

    @torch.no_grad()
    def collapse(self, x: torch.Tensor, template: nn.Module) -> nn.Module:
        """One plain network (``template``'s architecture) with the gates fixed at their mean over ``x``."""
        gates = self.mean_gates(x)
        plain = copy.deepcopy(template)
        state = {k: v for k, v in self.body.state_dict().items()}
        modules = dict(plain.named_modules())
        for name, layer in self.aggregated_layers():
            w, b = layer.folded(gates[name].to(layer.weight.dtype))
            modules[name].weight.copy_(w)
            if b is not None:
                modules[name].bias.copy_(b)
        for k, v in state.items():           # norms, embeddings and buffers carry over as they are
            if not any(k.startswith(n + ".") for n, _ in self.aggregated_layers()):
                plain.state_dict()[k].copy_(v)
        return plain


def zootuning(catalogue, dataset, *, models=None, top_k: int | None = 3, align: bool = False, lead: float = 3.0,
              gate: str = "softmax", norm_stats: str = "average", gate_lr: float = GATE_LR,
              config: TrainConfig | None = None, split: float = 0.8, seed: int = 0, ordering=None,
              progress: bool = False, collapse: bool = True) -> AggregateResult:
    """Zoo-Tuning of ``models`` (ids/globs) or, by default, of the top-ranked model and the next
    ``top_k`` - 1 of its architecture as ``ordering`` ranks the zoo (``load_members``: by default the
    order ``zooforge rank`` recommends; :func:`architecture_group`). Where the top-ranked model has no
    other of its architecture, the group is the highest-ranked one that has, with a
    :class:`GroupWarning` and the models ranked above it in ``extra["passed_over"]``. ``gate``,
    ``norm_stats``, ``align``, ``lead``: the module docstring. ``gate_lr``: the gates' learning rate
    as a multiple of the kernels' (they start from scratch; the kernels from trained models)."""
    from zooforge.zoo import load_catalogue

    finite_number(gate_lr, "gate_lr", above=0)
    finite_number(lead, "lead", note="0: start from the plain average")
    if not models and top_k is not None and top_k < 2:
        raise ZooforgeError(f"Zoo-Tuning aggregates at least 2 models of one architecture; --top-k {top_k} asked for "
                            "fewer. For the top-ranked model alone use --method ensemble --top-k 1.")
    ds, train_ds, test_ds = split_dataset(dataset, split, seed)
    # ranked even when the members are named: the gates' lead (and the norms' prior) go to the first,
    # which must be the top-ranked of them, not whichever the catalogue lists first
    passed_over, unranked = [], {}
    if models:
        members = load_members(catalogue, models, None, train_ds, ordering=ordering, progress=progress, keep_all=True)
    else:
        entries = catalogue if isinstance(catalogue, list) else load_catalogue(catalogue)
        ranked = load_members(entries, None, len(entries), train_ds, ordering=ordering, progress=progress, load=False,
                              unplaced=unranked)
        members, passed_over = architecture_group(ranked, top_k)
        if passed_over:
            warnings.warn(group_warning(passed_over, members[0].id), GroupWarning, stacklevel=2)
    if len(members) < 2:
        raise ZooforgeError("Zoo-Tuning aggregates at least 2 models; got "
                            f"{[m.id for m in members]}.")
    skip = source_head(members[0].model)
    check_same_architecture([m.model for m in members], [m.id for m in members], skip)
    with Timer() as timer:
        torch.manual_seed(seed)            # gates, alignment and head inits: reproducible whatever ran before
        body = aggregate_models([m.model for m in members], skip, align=align, lead=lead, gate=gate,
                                norm_stats=norm_stats)
        for layer in body.modules():
            if isinstance(layer, AggregatedLayer):
                for param in layer.gate.parameters():
                    param.lr_scale = gate_lr          # read by the training loop's optimiser
        base = members[0].with_model(body)
        model = ZooTuned(base, ds.num_classes, MethodConfig("full"))
        x_tr, x_te = inputs_for(base, train_ds), inputs_for(base, test_ds)
        y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
        cfg = config or TrainConfig(epochs=10, lr=1e-3, progress=progress, seed=seed)
        result = train(model, x_tr, y_tr, cfg).check("training Zoo-Tuning")
        accuracy = evaluate_accuracy(model, x_te, y_te)
        gates = model.mean_gates(x_tr)
        weights = torch.stack(list(gates.values())).mean(0).tolist()
        extra = {"align": align, "lead": lead, "gate": gate, "norm_stats": norm_stats, "gate_lr": gate_lr,
                 "layers": len(gates), "passed_over": passed_over, "unranked": unranked}
        if collapse:
            plain = model.collapse(x_tr, members[0].model)
            single = TaskModel(members[0].with_model(plain),
                               ds.num_classes, MethodConfig("full"))
            single.head.load_state_dict(model.head.state_dict())
            extra["collapsed_accuracy"] = evaluate_accuracy(single, x_te, y_te)
            extra["collapsed_params"] = single.total_params
            extra["collapsed_gmacs"] = inference_gmacs(single, x_te)
    return AggregateResult("zootuning", [m.id for m in members], weights, accuracy, model.trainable_params,
                           model.total_params, timer.seconds, result.history, extra, model,
                           inference_gmacs(model, x_te))
