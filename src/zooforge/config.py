"""The options of every command family in one place: a frozen, keyword-only dataclass per family
(:class:`RankConfig`, :class:`SelectConfig`, :class:`TuneConfig`, :class:`AggregateConfig`,
:class:`ComposeConfig`) and the :class:`Budget` they share.

Each field carries its help text (``setting``, from :mod:`zooforge.settings`); ``__post_init__``
refuses a bad value naming the field and the value. The API takes a config
(``rank(catalogue, data, RankConfig(...))``) or the same names as keywords
(``rank(catalogue, data, bootstrap=0)``: :func:`build_config`), and the CLI reads each
option's help and default from the class, so the command line and the Python API cannot drift
apart. Units are one per quantity everywhere: GMACs at the model's input size, parameters in
millions. Nothing here imports torch, so ``zooforge --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zooforge.errors import ZooforgeError, finite_number
from zooforge.settings import build_config, help_of, setting

__all__ = ["AggregateConfig", "Budget", "ComposeConfig", "RankConfig", "SCREEN_EVIDENCE_KINDS", "SelectConfig",
           "TUNING_METHODS", "TuneConfig", "build_config", "help_of", "number_or_auto", "setting"]

TUNING_METHODS = ("linear", "full", "bitfit", "adapter", "adaptformer", "lora", "ia3")
AGGREGATION_METHODS = ("btuning", "zootuning", "hubpathway", "ensemble")
COMPAT_KINDS = ("cka", "stitch")
# What DeRy's screen can compare per validation image (zooforge.reassembly.screen.per_image_evidence):
# name -> (what it is, as the CLI's screening table says it; that table's column header).
SCREEN_EVIDENCE_KINDS = {"brier": ("minus the Brier score", "val −Brier"), "correct": ("0/1 correctness", "val 0/1"),
                         "p_true": ("the true class's probability", "val p(true)"),
                         "loglik": ("the true class's log-probability", "val log p(true)")}
config = dataclass(frozen=True, kw_only=True)


def number_or_auto(value, name: str, zero: bool = False) -> float | str | None:
    """``value`` as a positive (``zero``: non-negative) number, ``"auto"`` or None; a numeric string
    (from the command line) becomes its number. Anything else is refused naming ``name``."""
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ZooforgeError(f"{_named(name)} must be a number or 'auto'; got {value!r}.") from None
    if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
        raise ZooforgeError(f"{_named(name)} must be {'>= 0' if zero else 'positive'}; got {value!r}.")
    return number


def _named(name: str, cli: bool = True) -> str:
    """A field as both spellings a user may have typed: the API's keyword and the CLI's option
    (``cli=False``: a field no command line takes, the keyword alone)."""
    return f"`{name}` (--{name.replace('_', '-')})" if cli else f"`{name}`"


def _training_share(cfg) -> None:
    """``split``, the share of the data tune and compose train on: ``--train-share`` on their command
    lines (``--split`` is rank's and select's name of a dataset split, another thing)."""
    if not 0 < cfg.split < 1:
        raise ZooforgeError(f"`split` (--train-share) must be between 0 and 1 (the share of the data trained "
                            f"on; the rest is the held-out test split); got {cfg.split}.")


def _at_least(cfg, **bounds) -> None:
    for name, least in bounds.items():
        value = getattr(cfg, name)
        if value is not None and value < least:
            raise ZooforgeError(f"{_named(name)} must be at least {least}; got {value}.")


def _positive(cfg, *names: str, flags: bool = True, none_means: str | None = "no limit") -> None:
    """Each field None or a finite number > 0; ``none_means``: what None stands for, said in the error."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            unset = f" (or None for {none_means})" if none_means else ""
            raise ZooforgeError(f"{_named(name, cli=flags)} must be a positive number{unset}; got {value!r}.")


# A parameter budget above this many millions (100 billion parameters) is taken for one given in
# parameters, the unit compose and solve took before they took millions like everything else.
PARAMS_M_CEILING = 1e5


def _budget(cfg) -> None:
    _positive(cfg, "budget_gmacs", "budget_params")
    if cfg.budget_params is not None and cfg.budget_params > PARAMS_M_CEILING:
        raise ZooforgeError(f"{_named('budget_params')} is in millions of parameters; {cfg.budget_params:g} M is "
                            f"{cfg.budget_params / 1e3:g} billion. Give millions (e.g. "
                            f"{cfg.budget_params / 1e6:g} for {cfg.budget_params:g} parameters), or None for no limit.")


def _one_of(cfg, name: str, choices) -> None:
    if getattr(cfg, name) not in choices:
        raise ZooforgeError(f"{_named(name)} must be one of {', '.join(map(repr, choices))}; "
                            f"got {getattr(cfg, name)!r}.")


def _tuple(cfg, *names: str) -> None:
    """Store list (or single-string) options as tuples, so a frozen config is hashable and safe to share."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, (list, str)):
            object.__setattr__(cfg, name, (value,) if isinstance(value, str) else tuple(value))


@dataclass(frozen=True)
class Budget:
    """A compute budget in the units of every entry point: GMACs at the model's input size (batch of
    one) and parameters in **millions**; ``None`` leaves that currency unlimited."""

    gmacs: float | None = None
    params_m: float | None = None

    def __post_init__(self):
        _positive(self, "gmacs", "params_m", flags=False)

    @property
    def max_params(self) -> int | None:
        """The parameter budget as a whole number of parameters (rounded down)."""
        return None if self.params_m is None else int(math.floor(self.params_m * 1e6 + 1e-6))

    def fits(self, gmacs: float, params: int) -> bool:
        """Whether ``gmacs`` GMACs and ``params`` parameters (a count, not millions) are within budget."""
        return ((self.gmacs is None or gmacs <= self.gmacs)
                and (self.max_params is None or params <= self.max_params))

    def __str__(self) -> str:
        parts = [f"{self.gmacs:g} GMACs" if self.gmacs is not None else "",
                 f"{self.params_m:g} M params" if self.params_m is not None else ""]
        return " and ".join(p for p in parts if p) or "no budget"


@config
class RankConfig:
    """What ``rank`` (and ``zooforge rank``) takes besides the catalogue and the data."""

    metrics: tuple[str, ...] | None = setting(None, "estimators (default: the benchmarked defaults for the target kind)")
    models: tuple[str, ...] | None = setting(None, "globs over catalogue ids (default: all)")
    ordering: Any = setting(None, "how estimators combine into the order: one estimator (logme), rank(a+b) (mean "
                                  "rank), z(a+b) (mean z-score) or stack(2*a+1*b) (weighted z-scores), each optionally "
                                  "after lead> (lead's first model first); default: the benchmarked default, else "
                                  "the mean rank over the estimators")
    budget_gmacs: float | None = setting(None, "mark the best model within this many GMACs")
    budget_params: float | None = setting(None, "... and this many million parameters")
    bootstrap: int = setting(100, "resampling rounds for the intervals and P(top-1) (0: none)")
    intervals: str = setting("fast", "fast: intervals for the estimators that need no re-scoring (LogME, LEEP, NCE, "
                                     "linear probe) and those that decide the ordering's first model; all: every estimator, re-scored on each "
                                     "resample (slow)")
    seed: int = setting(0, "seed of the subsampling and the resamples")
    split: str | None = setting(None, "dataset split (when reading a data spec)")
    max_per_class: int | None = setting(None, "subsample the dataset per class (when reading a data spec)")
    task: str | None = setting(None, "the target kind when reading a data spec: classification, regression or multilabel")
    batch_size: int = setting(128, "extraction batch size")
    cache_dir: Path | None = setting(None, "feature cache (default $ZOOFORGE_CACHE_DIR)")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    progress: bool = setting(True, "progress bars")

    def __post_init__(self):
        _tuple(self, "metrics", "models")
        _budget(self)
        _at_least(self, bootstrap=0, batch_size=1, max_per_class=1)
        _one_of(self, "intervals", ("fast", "all"))


@config
class SelectConfig:
    """What ``select`` (and ``zooforge select``) takes: the budget of short fine-tunes and the ranking
    it starts from."""

    fraction: float | None = setting(0.15, "budget as a share of fully fine-tuning every model (None: only `seconds`)")
    seconds: float | None = setting(None, "wall-clock budget for the fine-tunes")
    method: str = setting("full", "fine-tuning method of the trials (as in tune)")
    full_epochs: int = setting(10, "epochs of the full fine-tune the budget is a share of")
    lr: float | None = setting(None, "peak learning rate (default: the method's)")
    min_entrants: int = setting(2, "fewest models that enter the fine-tunes")
    max_entrants: int = setting(16, "most models that enter the fine-tunes")
    batch_size: int = setting(64, "batch size of the fine-tunes")
    seed: int = setting(0, "seed")
    metrics: tuple[str, ...] | None = setting(None, "estimators of the ranking (default: rank's)")
    models: tuple[str, ...] | None = setting(None, "globs over catalogue ids (default: all)")
    budget_gmacs: float | None = setting(None, "only models within this many GMACs")
    budget_params: float | None = setting(None, "... and this many million parameters")
    bootstrap: int = setting(100, "resampling rounds for the ranking's intervals")
    cache_dir: Path | None = setting(None, "feature cache (default $ZOOFORGE_CACHE_DIR)")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    progress: bool = setting(True, "progress bars")

    def __post_init__(self):
        _tuple(self, "metrics", "models")
        if self.fraction is None and self.seconds is None:
            raise ZooforgeError("give a budget: `fraction` (--budget) and/or `seconds` (--budget-seconds).")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ZooforgeError(f"`fraction` (--budget) must be in (0, 1]; got {self.fraction}.")
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and 0 < self.seconds < math.inf):
            raise ZooforgeError(f"`seconds` (--budget-seconds) must be a positive number (or None: a budget by "
                                f"`fraction` alone); got {self.seconds!r}.")
        _one_of(self, "method", TUNING_METHODS)
        _at_least(self, full_epochs=1, min_entrants=1, max_entrants=self.min_entrants, batch_size=1, bootstrap=0)
        _budget(self)
        if self.lr is not None and number_or_auto(self.lr, "lr") == "auto":
            raise ZooforgeError("`lr` (--lr) of select's trials is a number; 'auto' (a validated rate) is tune's.")


@config
class TuneConfig:
    """What ``tune`` (and ``zooforge tune``) takes besides the model and the data."""

    method: str = setting("linear", "|".join(TUNING_METHODS))
    lr: float | str | None = setting(None, "peak learning rate, or 'auto': chosen by validation (80/20 of the training "
                                           "split) from the method's grid; default: the method's own rate "
                                           "(linear/bitfit/adapters/ia3 1e-2, lora 3e-3, full 1e-3)")
    lr_grid: tuple[float, ...] | None = setting(None, "the rates 'auto' tries (default: the method's grid)")
    epochs: int = setting(10, "training epochs")
    batch_size: int = setting(64, "batch size")
    seed: int = setting(0, "seed for the split, the initialisation and the order")
    split: float = setting(0.8, "share of the data for training; the rest is the held-out test split")
    task: str | None = setting(None, "the target kind: classification, regression or multilabel (default: what the "
                                     "labels say)")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    rank: int | None = setting(None, "LoRA rank (default 8)")
    reduction: int | None = setting(None, "adapter bottleneck = width // reduction (default 8)")
    targets: tuple[str, ...] | None = setting(None, "LoRA/IA3 target modules (regex on full names); default: per "
                                                    "architecture")
    scale: float | None = setting(None, "AdaptFormer's scale s (default 0.1)")
    alpha: float | None = setting(None, "LoRA alpha (default 16)")
    dropout: float | None = setting(None, "LoRA dropout (default 0)")
    progress: bool = setting(True, "progress bars")

    def __post_init__(self):
        _tuple(self, "targets")
        _one_of(self, "method", TUNING_METHODS)
        object.__setattr__(self, "lr", number_or_auto(self.lr, "lr"))
        if self.lr_grid is not None:
            object.__setattr__(self, "lr_grid", tuple(number_or_auto(v, "lr_grid") for v in self.lr_grid))
        _at_least(self, epochs=1, batch_size=1, rank=1, reduction=1)
        _training_share(self)
        _positive(self, "alpha", "scale", none_means=None)
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ZooforgeError(f"{_named('dropout')} is a probability: at least 0 and below 1; got {self.dropout!r}.")

    def method_options(self) -> dict:
        """The method's own options that were set (the rest keep the method's defaults)."""
        options = {k: getattr(self, k) for k in ("rank", "reduction", "scale", "alpha", "dropout")}
        return {k: v for k, v in options.items() if v is not None} | ({"targets": list(self.targets)}
                                                                     if self.targets else {})


@config
class AggregateConfig:
    """What ``aggregate`` (and ``zooforge aggregate``) takes besides the catalogue and the data."""

    method: str = setting("btuning", "|".join(AGGREGATION_METHODS))
    top_k: int = setting(3, "models taken from the top of the ranking (Hub-Pathway: the candidates it routes "
                            "among, two per input)")
    ordering: str | None = setting(None, "what ranks the zoo: an ordering as rank's --order takes it (logme: "
                                         "the papers'); default: the ordering rank recommends")
    models: tuple[str, ...] | None = setting(None, "explicit members (globs) instead of the ranking's top")
    epochs: int = setting(10, "training epochs")
    lr: float = setting(1e-3, "peak learning rate")
    batch_size: int = setting(64, "batch size")
    seed: int = setting(0, "seed")
    strength: float | str | None = setting(None, "B-Tuning: weight of the Bayesian regulariser (the reference's is "
                                                 "100), or 'auto' (the default) to choose it by validation")
    temperature: float | None = setting(None, "B-Tuning: softmax temperature on LogME (reference 0.1)")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    progress: bool = setting(False, "progress bars")

    def __post_init__(self):
        _tuple(self, "models")
        _one_of(self, "method", AGGREGATION_METHODS)
        object.__setattr__(self, "strength", number_or_auto(self.strength, "strength", zero=True))
        if self.temperature is not None:
            number_or_auto(self.temperature, "temperature")
        only = [n for n in ("strength", "temperature") if getattr(self, n) is not None]
        if only and self.method != "btuning":
            raise ZooforgeError(f"{' and '.join(map(_named, only))} only apply to --method btuning (`method` "
                                f"'btuning'); got {self.method!r}.")
        _at_least(self, top_k=1, epochs=1, batch_size=1)
        _positive(self, "lr", none_means=None)


@config
class ComposeConfig:
    """Everything ``compose`` (and ``zooforge compose``) takes besides the catalogue and the data."""

    budget_gmacs: float | None = setting(None, "GMACs budget at the input size")
    budget_params: float | None = setting(None, "parameter budget, in millions")
    stages: int = setting(4, "stages K of the assembly")
    models: tuple[str, ...] | None = setting(None, "globs over catalogue ids to compose from (default: all)")
    epochs: int = setting(10, "epochs of end-to-end training")
    stitch_epochs: int = setting(0, "epochs training only stitches and head first")
    lr: float = setting(1e-3, "peak learning rate")
    batch_size: int = setting(64, "batch size")
    split: float = setting(0.8, "share of the data for training; the rest is the held-out test split")
    seed: int = setting(0, "seed")
    top_k: int = setting(3, "distinct assemblies to list")
    screen: int = setting(4, "assemblies trained on 80% of the training split to pick the best (<= 1: trust "
                             "the solver)")
    screen_epochs: int | None = setting(None, "epochs of each screening run [default: --epochs]")
    screen_folds: int = setting(1, "validate the screen by k-fold cross-validation (k trainings per assembly, "
                                   "every training image validates once); 1: one 80/20 split")
    screen_evidence: str = setting("brier", "what the screen's test compares per validation image: " + ", ".join(
        f"{name} ({said})" for name, (said, _) in SCREEN_EVIDENCE_KINDS.items()))
    screen_level: float = setting(0.5, "level of the screen's one-sided test, Bonferroni-corrected over the mixes "
                                       "(smaller: keep the single model more often)")
    max_blocks: int | None = setting(8, "most blocks a model is cut into")
    probe: int = setting(1024, "probe images the blocks are scored and compared on")
    compat_weight: float = setting(1.0, "weight of a transition's compatibility, in standard deviations of the "
                                        "stage scores")
    compat: str = setting("cka", "transition score: cka (CKA of the cut points) or stitch (R² of the least-squares "
                                 "stitch)")
    baseline: bool = setting(True, "also fine-tune the best single model within budget")
    ordering: str | None = setting(None, "what names the best single model within budget (the baseline, and the "
                                         "screen's single model): an ordering as rank's --order takes it (logme: "
                                         "the papers'); default: the ordering rank recommends")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    progress: bool = setting(False, "progress bars while training")

    def __post_init__(self):
        if self.budget_gmacs is None and self.budget_params is None:
            raise ZooforgeError("compose needs a budget: give `budget_gmacs` (--budget-gmacs) and/or `budget_params` "
                                "(--budget-params, millions).")
        _budget(self)
        _tuple(self, "models")
        _at_least(self, stages=1, epochs=1, stitch_epochs=0, batch_size=1, probe=2, top_k=1, screen_epochs=1,
                  screen_folds=1)
        _training_share(self)
        _positive(self, "lr", none_means=None)
        finite_number(self.compat_weight, "compat_weight", at_least=0, note="0: ignore the transitions",
                      named=_named("compat_weight"))
        _one_of(self, "compat", COMPAT_KINDS)
        _one_of(self, "screen_evidence", SCREEN_EVIDENCE_KINDS)
        if not (isinstance(self.screen_level, (int, float)) and 0 < self.screen_level <= 0.5):
            raise ZooforgeError(f"{_named('screen_level')} must be in (0, 0.5] (above 0.5 a mix that validates worse "
                                f"than the single model could be kept); got {self.screen_level!r}.")

    @property
    def budget(self) -> Budget:
        return Budget(self.budget_gmacs, self.budget_params)
