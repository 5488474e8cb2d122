"""Data and cache commands: ``export`` a dataset, ``cache info|clear|prune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from zooforge.cli.common import (
    DATA_HELP, EXIT_ERROR, SplitOpt, TaskOpt, app, console, fail,
)
from zooforge.errors import ZooforgeError


@app.command()
def export(
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    out: Annotated[Path, typer.Argument(help="where to write: a folder (disk, wds) or a .parquet file")],
    format: Annotated[str, typer.Option("--format", help="disk (save_to_disk), parquet or wds (tar shards)")] = "wds",
    split: SplitOpt = None,
    task: TaskOpt = None,
    shard_size: Annotated[int, typer.Option(help="samples per tar shard")] = 1000,
) -> None:
    """Write a dataset as a Hugging Face dataset or tar shards; print the DATA spec that reads it back."""
    from zooforge.zoo import load_dataset
    from zooforge.zoo.export import export as write

    try:
        ds = load_dataset(data, split, task=task)
        console.print(f"dataset {ds.summary()}", soft_wrap=True)
        spec = write(ds, out, format, shard_size=shard_size, split=split or "train")
    except (ZooforgeError, ValueError, OSError) as exc:
        fail(exc)
    console.print(f"wrote {len(ds)} samples; read them back as [bold]{spec}[/]", soft_wrap=True)


cache_app = typer.Typer(no_args_is_help=True, help="Inspect and trim the feature cache.")
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[Optional[Path], typer.Option(help="cache root (default $ZOOFORGE_CACHE_DIR or ~/.cache/zooforge)")]


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@cache_app.command("info")
def cache_info(cache_dir: CacheDir = None) -> None:
    """Where the cache is, how many entries, unfinished extractions and leftover temporaries, and their size."""
    from zooforge.zoo.cache import FeatureCache

    i = FeatureCache(cache_dir).info()
    console.print(f"{i['root']}: {i['entries']} entries ({_mb(i['entry_bytes'])}), {i['partial_extractions']} "
                  f"unfinished extraction(s) ({_mb(i['partial_bytes'])}), {i['temporaries']} leftover temporary "
                  f"file(s) ({_mb(i['temporary_bytes'])})", soft_wrap=True)


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDir = None,
                yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Remove every cached feature and unfinished extraction."""
    from zooforge.zoo.cache import FeatureCache

    cache = FeatureCache(cache_dir)
    if not yes and not typer.confirm(f"remove everything under {cache.root}?"):
        raise typer.Exit(code=EXIT_ERROR)
    cache.clear()
    console.print(f"cleared {cache.root}")


@cache_app.command("prune")
def cache_prune(
    cache_dir: CacheDir = None,
    older_than_days: Annotated[Optional[float], typer.Option(help="remove entries unused for this many days")] = None,
    max_gb: Annotated[Optional[float], typer.Option(help="then remove the least recently used down to this size")] = None,
    keep_partial: Annotated[bool, typer.Option(help="keep unfinished extractions (they resume)")] = False,
) -> None:
    """Remove leftover temporaries and unfinished extractions, and entries by age or total size."""
    from zooforge.zoo.cache import FeatureCache

    for name, value in (("--older-than-days", older_than_days), ("--max-gb", max_gb)):
        if value is not None and value < 0:
            fail(ZooforgeError(f"{name} must be >= 0; got {value}."))
    r = FeatureCache(cache_dir).prune(older_than_days=older_than_days, partial=not keep_partial,
                                      max_bytes=None if max_gb is None else int(max_gb * 2**30))
    console.print(f"removed {r['entries']} entries, {r['partial_extractions']} unfinished extraction(s) and "
                  f"{r['temporaries']} temporary file(s): {_mb(r['bytes'])}")
