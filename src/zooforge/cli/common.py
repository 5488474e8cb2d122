"""What every command shares: the typer app and its console, option spellings and help texts,
exit codes, the thread count, and the checks that run before any work (device, output paths) and
the save that never loses a computed table."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from zooforge.config import RankConfig, help_of
from zooforge.errors import ZooforgeError

app = typer.Typer(no_args_is_help=True,
                  help="Rank, reassemble and tune models from a zoo of pretrained backbones.")
console = Console()


def _version(value: bool) -> None:
    if value:
        from zooforge import __version__

        print(f"zooforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Rank, reassemble and tune models from a zoo of pretrained backbones."""

def option(config: type, name: str, *decls: str, **kwargs) -> typer.models.OptionInfo:
    """A typer option whose help is the config field's own (``zooforge.config``): one text for the
    command line and the Python API."""
    return typer.Option(*decls, help=help_of(config, name), **kwargs)


# Options shared by several commands: one spelling and one help text each.
OrderOpt = Annotated[Optional[str], option(RankConfig, "ordering", "--order")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cuda, mps or cpu (default: best available)")]


EXIT_ERROR = 1          # nothing (more) was computed: bad input, missing file, unavailable device
EXIT_FAILURES = 3       # the command ran, but some models or cells failed (see the module docstring)
AllowFailures = Annotated[bool, typer.Option(
    "--allow-failures", help=f"exit 0 even when some models/cells failed (default: exit {EXIT_FAILURES})")]
SplitOpt = Annotated[Optional[str], typer.Option(
    help="dataset split: a folder <root>/<split>/<class>, a CSV `split` value, or train/val/test "
         "(default: train where the data has splits)")]
DATA_HELP = "folder, .csv, .npz, hf:<dataset>, wds:<shards>, sklearn:digits or demo:<task>"
TaskOpt = Annotated[Optional[str], typer.Option(
    help="the target kind: classification, regression or multilabel (default: what the labels say; "
         "folders and demo class tasks are classes)")]
SkipBadFiles = Annotated[bool, typer.Option(
    "--skip-bad-files", help="leave out image files that cannot be decoded (listed) instead of stopping")]
TABLE_SUFFIXES = (".csv", ".json", ".parquet")


Threads = Annotated[Optional[int], typer.Option(
    help="torch threads (default: $OMP_NUM_THREADS, else one per core that other work leaves free)", min=1)]


def print_dataset(ds, bootstrap: int) -> None:
    """The dataset's summary line and, where resampling it cannot vary every class (one-shot data),
    what the intervals and P(top-1) leave out (``interval_note``), in yellow: the library's
    IntervalWarning says the same, so a command wraps its ranking in :func:`interval_warning_said`."""
    from zooforge.selection.intervals import interval_note

    console.print(f"dataset {ds.summary()}", soft_wrap=True)
    note = interval_note(ds.strata(), ds.task) if bootstrap else None
    if note:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)


@contextmanager
def interval_warning_said():
    """Hide the IntervalWarning that :func:`print_dataset` has already said in the command's words."""
    from zooforge.selection.intervals import IntervalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntervalWarning)
        yield


def set_threads(threads: int | None = None) -> None:
    """--threads, then OMP_NUM_THREADS where set (Ray workers, shared servers): the user's word; else
    one thread per core that other work leaves free (:func:`zooforge.zoo.cores.default_threads`)."""
    import torch

    from zooforge.zoo.cores import default_threads

    asked = os.environ.get("OMP_NUM_THREADS", "")
    if threads is None:
        threads = int(asked) if asked.isdigit() and int(asked) > 0 else default_threads()
    torch.set_num_threads(threads)


def print_failures(failures: list[tuple[str, str]]) -> None:
    """Each cause of failure once: its first message, then the other things that failed alike, and
    the hub downloads that would fetch the missing weights (one command a line, ready to paste)."""
    import re

    from zooforge.errors import group_failures

    for error, whats in group_failures(failures):
        console.print(f"[red]{whats[0]} failed:[/] {error}", soft_wrap=True)
        if len(whats) > 1:
            console.print(f"[red]{len(whats) - 1} more failed alike:[/] {', '.join(whats[1:])}", soft_wrap=True)
    fetch = dict.fromkeys(m for _, e in failures for m in re.findall(r"`(hf download [^`]+)`", e))
    if len(fetch) > 1:
        console.print("[dim]the missing weights, fetched on a connected machine (then copy its HF_HOME here):[/]")
        console.print("\n".join(fetch), soft_wrap=True, highlight=False, markup=False)


def fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)   # unbroken paths stay copyable
    raise typer.Exit(code=EXIT_ERROR)


def check_device(device: str | None) -> None:
    """Refuse a device this machine lacks before any work, with what to use instead."""
    if device is None:
        return
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, but no GPU is visible"
        raise ZooforgeError(f"--device {device}: this torch {torch.__version__} is built {built}; "
                            f"use --device cpu, or leave --device out to take the best available.")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ZooforgeError(f"--device {device}: Apple's MPS is not available here; use --device cpu.")
    if kind not in ("cuda", "mps", "cpu"):
        raise ZooforgeError(f"--device {device}: unknown device; use cuda, cuda:N, mps or cpu.")


def check_output(path: Path | None, suffixes: tuple[str, ...], option: str) -> None:
    """Refuse an output path that cannot be written before the work, not after it."""
    if path is None:
        return
    if str(path) == "-":
        raise ZooforgeError(f"{option} -: writing to standard output is not supported; give a file name "
                            f"ending in {', '.join(suffixes)}.")
    if path.suffix.lower() not in suffixes:
        raise ZooforgeError(f"{option} {path}: unsupported file type {path.suffix or '(none)'!r}; "
                            f"use {', '.join(suffixes)}.")
    folder = path.parent if path.parent != Path("") else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    import tempfile

    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing):      # a real probe: permissions, read-only mounts, /proc
            pass
    except OSError as exc:
        raise ZooforgeError(f"{option} {path}: cannot write in {existing} ({exc}); choose another folder.") from None


def save_table(table, out: Path) -> None:
    """Write the table; if that fails after the work, write it beside (or in the current folder,
    or the temporary folder) instead and say where: a computed table is never lost."""
    import tempfile
    import time

    from zooforge.selection.rank import write_table

    try:
        console.print(f"wrote {write_table(table, out)}")
        return
    except (OSError, ZooforgeError) as exc:
        problem = exc
    name = f"{out.stem or 'ranking'}-{time.strftime('%Y%m%d-%H%M%S')}.parquet"
    for folder in (out.parent, Path.cwd(), Path(tempfile.gettempdir())):
        try:
            saved = write_table(table, folder / name)
        except (OSError, ZooforgeError):
            continue
        console.print(f"[red]could not write {out}[/] ({problem}); [bold]the table was saved to {saved}[/]",
                      soft_wrap=True)
        raise typer.Exit(code=EXIT_ERROR)
    console.print(f"[red]could not write {out} ({problem}) nor a copy anywhere[/]", soft_wrap=True)
    raise typer.Exit(code=EXIT_ERROR)
