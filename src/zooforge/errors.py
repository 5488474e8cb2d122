"""Exception types shared by every part of zooforge.

Every user-facing error is a ``ValueError`` subclass (as scikit-learn and PEFT do), so callers that
already catch ``ValueError`` keep working, and each message says what was expected, what was got and,
where known, how to fix it.
"""

import math
import numbers
import re

__all__ = [
    "ZooforgeError",
    "CatalogueError",
    "DatasetError",
    "BackboneLoadError",
    "CacheError",
    "finite_number",
    "first_line",
    "describe",
    "group_failures",
]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none): short enough for a table cell.
    An error re-raised from a DataLoader worker ("Caught X in DataLoader worker process 0. Original
    Traceback ...") gives the original's message, which names the file, instead of that wrapper line."""
    text = str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "Original Traceback" in text:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else ""


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, as tables and audit rows record a failure."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class ZooforgeError(ValueError):
    """Base class of zooforge's errors about user input or environment."""


class CatalogueError(ZooforgeError):
    """A catalogue file is missing, unparsable, or has an invalid entry."""


class DatasetError(ZooforgeError):
    """A dataset argument cannot be read or does not form a classification task."""


class BackboneLoadError(ZooforgeError):
    """A backbone cannot be built or its weights cannot be found."""


class CacheError(ZooforgeError):
    """A feature-cache entry is unusable (only raised where it cannot be recomputed)."""


def finite_number(value, name: str, *, above: float | None = None, at_least: float | None = None,
                  note: str = "", named: str | None = None) -> float:
    """``value`` as a float when it is a finite real number (and > ``above``, >= ``at_least``, where
    given); otherwise a ZooforgeError naming ``name`` (or saying ``named``, e.g. with the CLI option
    too), the range and ``note`` (what a value means).
    Written once because ``x <= 0`` is false for NaN and ``x >= 0`` true for inf: a setting checked
    that way let NaN and inf weights train to NaN and report an accuracy."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and (above is None or number > above) and (at_least is None or number >= at_least)):
        bound = f" > {above:g}" if above is not None else f" >= {at_least:g}" if at_least is not None else ""
        got = value if isinstance(value, numbers.Real) else repr(value)
        raise ZooforgeError(f"{named or f'`{name}`'} must be a finite number{bound}{f' ({note})' if note else ''}; "
                            f"got {got}.")
    return number


# What differs between two failures of one cause: the model's quoted names, commands and hub repository.
_PARTICULARS = re.compile(r"'[^']*'|`[^`]*`|\(timm [^)]*\)|\(hf [^)]*\)|hub repository \S+( at revision \S+)?")


def group_failures(failures: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(what, error)`` pairs grouped by cause: failures whose messages differ only in the model's
    quoted names, commands and hub repository are one group, given as its first message and every
    ``what`` in it, in the order first seen. A hub-wide audit that cannot fetch 200 models' weights
    then reads as one cause and 200 names, not 200 paragraphs."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for what, error in failures:
        groups.setdefault(_PARTICULARS.sub("…", error), (error, []))[1].append(what)
    return list(groups.values())
