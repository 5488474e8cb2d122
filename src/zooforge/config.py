"""What every command family's config dataclass shares: help text kept beside the field, and one way
to build a config from keyword overrides that names an unknown option instead of a bare TypeError.

A config is a frozen dataclass whose fields carry ``metadata={"help": ...}``; its ``__post_init__``
refuses a bad value naming the field and the value. The CLI reads the help and the defaults from the
class (``help_of``, ``Config.field``), so the command line and the Python API cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Budget", "ComposeConfig", "build_config", "help_of", "setting"]

C = TypeVar("C")


def setting(default: Any, help: str, **kwargs) -> Any:
    """A config field with its help text (``dataclasses.field`` with ``metadata["help"]``)."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def help_of(cls: type, name: str) -> str:
    """The help text of config field ``name`` of ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def build_config(cls: type[C], config: C | None, overrides: dict[str, Any], where: str) -> C:
    """``config`` (or the defaults) with ``overrides`` applied; an option ``cls`` does not have is
    refused naming it and the options there are."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise TypeError(f"{where}() got unknown option(s) {', '.join(map(repr, unknown))}; "
                        f"{cls.__name__} has {', '.join(names)}.")
    if config is None:
        return cls(**overrides)
    if not isinstance(config, cls):
        raise TypeError(f"{where}(): `config` must be a {cls.__name__}; got {type(config).__name__}.")
    return dataclasses.replace(config, **overrides) if overrides else config


@dataclass(frozen=True)
class Budget:
    """A compute budget in the units of every entry point: GMACs at the model's input size (batch of
    one) and parameters in **millions**; ``None`` leaves that currency unlimited."""

    gmacs: float | None = None
    params_m: float | None = None

    def __post_init__(self):
        for name in ("gmacs", "params_m"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"budget `{name}` must be a positive number (or None for no limit); got {value!r}.")

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


COMPAT_KINDS = ("cka", "stitch")


@dataclass(frozen=True)
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
    max_blocks: int | None = setting(8, "most blocks a model is cut into")
    probe: int = setting(1024, "probe images the blocks are scored and compared on")
    compat_weight: float = setting(1.0, "weight of a transition's compatibility, in standard deviations of the "
                                        "stage scores")
    compat: str = setting("cka", "transition score: cka (CKA of the cut points) or stitch (R² of the least-squares "
                                 "stitch)")
    baseline: bool = setting(True, "also fine-tune the best single model within budget")
    device: str | None = setting(None, "cuda, mps or cpu (default: best available)")
    progress: bool = setting(False, "progress bars while training")

    def __post_init__(self):
        if self.budget_gmacs is None and self.budget_params is None:
            raise ValueError("compose needs a budget: give `budget_gmacs` (--budget-gmacs) and/or `budget_params` "
                             "(--budget-params, millions).")
        Budget(self.budget_gmacs, self.budget_params)          # refuses a non-positive budget, naming it
        for name, least in (("stages", 1), ("epochs", 1), ("stitch_epochs", 0), ("batch_size", 1), ("probe", 2),
                            ("top_k", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"`{name}` must be at least {least}; got {getattr(self, name)}.")
        if self.screen_epochs is not None and self.screen_epochs < 1:
            raise ValueError(f"`screen_epochs` must be at least 1; got {self.screen_epochs}.")
        if not 0 < self.split < 1:
            raise ValueError(f"`split` must be between 0 and 1; got {self.split}.")
        if self.compat not in COMPAT_KINDS:
            raise ValueError(f"`compat` must be 'stitch' or 'cka'; got {self.compat!r}.")
        if isinstance(self.models, (list, str)):
            object.__setattr__(self, "models", (self.models,) if isinstance(self.models, str) else tuple(self.models))

    @property
    def budget(self) -> Budget:
        return Budget(self.budget_gmacs, self.budget_params)
