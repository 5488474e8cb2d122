"""B-Tuning: Bayesian tuning of one model with the knowledge of several (You et al., JMLR 2022,
"Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", Sec. 5).

1. Rank the hub (the paper: with LogME; here by default as ``zooforge rank`` orders it, ``ordering``
   for another); keep the top K teachers. Their weights are π_k ∝ exp(LogME_k / t)
   (t = 0.1 in the reference ``b_tuning.py``), a posterior over "which model explains the data".
2. Each teacher's LogME fit gives posterior-mean weights m_k (C × D_k); its posterior predictive
   on sample x is f_k(x) m_kᵀ. The teachers' mixture Σ_k π_k f_k(x) m_kᵀ is the soft target.
3. The student (the top-ranked model) is fine-tuned with cross-entropy plus the Bayesian-tuning
   regulariser λ · ‖f_s(x) m_sᵀ − Σ_k π_k f_k(x) m_kᵀ‖² (mean over samples and classes), where m_s is
   the LogME fit of the student's own features before tuning (fixed), λ = 100 as in the reference.

The teachers' predictions come from their cached features, each made with the teacher's own
preprocessing; nothing is recomputed during training.

λ is not scale-free: the regulariser is a squared error between predictive outputs, whose size
depends on the features. The reference's 100 was set for ResNet-50 features and SGD; on the demo
zoo (AdamW, 8 epochs, 150 images/class, top-3 teachers) it dominates the loss (1.28 vs a
cross-entropy near 0.26 on shapes) and costs accuracy: shapes 0.892 / 0.867 / 0.858 / 0.725 and
textures 0.983 / 0.992 / 0.983 / 0.958 for λ = 0 / 1 / 10 / 100. ``strength`` (``--strength``)
is therefore exposed, and ``strength="auto"`` chooses it by validation inside the training split: on
the same setup it chose λ = 1 on shapes (validation 0.885, tied with λ = 0; held-out 0.867) and λ = 0
on textures (held-out 0.983), never the reference's 100 (validation 0.802 on both). On demo glyphs
(10 classes, 100 images a class, 8 epochs, a ResNet student) the reference's λ = 100 trains to chance
(held-out 0.17 against 0.55 for λ = 0 at the same rate; ``python benchmarks/aggregate.py``): the
student's batch norms re-estimate their statistics on the target data, which moves f_s m_sᵀ however
the weights change, and the regulariser then outweighs the cross-entropy. (Computing the regulariser
with the batch norms' running statistics, on which m_s was fitted, did not help: 0.115 there.) So the
default is ``strength="auto"``: λ from ``STRENGTH_GRID`` (the reference's 100 included) by validation;
give a number for a fixed λ.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from zooforge.errors import finite_number
from zooforge.metrics.logme import logme_fit
from zooforge.selection.aggregate._common import AggregateResult, Timer, inference_gmacs, load_members, split_dataset
from zooforge.tuning.loop import TrainConfig, evaluate_accuracy, train
from zooforge.tuning.methods import TaskModel, build, inputs_for
from zooforge.tuning.tune import VALIDATION_SPLIT, choose_by_validation

__all__ = ["btuning", "BTuningStudent", "teacher_weights"]


def teacher_weights(scores, temperature: float = 0.1) -> np.ndarray:
    """π = softmax(LogME / t): sums to one; a lower t puts more weight on the best model."""
    s = np.asarray(scores, dtype=np.float64) / finite_number(temperature, "temperature", above=0)
    e = np.exp(s - s.max())
    return e / e.sum()


class BTuningStudent(nn.Module):
    """``forward(x, target=None)``: logits; in training with ``target`` it leaves the regulariser in
    ``aux_loss`` for the loop."""

    def __init__(self, task: TaskModel, student_weights: np.ndarray, strength: float):
        super().__init__()
        self.task = task
        self.register_buffer("m_s", torch.as_tensor(student_weights, dtype=torch.float32))
        self.strength = strength
        self.aux_loss = None

    def forward(self, x, target=None):
        feats = self.task.features(x)
        if self.training and target is not None:
            self.aux_loss = self.strength * torch.mean((feats @ self.m_s.T - target) ** 2)
        else:
            self.aux_loss = None
        return self.task.head(feats)


# The strengths ``strength="auto"`` chooses from: none, the scale at which the regulariser matches
# the cross-entropy on the demo zoo, and the reference's 100.
STRENGTH_GRID = (0.0, 1.0, 10.0, 100.0)


def btuning(catalogue, dataset, *, top_k: int = 3, models=None, temperature: float = 0.1,
            strength: float | str = "auto", strength_grid=STRENGTH_GRID, method: str = "full",
            config: TrainConfig | None = None, split: float = 0.8, seed: int = 0, cache_dir=None,
            ordering=None, progress: bool = False) -> AggregateResult:
    """B-Tuning of the top-ranked model with the top-``top_k`` teachers (see the module docstring), or
    with every one of ``models`` (ids/globs), ranked, the first the student; ``ordering`` ranks the zoo
    (``load_members``: by default the order ``zooforge rank`` recommends).

    ``strength="auto"`` chooses λ from ``strength_grid`` by validation: the whole procedure (LogME
    fits, teacher weights, student, training with the same config) is run on 80% of the training
    split for each λ and judged on the other 20%; the best λ (ties: the larger, which keeps more of
    the teachers) is then used on the whole training split. It costs one training per grid value
    more; the held-out split is never seen before the final evaluation."""
    from zooforge.zoo.features import extract

    if isinstance(strength, str) and strength != "auto":
        raise ValueError(f"`strength` must be a number or 'auto'; got {strength!r}.")
    for value in [strength] if strength != "auto" else strength_grid:
        finite_number(value, "strength", at_least=0, note="0: plain fine-tuning of the student")
    finite_number(temperature, "temperature", above=0)
    ds, train_ds, test_ds = split_dataset(dataset, split, seed)
    unranked: dict[str, str] = {}
    # named members are ranked too (the student is the first), and every one of them is kept
    members = load_members(catalogue, models, top_k, train_ds, ordering=ordering, cache_dir=cache_dir,
                           progress=progress, keep_all=bool(models), unplaced=unranked)
    cfg = config or TrainConfig(epochs=10, lr=1e-3, progress=progress, seed=seed)
    with Timer() as timer:
        feats = {b.id: extract(b, train_ds, cache_dir=cache_dir, progress=progress).features for b in members}
        inputs: dict[str, tuple] = {}

        def inputs_of(b):
            if b.id not in inputs:
                inputs[b.id] = (inputs_for(b, train_ds), inputs_for(b, test_ds))
            return inputs[b.id]

        trials = []
        if strength == "auto":
            fit_rows, val_rows = train_ds.split_indices(VALIDATION_SPLIT, seed + 1)
            quiet = TrainConfig(**{**cfg.__dict__, "checkpoint_dir": None, "progress": False})
            plan = _plan(members, feats, train_ds.labels, fit_rows, temperature)
            x = inputs_of(plan["student"])[0]

            def trial(value: float) -> float:
                model, _, run = _fit_student(plan, value, method, ds.num_classes, x[fit_rows],
                                             plan["targets"][fit_rows], train_ds.labels[fit_rows], quiet, seed,
                                             trial=True)
                if run.diverged:
                    return float("-inf")            # never chosen while another strength trains
                return evaluate_accuracy(model, x[val_rows], torch.as_tensor(train_ds.labels[val_rows]))

            strength, trials = choose_by_validation([float(v) for v in strength_grid], trial, "strength",
                                                    prefer_larger=True)
        plan = _plan(members, feats, train_ds.labels, np.arange(len(train_ds)), temperature)
        x_tr, x_te = inputs_of(plan["student"])
        y_te = torch.as_tensor(test_ds.labels)
        model, task, result = _fit_student(plan, strength, method, ds.num_classes, x_tr, plan["targets"],
                                           train_ds.labels, cfg, seed)
        result.check(f"training B-Tuning's student at strength {strength:g}")
        accuracy = evaluate_accuracy(model, x_te, y_te)
    ids = [b.id for b in members]
    return AggregateResult("btuning", ids, [float(p) for p in plan["pi"]], accuracy,
                           task.trainable_params, task.total_params, timer.seconds, result.history,
                           {"student": plan["student"].id, "logme": dict(zip(ids, plan["logme"])),
                            "temperature": temperature, "strength": strength, "strength_trials": trials,
                            "method": method, "unranked": unranked}, model, inference_gmacs(task, x_te))


def _plan(members, feats, labels, rows, temperature) -> dict:
    """LogME fits of every member on the training ``rows``: their scores, π, the student (the first
    member: the top-ranked), its weights m_s, and the teachers' mixture Σ π_k f_k m_kᵀ on every training row."""
    fits = [logme_fit(feats[b.id][rows], labels[rows]) for b in members]
    scores = [f.score for f in fits]
    pi = teacher_weights(scores, temperature)
    mix = torch.as_tensor(sum(p * (feats[b.id] @ f.weights.T) for p, b, f in zip(pi, members, fits)),
                          dtype=torch.float32)
    return {"logme": scores, "pi": pi, "student": members[0], "weights": fits[0].weights, "targets": mix}


def _fit_student(plan, strength, method, num_classes, x, targets, labels, cfg, seed, trial=False):
    """Build (in place, or on a copy for a ``trial``: methods train the backbone's own weights) and train."""
    torch.manual_seed(seed)            # the new head's init, as in `tune`: reproducible whatever ran before
    student = copy.deepcopy(plan["student"]) if trial else plan["student"]
    task = build(student, num_classes, method)
    model = BTuningStudent(task, plan["weights"], strength)
    result = train(model, (x, targets), torch.as_tensor(labels), cfg)
    model.eval()
    return model, task, result
