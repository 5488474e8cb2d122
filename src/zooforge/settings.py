"""How a config field is declared (:func:`setting`, with its help text), read (:func:`help_of`) and a
config built from keyword overrides (:func:`build_config`): the machinery under :mod:`zooforge.config`,
which re-exports all three."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["build_config", "help_of", "setting"]

C = TypeVar("C")


def setting(default: Any, help: str) -> Any:
    """A config field with its help text (``dataclasses.field`` with ``metadata["help"]``)."""
    return dataclasses.field(default=default, metadata={"help": help})


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
