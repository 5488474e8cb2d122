"""Hub-Pathway: route each input through a few models of a heterogeneous hub (Shu et al., NeurIPS
2022, "Hub-Pathway: Transfer Learning from a Hub of Pre-trained Models").

A pathway generator (a small CNN on the raw image) gives every input a distribution over the K
models. In training, Gaussian exploration noise whose scale is learned per input is added to the
generator's logits (noisy top-k gating, Shazeer et al. 2017); the top-k models are kept and their
weights renormalised by a softmax over the kept logits, so each input's routing weights sum to one.
Only the kept models run on an input (a member routed a single input of a batch normalises it with
its batch norms' running statistics: the batch statistics of one sample are undefined). Each model
has its own head; the output is the routing-weighted sum of their logits. A load-balancing term, the squared coefficient of variation of the
models' total routing weight in the batch, keeps the generator from collapsing onto one model. The
paper's exploitation term trains each model "by specific data that activate it": every member's own
logits, unweighted, also meet the task's loss on the inputs routed to it (``exploit`` times the mean
over the batch's routed (input, member) pairs), so that a member is a good predictor on its own and
not only as a routing-weighted share of the sum; without it a member whose weight is small on an
input learns little from it. Both terms are left in ``aux_loss`` for the training loop (the second
needs the labels: a callable the loop gives the batch's targets). The whole pathway (generator,
models, heads) trains end to end with the one loop. The generator starts preferring the top-ranked
member (``lead`` added to its logit; the paper's starts with no preference, ``lead=0``): that member
then takes nearly every input, as it would fine-tuned alone, and the second route explores the others.

The models keep their own preprocessing: the shared input is the image in [0, 1] and each member
resizes it to its own input size and normalises with its own mean and std. Text members share one
input, the token ids, so they must share a tokenizer (checked on the data: members that tokenise it
differently are refused); their generator is the text counterpart of the small CNN, a mean of
learned token embeddings (padding left out). The paper routes images only; this is our extension.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from zooforge.errors import ZooforgeError, finite_number
from zooforge.selection.aggregate._common import (AggregateResult, Timer, inference_gmacs, load_members, raw_images,
                                                 split_dataset)
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.tuning.methods import TaskModel, build

__all__ = ["EXPLOIT", "LEAD", "hubpathway", "HubPathway", "PathwayGenerator", "TokenGenerator", "cv_squared",
           "running_statistics"]

# Weight of the per-member (exploitation) term against the routed sum's loss (0 turns it off): chosen
# from 0, 0.3 and 1 leave-one-zoo-out on five zoos (``python benchmarks/aggregate.py --hub-exploit``,
# its docstring): 0.3 in every rotation; held out -4.6 points against the single model, -5.0 without.
EXPLOIT = 0.3
# The generator's starting preference for the top-ranked member, a logit added to it (0: every member
# alike, as in the paper: the generator starts from scratch, load balancing spreads the inputs, and each
# of 4 members trains on about half of them, the top one included). Chosen from 0 and 3 leave-one-zoo-out
# on five zoos (``python benchmarks/aggregate.py --hub-lead``, its docstring): 3 in every rotation; held
# out +0.6 points against the single model, -4.3 with 0.
LEAD = 3.0


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation: 0 when all entries are equal (perfect balance)."""
    if x.numel() < 2:
        return x.new_zeros(())
    return x.float().var(unbiased=False) / (x.float().mean() ** 2 + 1e-10)


class PathwayGenerator(nn.Module):
    """Small CNN: image in [0, 1] → (clean logits, noise scale) over K models."""

    def __init__(self, k: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.logits = nn.Linear(width, k)
        self.noise = nn.Linear(width, k)     # default (small random) init: no exact ties between models

    def forward(self, x):
        h = self.net(x)
        return self.logits(h), F.softplus(self.noise(h)) + 1e-2


class TokenGenerator(nn.Module):
    """Mean of learned token embeddings (padding excluded) → (clean logits, noise scale) over K models."""

    def __init__(self, k: int, vocab_size: int, pad_id: int, width: int = 32):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, width, mode="mean", padding_idx=pad_id)
        self.logits = nn.Linear(width, k)
        self.noise = nn.Linear(width, k)

    def forward(self, ids):
        h = torch.relu(self.embed(ids))
        return self.logits(h), F.softplus(self.noise(h)) + 1e-2


class _Member(nn.Module):
    """A TaskModel fed images in [0, 1] (resized to its size, normalised with its statistics) or, for
    a text model, the shared token ids as they are."""

    def __init__(self, task: TaskModel):
        super().__init__()
        self.task = task
        self.text = task.backbone.modality == "text"
        if self.text:
            return
        t = task.backbone.transform
        if t is None:
            raise ZooforgeError(f"Hub-Pathway members must be timm/local image models; {task.backbone.id!r} is not.")
        self.size = tuple(t.input_size[1:])
        self.register_buffer("mean", torch.tensor(t.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(t.std).view(1, -1, 1, 1))

    def forward(self, x):
        if self.text:
            return self.task(x)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.task((x - self.mean) / self.std)


@contextmanager
def running_statistics(module: nn.Module):
    """Batch norms of ``module`` use (and leave alone) their running statistics within the block, the
    rest of it staying in training mode: for inputs that cannot be normalised by their batch (a
    Hub-Pathway member routed one input of it: one sample has no spread)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


def _check_weights(balance: float, exploit: float, lead: float) -> None:
    finite_number(balance, "balance", at_least=0, note="0: no load balancing")
    finite_number(exploit, "exploit", at_least=0, note="0: no per-member term")
    finite_number(lead, "lead", note="0: no preference for the top member")


class HubPathway(nn.Module):
    def __init__(self, tasks: list[TaskModel], top_k: int = 2, balance: float = 0.01, noise: bool = True,
                 generator: nn.Module | None = None, exploit: float = EXPLOIT, lead: float = LEAD):
        super().__init__()
        if not 1 <= top_k <= len(tasks):
            raise ValueError(f"`top_k` must be in [1, {len(tasks)}]; got {top_k}.")
        _check_weights(balance, exploit, lead)
        self.members = nn.ModuleList(_Member(t) for t in tasks)
        self.generator = generator if generator is not None else PathwayGenerator(len(tasks))
        if lead:
            head = getattr(self.generator, "logits", None)
            if not isinstance(head, nn.Linear):
                raise ValueError("a `lead` needs a generator whose `logits` is the nn.Linear giving the members' "
                                 "logits; pass lead=0 with this generator.")
            with torch.no_grad():                 # the first member (the top-ranked) starts preferred
                head.bias[0] += lead
        self.top_k, self.balance, self.noise, self.exploit = top_k, balance, noise, exploit
        self.aux_loss = None
        self.last_routing: torch.Tensor | None = None

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) weights: zero outside each input's top-k, summing to one over it."""
        clean, scale = self.generator(x)
        logits = clean + torch.randn_like(clean) * scale if (self.training and self.noise) else clean
        top, idx = logits.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))
        return weights

    def forward(self, x):
        w = self.routing(x)
        self.last_routing = w.detach()
        out, routed = None, []
        for k, member in enumerate(self.members):
            rows = (w[:, k] > 0).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            if self.training and rows.numel() == 1:
                with running_statistics(member):
                    logits = member(x[rows])
            else:
                logits = member(x[rows])
            routed.append((rows, logits))
            if out is None:
                out = logits.new_zeros(len(x), logits.shape[-1])
            out = out.index_add(0, rows, logits * w[rows, k:k + 1])
        self.aux_loss = self._aux(w, routed) if self.training else None
        return out

    def _aux(self, w: torch.Tensor, routed: list[tuple[torch.Tensor, torch.Tensor]]):
        balance = self.balance * cv_squared(w.sum(0))
        if not self.exploit:
            return balance
        pairs = sum(len(rows) for rows, _ in routed)

        def with_members(y, loss):
            # each member's batch-mean loss on its rows, weighted by its share of the routed pairs
            own = sum(loss(logits, y[rows]) * len(rows) for rows, logits in routed) / pairs
            return balance + self.exploit * own

        return with_members


def shared_tokens(members, dataset) -> torch.Tensor:
    """The token ids every text member reads ``dataset`` as, which must be one tensor for all of them:
    Hub-Pathway gives each input to several members at once."""
    from zooforge.tuning.methods import inputs_for

    other = [m.id for m in members if m.modality != "text"]
    if other:
        raise ZooforgeError(f"Hub-Pathway on a text dataset routes among text models; {other} are not. "
                            "Choose text models with --model.")
    ids = inputs_for(members[0], dataset)
    for m in members[1:]:
        mine = inputs_for(m, dataset)
        if mine.shape != ids.shape or not torch.equal(mine, ids):
            raise ZooforgeError(f"Hub-Pathway gives every member the same input, and on text that needs one "
                                f"tokenizer: {members[0].id!r} and {m.id!r} tokenise this data differently. "
                                "Choose members that share a tokenizer (--model).")
    return ids


def hubpathway(catalogue, dataset, *, top_k: int = 2, models=None, candidates: int | None = 4,
               method: str = "full", balance: float = 0.01, exploit: float = EXPLOIT, lead: float = LEAD,
               config: TrainConfig | None = None, split: float = 0.8, seed: int = 0, ordering=None,
               progress: bool = False) -> AggregateResult:
    """Hub-Pathway over ``models`` (ids/globs) or the top-``candidates`` as ``ordering`` ranks the zoo
    (``load_members``), routing to ``top_k``; ``exploit`` weighs the per-member term (module docstring);
    ``lead`` is added to the generator's starting logit of the first (top-ranked) member."""
    _check_weights(balance, exploit, lead)                 # before any model is loaded
    if not models and candidates is not None and candidates < 2:
        raise ZooforgeError(f"Hub-Pathway routes among at least 2 models; --top-k {candidates} (the candidates) asked "
                            "for fewer. For the top-ranked model alone use --method ensemble --top-k 1.")
    ds, train_ds, test_ds = split_dataset(dataset, split, seed)
    # named members are ranked too: the lead goes to the first, which must be the top-ranked of them
    unranked: dict[str, str] = {}
    members = load_members(catalogue, models, candidates, train_ds, ordering=ordering, progress=progress,
                           keep_all=bool(models), unplaced=unranked)
    if len(members) < 2:
        raise ZooforgeError(f"Hub-Pathway routes among at least 2 models; got {[m.id for m in members]}.")
    with Timer() as timer:
        torch.manual_seed(seed)
        tasks = [build(m, ds.num_classes, method) for m in members]
        if ds.modality == "text":
            x_tr, x_te = shared_tokens(members, train_ds), shared_tokens(members, test_ds)
            tok = members[0].tokenizer
            generator = TokenGenerator(len(tasks), len(tok), tok.pad_token_id or 0)
        else:
            size = tuple(max(m.transform.input_size[i] for m in members if m.transform is not None) for i in (1, 2))
            x_tr, x_te = raw_images(train_ds, size), raw_images(test_ds, size)
            generator = None
        model = HubPathway(tasks, top_k=min(top_k, len(tasks)), balance=balance, generator=generator,
                           exploit=exploit, lead=lead)
        y_tr, y_te = torch.as_tensor(train_ds.labels), torch.as_tensor(test_ds.labels)
        cfg = config or TrainConfig(epochs=10, lr=1e-3, progress=progress, seed=seed)
        result = train(model, x_tr, y_tr, cfg).check("training Hub-Pathway")
        accuracy = evaluate_accuracy(model, x_te, y_te)
        model.eval()
        with torch.no_grad():
            usage = torch.cat([model.routing(x_te[i:i + 256]) for i in range(0, len(x_te), 256)]).mean(0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return AggregateResult("hubpathway", [m.id for m in members], usage.tolist(), accuracy, trainable,
                           sum(p.numel() for p in model.parameters()), timer.seconds, result.history,
                           {"top_k": model.top_k, "balance": balance, "exploit": exploit, "lead": lead,
                            "method": method, "unranked": unranked}, model, inference_gmacs(model, x_te))
