"""The estimator registry: name -> (function, what it needs).

After timm's ``register_model``: the decorator records and returns the function unchanged. Unlike
timm, registering a name twice raises, so two modules cannot silently shadow each other. Callers ask
an estimator what it ``needs`` and skip it when a model cannot feed it (no classifier head means no
``source_probs``; no source dataset means no ``source_features``).

Threads. Estimators mix torch (OpenMP pool) and numpy/scipy/scikit-learn (OpenBLAS pool). When both
pools have several threads, each spins on the cores the other needs. A call through the registry
therefore runs BLAS single-threaded while torch's pool is multi-threaded; torch keeps its threads.
``python benchmarks/threads.py`` (2 cores, N = 400, D = 2048): SFDA 0.238 -> 0.057 s, N-LEEP
0.89 -> 0.44 s, all 14 estimators 1.96 -> 1.43 s; the linear probe, pure scikit-learn, is the one
that loses (0.20 -> 0.29 s).
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

__all__ = ["Estimator", "REGISTRY", "INPUTS", "TASKS", "register", "get_estimator", "list_estimators"]

# What an estimator may need beside the target labels. ``source_features`` comes with
# ``source_labels`` (features and labels of the source task's own data).
INPUTS = ("features", "source_probs", "source_features")
# The target kinds (zooforge.zoo.targets): class codes (N,), regression targets (N, K) float, tag
# indicators (N, K) 0/1. An estimator registers the kinds it has a published form for; the others
# are skipped with the reason (``Estimator.unsupported``).
TASKS = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class Estimator:
    """One registered transferability estimator. Higher scores mean better expected transfer."""

    name: str
    fn: Callable[..., float]
    needs: frozenset[str]
    summary: str
    # Same arguments as ``fn``; returns (score, g) with g[i] the derivative of the score with respect
    # to sample i's weight at equal weights: what the interval of a resample-free ("infinitesimal
    # jackknife") estimate is made of. None: intervals come from resampling.
    influence: Callable[..., tuple[float, Any]] | None = None
    # Target kinds it computes; an estimator registered for more than classification takes ``task=``.
    tasks: frozenset[str] = frozenset({"classification"})
    # Bumped when the definition changes, so that stored results (audit cells) are not mixed across it.
    version: int = 1

    def unsupported(self, task: str) -> str | None:
        """Why this estimator cannot score a ``task`` target, or None when it can."""
        if task in self.tasks:
            return None
        return (f"defined for {' and '.join(t for t in TASKS if t in self.tasks)} targets, not {task} "
                f"(those: {', '.join(list_estimators(task=task))})")

    def missing(self, available: set[str] | frozenset[str]) -> list[str]:
        """Inputs this estimator needs that are not in ``available``."""
        return sorted(self.needs - set(available))

    def __call__(self, labels: Any, inputs: Mapping[str, Any], task: str = "classification", **options: Any) -> float:
        """Score with the arrays in ``inputs`` (keys from INPUTS, plus ``source_labels``) for a
        ``task`` target (see TASKS); a task it has no form for raises ValueError saying so."""
        with _blas_beside_torch():
            return self.fn(**self._kwargs(labels, inputs, task), **options)

    def with_influence(self, labels: Any, inputs: Mapping[str, Any], task: str = "classification") -> tuple[float, Any]:
        """(score, per-sample influence or None) through ``influence``; see that field."""
        if self.influence is None:
            raise ValueError(f"estimator {self.name!r} has no influence function; resample it instead.")
        with _blas_beside_torch():
            return self.influence(**self._kwargs(labels, inputs, task))

    def _kwargs(self, labels, inputs, task: str = "classification") -> dict[str, Any]:
        why = self.unsupported(task)
        if why:
            raise ValueError(f"estimator {self.name!r} is {why}.")
        lacking = self.missing(set(k for k, v in inputs.items() if v is not None))
        if lacking:
            raise ValueError(f"estimator {self.name!r} needs {', '.join(lacking)}, which were not given.")
        kwargs: dict[str, Any] = {"labels": labels}
        for key in self.needs:
            kwargs[key] = inputs[key]
        if "source_features" in self.needs:
            kwargs["source_labels"] = inputs["source_labels"]
        if self.tasks != {"classification"}:
            kwargs["task"] = task
        return kwargs


@contextmanager
def _blas_beside_torch():
    """BLAS limited to one thread for the duration, when torch's intra-op pool has more than one."""
    import torch

    if torch.get_num_threads() <= 1:
        yield
        return
    from threadpoolctl import ThreadpoolController

    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield


_CONTROLLER = None
_REGISTRY: dict[str, Estimator] = {}
REGISTRY: Mapping[str, Estimator] = MappingProxyType(_REGISTRY)  # read-only view


def register(name: str, *, needs: tuple[str, ...], summary: str, influence: Callable[..., tuple[float, Any]] | None = None,
             tasks: tuple[str, ...] = ("classification",), version: int = 1):
    """Decorator: record ``fn`` under ``name`` with the inputs it needs, the target kinds it computes
    (an estimator with more than classification takes ``task=``), its definition's ``version`` and,
    optionally, its ``influence`` function (see :class:`Estimator`); returns ``fn`` unchanged."""
    unknown = set(needs) - set(INPUTS)
    if unknown:
        raise ValueError(f"register({name!r}): unknown needs {sorted(unknown)}; valid: {list(INPUTS)}.")
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"register({name!r}): tasks must be some of {list(TASKS)}; got {list(tasks)}.")

    def decorator(fn: Callable[..., float]) -> Callable[..., float]:
        if name in _REGISTRY:
            raise ValueError(f"estimator {name!r} is already registered (by {_REGISTRY[name].fn.__module__}).")
        _REGISTRY[name] = Estimator(name, fn, frozenset(needs), summary, influence, frozenset(tasks), version)
        return fn

    return decorator


def get_estimator(name: str) -> Estimator:
    """The estimator called ``name``; an unknown name raises ``ValueError`` listing valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name}*")
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown estimator {name!r}; valid estimators: {', '.join(sorted(_REGISTRY))}.{hint}"
        ) from None


def list_estimators(pattern: str = "*", *, task: str | None = None) -> list[str]:
    """Registered names matching an fnmatch ``pattern`` (and computing ``task`` targets), sorted."""
    return sorted(n for n in fnmatch.filter(_REGISTRY, pattern) if task is None or task in _REGISTRY[n].tasks)
