"""OTCE: optimal-transport-based conditional entropy, and its auxiliary-free variants.

Tan, Li & Huang, "OTCE: A Transferability Metric for Cross-Domain Cross-Task Representations",
CVPR 2021 (https://arxiv.org/abs/2103.13843); Tan, Zhang, Li, Huang & Zhang, "Transferability-Guided
Cross-Domain Cross-Task Transfer Learning", IEEE TNNLS 2024 (https://arxiv.org/abs/2207.05510).

Source samples (x_s, y_s) and target samples (x_t, y_t), both embedded by the same model, are coupled
by optimal transport with uniform marginals and squared-Euclidean cost (``ot.emd``, or entropic
``ot.sinkhorn``). The coupling P gives

* the domain difference W_D = <P, C>, and
* the task difference W_T = H(Y_t | Y_s) of the label joint P(y_s, y_t) = sum of P over the pairs.

OTCE = lambda_D W_D + lambda_T W_T + b, where the weights are fitted by least squares on auxiliary
tasks with known transfer accuracy (``fit_otce_weights``); the paper's own fitted values are tied to
its feature extractors and datasets, so no universal default exists and ``otce`` requires them.

Auxiliary-free (registered):

* ``f_otce`` = -W_T, the OT-based negative conditional entropy (F-OTCE; the CVPR authors' README
  recommends it when no auxiliary tasks exist). Higher = better.
* ``jc_otce`` = -W_T with a joint cost |x_s - x_t|^2 + W(y_s, y_t), W the squared-Euclidean OT
  distance between the two classes' feature sets (JC-OTCE), so the coupling respects label structure.
* ``otce_self``: for when only the target set is at hand (no source data). zooforge's construction,
  not a paper's: the target set is split in two stratified halves that play source and target, and
  F-OTCE is computed between them. It measures how well the feature geometry keeps classes apart
  under optimal matching (0 when no mass crosses classes).

The exact solver is cubic in the sample count, so each side is stratified-subsampled to at most
``max_samples`` (1,000 by default, as the reference recommends).

Shape: ``features`` (N_t, D); ``labels`` (N_t,); ``source_features`` (N_s, D); ``source_labels`` (N_s,).
"""

from __future__ import annotations

import numpy as np

from zooforge.metrics._sampling import stratified_halves, stratified_subsample
from zooforge.metrics._validation import check_features, check_labels
from zooforge.metrics.nce import negative_conditional_entropy
from zooforge.metrics.registry import register

__all__ = ["otce", "otce_terms", "fit_otce_weights", "f_otce", "jc_otce", "otce_self"]

MAX_SAMPLES = 1000
EMD_MAX_ITER = 100_000


def _side(features, labels, name: str, max_samples: int, seed: int):
    y, _ = check_labels(labels, name=f"{name}labels")
    x = check_features(features, f"{name}features", n_samples=len(y), against=f"`{name}labels`")
    return stratified_subsample(x, y, max_samples, seed)


def _coupling(xs, xt, cost, method: str, reg: float):
    import ot

    a, b = ot.unif(xs.shape[0]), ot.unif(xt.shape[0])
    if method == "emd":
        return ot.emd(a, b, cost, numItermax=EMD_MAX_ITER)
    if method == "sinkhorn":
        # The entropic regulariser is relative to the cost's scale, so one reg suits any features.
        return ot.sinkhorn(a, b, cost / cost.max(), reg)
    raise ValueError(f"`method` must be 'emd' or 'sinkhorn'; got {method!r}.")


def _label_joint(coupling, ys, yt) -> np.ndarray:
    joint = np.zeros((ys.max() + 1, yt.max() + 1))
    np.add.at(joint, (ys[:, None], yt[None, :]), coupling)
    return joint


def _class_distance(xs, ys, xt, yt) -> np.ndarray:
    """Squared-Euclidean OT distance between every source class and every target class."""
    import ot

    out = np.zeros((ys.max() + 1, yt.max() + 1))
    for i in range(out.shape[0]):
        a = xs[ys == i]
        for j in range(out.shape[1]):
            b = xt[yt == j]
            out[i, j] = ot.emd2(ot.unif(len(a)), ot.unif(len(b)), ot.dist(a, b), numItermax=EMD_MAX_ITER)
    return out


def otce_terms(features, labels, source_features, source_labels, *, method: str = "emd",
               reg: float = 0.05, joint_cost: bool = False, max_samples: int = MAX_SAMPLES,
               seed: int = 0) -> tuple[float, float]:
    """(W_D, W_T): the OT domain difference and the conditional entropy H(Y_t | Y_s)."""
    import ot

    xs, ys = _side(source_features, source_labels, "source_", max_samples, seed)
    xt, yt = _side(features, labels, "", max_samples, seed)
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(
            f"`source_features` has {xs.shape[1]} columns but `features` has {xt.shape[1]}; "
            "both must come from the same feature extractor."
        )
    feature_cost = ot.dist(xs, xt)                           # squared Euclidean
    cost = feature_cost + _class_distance(xs, ys, xt, yt)[ys][:, yt] if joint_cost else feature_cost
    coupling = _coupling(xs, xt, cost, method, reg)
    domain = float(np.sum(coupling * feature_cost))
    task = -negative_conditional_entropy(_label_joint(coupling, ys, yt))
    return domain, task


def otce(features, labels, source_features, source_labels, *, weights: tuple[float, float, float],
         **options) -> float:
    """lambda_D W_D + lambda_T W_T + b with ``weights`` = (lambda_D, lambda_T, b)."""
    domain, task = otce_terms(features, labels, source_features, source_labels, **options)
    lam_d, lam_t, bias = weights
    return lam_d * domain + lam_t * task + bias


def fit_otce_weights(domain, task, accuracy) -> tuple[float, float, float]:
    """Least-squares (lambda_D, lambda_T, b) from auxiliary tasks' W_D, W_T and transfer accuracy."""
    domain, task, accuracy = (np.asarray(v, dtype=np.float64) for v in (domain, task, accuracy))
    if not (domain.shape == task.shape == accuracy.shape) or domain.ndim != 1 or domain.size < 3:
        raise ValueError("fit_otce_weights needs three equal-length 1-D arrays with at least 3 tasks.")
    design = np.column_stack([domain, task, np.ones_like(domain)])
    lam_d, lam_t, bias = np.linalg.lstsq(design, accuracy, rcond=None)[0]
    return float(lam_d), float(lam_t), float(bias)


@register("f_otce", needs=("features", "source_features"), summary="OT-based NCE, -H(Yt|Ys) (Tan et al. 2021/2024)")
def f_otce(features, labels, source_features, source_labels, **options) -> float:
    """F-OTCE = -W_T; higher = better."""
    return -otce_terms(features, labels, source_features, source_labels, **options)[1]


@register("jc_otce", needs=("features", "source_features"), summary="F-OTCE with label-aware joint cost (Tan et al. 2024)")
def jc_otce(features, labels, source_features, source_labels, **options) -> float:
    """JC-OTCE = -W_T under the joint feature + label cost; higher = better."""
    return -otce_terms(features, labels, source_features, source_labels, joint_cost=True, **options)[1]


@register("otce_self", needs=("features",), summary="F-OTCE between two halves of the target set (target only)")
def otce_self(features, labels, *, seed: int = 0, **options) -> float:
    """Target-only OT conditional entropy (see the module docstring); higher = better."""
    y, _ = check_labels(labels, min_per_class=2)
    x = check_features(features, n_samples=len(y))
    x, y, first = stratified_halves(x, y, seed)
    return -otce_terms(x[~first], y[~first], x[first], y[first], seed=seed, **options)[1]
