"""What a ``select`` run keeps in its output folder, and the keys that say when a rerun may reuse it
(:mod:`zooforge.selection.select`'s docstring): the ranking with a key of what it depends on, each
trial's ledger key, and the chosen model's weights with the trial they come from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from zooforge.config import SelectConfig
from zooforge.errors import ZooforgeError

__all__ = ["VALIDATION_SPLIT", "ranking_key", "stored_ranking", "saved_choice", "trial_key", "write_keyed"]

VALIDATION_SPLIT = 0.8          # share of the data the trials train on; the rest validates


def write_keyed(key_file: Path, record: dict, write: Callable[[], object]) -> None:
    """``write()`` an artefact, then ``key_file`` (``record``, with its ``key``) that says what it is.
    The old key file goes first, so a kill never leaves a matching key beside a half-written artefact."""
    from zooforge.zoo.cache import atomic_write_bytes

    key_file.unlink(missing_ok=True)
    write()
    atomic_write_bytes(key_file, json.dumps(record).encode())


def _stored_key(key_file: Path) -> str | None:
    """The key a finished :func:`write_keyed` left; None when there is none or a kill cut it."""
    try:
        return json.loads(key_file.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def ranking_key(entries, ds, cfg: SelectConfig) -> str:
    """What the ranking depends on: a stored ranking with another key is computed again."""
    from zooforge import __version__
    from zooforge.metrics import REGISTRY
    from zooforge.selection.ordering import DEFAULT_ORDERING
    from zooforge.zoo.catalogue import entry_digest

    parts = {"entries": sorted(entry_digest(e) for e in entries), "data": ds.fingerprint,
             "metrics": list(cfg.metrics) if cfg.metrics else None, "bootstrap": cfg.bootstrap, "seed": cfg.seed,
             "budget_gmacs": cfg.budget_gmacs, "budget_params": cfg.budget_params,
             "ordering": DEFAULT_ORDERING.name, "versions": {n: e.version for n, e in sorted(REGISTRY.items())},
             "zooforge": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def stored_ranking(entries, ds, cfg: SelectConfig, out: Path | None, say):
    """``rank``'s table, or the one an earlier run of the same key wrote to ``out``."""
    import polars as pl

    from zooforge.selection.rank import rank, write_table

    key = ranking_key(entries, ds, cfg) if out is not None else None
    if out is not None and (out / "ranking.parquet").is_file() and _stored_key(out / "ranking.json") == key:
        try:
            table = pl.read_parquet(out / "ranking.parquet")
        except Exception:                         # unreadable: rank again (and rewrite it)
            table = None
        if table is not None:
            say(f"reusing the ranking in {out / 'ranking.parquet'} (same models, data and estimators)")
            return table
    table = rank(entries, ds, cfg.metrics, bootstrap=cfg.bootstrap, seed=cfg.seed, cache_dir=cfg.cache_dir,
                 device=cfg.device, budget_gmacs=cfg.budget_gmacs, budget_params=cfg.budget_params,
                 progress=cfg.progress)
    if out is not None:
        write_keyed(out / "ranking.json", {"key": key}, lambda: write_table(table, out / "ranking.parquet"))
    return table


def saved_choice(out: Path, entry, key: str):
    """The chosen model's fine-tuned weights an earlier run saved in ``out``, if they are the trial
    ``key`` (``chosen.json``, written after them by :func:`write_keyed`); None when there are none,
    they are another trial's, or a kill cut them."""
    from zooforge.tuning.methods import load_adapters
    from zooforge.zoo.backbone import Backbone

    if _stored_key(out / "chosen.json") != key:
        return None
    try:
        return load_adapters(Backbone.from_entry(entry), out)
    except (OSError, ValueError, ZooforgeError):
        return None


def trial_key(entry, ds, cfg: SelectConfig, epochs: int, lr: float) -> str:
    """A trial's ledger key: everything that determines its result."""
    from zooforge.zoo.catalogue import entry_digest

    parts = {"entry": entry_digest(entry), "data": ds.fingerprint, "method": cfg.method, "epochs": epochs,
             "lr": lr, "seed": cfg.seed, "split": VALIDATION_SPLIT, "batch_size": cfg.batch_size}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
