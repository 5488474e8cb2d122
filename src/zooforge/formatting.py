"""Formatting of table cells, shared by the terminal tables and the reports (no heavy imports:
the CLI loads it at start-up)."""

from __future__ import annotations

__all__ = ["format_value"]


def format_value(value, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits, a dash for missing/NaN, yes/blank for flags
    (shared by the reports and the terminal tables)."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
