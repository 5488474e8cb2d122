"""The ``zooforge`` command line: one typer app; each command parses, makes one API call, prints.

Exit codes: 0 when everything asked for was computed; 1 for an error (bad input, a missing file, an
unavailable device: nothing was computed, or what was is saved and named); 3 when the command ran
but some models or audit cells failed (their errors are printed and recorded in the table; pass
``--allow-failures`` to exit 0 all the same); 130 on Ctrl-C.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from zooforge.config import ComposeConfig, help_of
from zooforge.errors import ZooforgeError, first_line
from zooforge.formatting import format_value

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

def _option(config: type, name: str, *decls: str, **kwargs) -> typer.models.OptionInfo:
    """A typer option whose help is the config field's own (``zooforge.config``): one text for the
    command line and the Python API."""
    return typer.Option(*decls, help=help_of(config, name), **kwargs)


# Options shared by several commands: one spelling and one help text each.
ModelGlobs = Annotated[Optional[list[str]], typer.Option("--model", help="glob over catalogue ids (repeatable)")]
OrderOpt = Annotated[Optional[str], typer.Option(
    "--order", help="how estimators combine into the order: one estimator (logme), rank(a+b) (mean rank) or "
                    "z(a+b) (mean z-score); default: the benchmarked default, else the mean rank over -m")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cuda, mps or cpu (default: best available)")]
Epochs = Annotated[int, typer.Option(help="training epochs")]
PeakLr = Annotated[float, typer.Option(help="peak learning rate")]
BatchSize = Annotated[int, typer.Option(help="batch size")]
Seed = Annotated[int, typer.Option(help="seed")]


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
    help="torch threads (default: $OMP_NUM_THREADS, else one per available core)", min=1)]


def _threads(threads: int | None = None) -> None:
    import torch

    from zooforge.zoo.data import available_cores

    # One intra-op thread per core; more oversubscribes and makes CPU torch several times slower.
    # --threads, then OMP_NUM_THREADS where set (Ray workers, shared servers), is the user's word.
    cores = available_cores()
    asked = os.environ.get("OMP_NUM_THREADS", "")
    if threads is None:
        threads = int(asked) if asked.isdigit() and int(asked) > 0 else max(1, cores)
    torch.set_num_threads(threads)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)   # unbroken paths stay copyable
    raise typer.Exit(code=EXIT_ERROR)


def _check_device(device: str | None) -> None:
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


def _check_output(path: Path | None, suffixes: tuple[str, ...], option: str) -> None:
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


def _save_table(table, out: Path) -> None:
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


def print_ranking(table, metrics, title: str, wide: bool = False) -> None:
    """The ranking as a terminal table. Compact by default (fits 80 columns, as in a log): rank,
    model, the first estimator's score with its interval, P(top-1), mean rank, GMACs; ``wide``
    adds params and every estimator. ``*`` marks the recommended model within the budget."""
    from rich import box

    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    first = metrics[0] if metrics else None
    shown = metrics if wide else metrics[:1]
    columns = ["#", "model", *(["params M"] if wide else []), "GMACs", *shown,
               *([f"{first} 90%" if wide else "90% interval"] if first else []), "P(top1)", "mean"]
    for col in columns:
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True,
                     overflow="ellipsis" if col == "model" else "ignore", min_width=12 if col == "model" else None)
    digits = 4 if wide else 3
    for row in table.iter_rows(named=True):
        cells = [str(row["rank"]), row["model"] + (" *" if row.get("best_within_budget") else "")]
        cells += [format_value(row["params_m"], 3)] if wide else []
        cells.append(format_value(row["gmacs"], 2))
        cells += [format_value(row[m], digits) for m in shown]
        if first:
            lo, hi = row.get(f"{first}_lo"), row.get(f"{first}_hi")
            cells.append(f"{format_value(lo, 3)} {format_value(hi, 3)}" if lo is not None else "–")
        cells.append(format_value(row.get("p_top1", row.get(f"{first}_p_top1")), 2))
        cells.append(format_value(row["mean_rank"], 3))
        t.add_row(*cells)
    console.print(t)
    ordering = table["ordering"][0] if "ordering" in table.columns and table.height else None
    if ordering:
        console.print(f"[dim]ordered by {ordering}{' (the default, chosen leave-one-zoo-out on fine-tune truth)' if ordering == _default_ordering() else ''}; "
                      f"P(top1): first under that ordering; interval of {first}; mean: mean rank over "
                      f"{len(metrics)} estimator(s){'; --wide shows each' if not wide and len(metrics) > 1 else ''}[/]",
                      soft_wrap=True)
    for row in table.iter_rows(named=True):
        if row["error"]:
            console.print(f"[red]{row['model']} failed:[/] {row['error']}", soft_wrap=True)
        elif row["skipped"]:
            console.print(f"[yellow]{row['model']} skipped[/] {row['skipped']}", soft_wrap=True)
    if any("classifier head" in (row["skipped"] or "") and (row.get("missing_scores") or 0) > 0
           for row in table.iter_rows(named=True)):
        console.print("[dim]models missing a score of the ordering rank below those that have it: to compare models "
                      "without a classifier head on equal terms, rank with feature estimators only "
                      "(e.g. -m logme -m hscore_shrink -m gbc)[/]", soft_wrap=True)


def _default_ordering() -> str:
    from zooforge.selection.ordering import DEFAULT_ORDERING

    return DEFAULT_ORDERING.name


@app.command()
def models(catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")]) -> None:
    """List and validate a catalogue, with parameter and GMAC columns."""
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    _threads()
    try:
        entries = load_catalogue(catalogue)
    except ZooforgeError as exc:
        _fail(exc)
    t = Table(title=f"{len(entries)} model(s) in {catalogue}", header_style="bold")
    for col in ("id", "source", "name", "head", "params (M)", "GMACs", "input"):
        t.add_column(col, no_wrap=col == "id")
    failures = 0
    for e in entries:
        try:
            b = Backbone.from_entry(e)
            size = "x".join(map(str, b.transform.input_size)) if b.transform else b.modality
            t.add_row(e.id, e.source, e.name, str(b.num_source_classes or "-"), f"{b.num_params / 1e6:.3f}",
                      f"{b.gmacs:.4f}", size)
        except ZooforgeError as exc:
            failures += 1
            t.add_row(e.id, e.source, e.name, "-", "-", "-", f"[red]{first_line(exc)}[/]")
    console.print(t)
    if failures:
        raise typer.Exit(code=1)


@app.command()
def rank(
    ctx: typer.Context,
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="estimator (repeatable)")] = None,
    model: ModelGlobs = None,
    out: Annotated[Optional[Path], typer.Option(help="write the table: .csv, .json or .parquet")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="draw score vs GMACs with the Pareto front (.png/.svg/.pdf)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write a report with table, plot and provenance (.html/.md)")] = None,
    budget_gmacs: Annotated[Optional[float], typer.Option(help="mark the best model within this many GMACs")] = None,
    budget_params: Annotated[Optional[float], typer.Option(help="... and this many million parameters")] = None,
    max_per_class: Annotated[Optional[int], typer.Option(help="subsample the dataset per class")] = None,
    split: SplitOpt = None,
    task: TaskOpt = None,
    seed: Annotated[int, typer.Option(help="seed of the subsampling and the resamples")] = 0,
    bootstrap: Annotated[int, typer.Option(help="bootstrap rounds for the intervals (0: none)")] = 100,
    order: OrderOpt = None,
    intervals: Annotated[str, typer.Option(
        help="fast: intervals for the estimators that need no re-scoring (LogME, LEEP, NCE, linear probe) and "
             "the ordering's; all: every estimator, re-scored on each resample (slow)")] = "fast",
    batch_size: Annotated[int, typer.Option(help="extraction batch size")] = 128,
    cache_dir: Annotated[Optional[Path], typer.Option(help="feature cache (default $ZOOFORGE_CACHE_DIR)")] = None,
    device: DeviceOpt = None,
    skip_bad_files: SkipBadFiles = False,
    allow_failures: AllowFailures = False,
    wide: Annotated[bool, typer.Option("--wide", help="show params and every estimator's score")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="the table as JSON on stdout (messages go to stderr)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    threads: Threads = None,
) -> None:
    """Rank a catalogue of backbones for a dataset without fine-tuning them."""
    from zooforge.selection.rank import DEFAULT_METRICS, default_metrics, rank as rank_models
    from zooforge.zoo import load_dataset

    global console
    if json_out:
        saved = console
        console = Console(stderr=True)          # stdout carries only the JSON

        def restore() -> None:
            global console
            console = saved

        ctx.call_on_close(restore)
    _threads(threads)
    metrics = metric or list(DEFAULT_METRICS)
    try:
        _check_device(device)
        _check_output(out, TABLE_SUFFIXES, "--out")
        _check_output(plot, (".png", ".svg", ".pdf"), "--plot")
        _check_output(report, (".html", ".md"), "--report")
        ds = load_dataset(data, split, max_per_class=max_per_class, seed=seed, skip_bad_files=skip_bad_files,
                          task=task)
        console.print(f"dataset {ds.summary()}", soft_wrap=True)
        if not metric and ds.task != "classification":
            metrics = default_metrics(ds.task)
            console.print(f"[dim]a {ds.task} target: scored by {', '.join(metrics)}; "
                          f"{', '.join(m for m in DEFAULT_METRICS if m not in metrics)} are defined for classes "
                          f"only[/]", soft_wrap=True)
        table = rank_models(catalogue, ds, metrics, models=model, bootstrap=bootstrap, seed=seed,
                            batch_size=batch_size, cache_dir=cache_dir, device=device,
                            budget_gmacs=budget_gmacs, budget_params=budget_params, progress=not quiet and not json_out,
                            ordering=order, intervals=intervals)
    except ValueError as exc:          # ZooforgeError is one
        _fail(exc)
    if json_out:
        import sys

        sys.stdout.write(table.write_json() + "\n")
    else:
        print_ranking(table, metrics, f"{catalogue} on {data}", wide=wide)
    if (budget_gmacs is not None or budget_params is not None) and not table["within_budget"].any():
        console.print("[yellow]No model fits the budget[/] "
                      f"(smallest: {table['gmacs'].min():.4g} GMACs, {table['params_m'].min():.4g} M params).")
    if out:
        _save_table(table, out)
    if plot:
        from zooforge.selection.plot import plot_ranking

        try:
            console.print(f"wrote {plot_ranking(table, plot, metrics[0], budget_gmacs, f'{catalogue} on {data}')}")
        except ZooforgeError as exc:
            _fail(exc)
    if report:
        from zooforge.selection.report import ranking_report

        settings = {"catalogue": catalogue, "dataset": data, "metrics": metrics, "bootstrap": bootstrap,
                    "max_per_class": max_per_class, "budget_gmacs": budget_gmacs, "budget_params": budget_params,
                    "skipped_files": ds.meta.get("skipped_files", [])}
        try:
            console.print(f"wrote {ranking_report(table, report, title=f'{catalogue} on {data}', settings=settings, budget_gmacs=budget_gmacs)}")
        except ZooforgeError as exc:
            _fail(exc)
    failed = table.filter(table["error"].is_not_null()).height
    if failed and not allow_failures:
        console.print(f"[red]{failed} of {table.height} model(s) failed[/] (errors above); exit {EXIT_FAILURES}. "
                      "Pass --allow-failures to exit 0 all the same.")
        raise typer.Exit(code=EXIT_FAILURES)


@app.command()
def evaluate(
    ranking: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ranking table (.csv/.json/.parquet)")],
    truth: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV/JSON with model, accuracy")],
    out: Annotated[Optional[Path], typer.Option(help="write the table: .csv, .json or .parquet")] = None,
) -> None:
    """Kendall tau, weighted tau, Pearson r, top-1 regret and top-3 hit of each estimator vs truth."""
    from zooforge.selection.evaluate import evaluate as evaluate_ranking
    from zooforge.selection.rank import read_table

    try:
        if ranking.suffix not in TABLE_SUFFIXES or truth.suffix not in (".csv", ".json"):
            raise ZooforgeError("ranking must be .csv/.json/.parquet and truth .csv/.json.")
        _check_output(out, TABLE_SUFFIXES, "--out")
        result = evaluate_ranking(read_table(ranking, "ranking"), read_table(truth, "truth"))
    except ValueError as exc:
        _fail(exc)
    t = Table(title="estimators vs fine-tuned accuracy", header_style="bold")
    for col in result.columns:
        t.add_column(col, justify="left" if col == "metric" else "right")
    for row in result.iter_rows():
        t.add_row(*[format_value(v, 3) for v in row])
    console.print(t)
    if out:
        _save_table(result, out)


@app.command()
def audit(
    plan: Annotated[Path, typer.Argument(help="audit plan (TOML): catalogues, models, datasets, metrics, out")],
    backend: Annotated[str, typer.Option(help="local (this process) or ray (one task per cell)")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local Ray)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray instance (default: all)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="audit folder (overrides the plan's `out`)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write a report when done (.html/.md)")] = None,
    retry_failed: Annotated[bool, typer.Option(help="rerun cells that failed before")] = True,
    allow_failures: AllowFailures = False,
) -> None:
    """Score every (model, dataset) cell of a plan into a resumable Parquet dataset."""
    from zooforge.selection.audit import load_plan, run_audit

    _threads()
    try:
        p = load_plan(plan, out=str(out.resolve()) if out else None)
        _check_device(p.device)
        _check_output(report, (".html", ".md"), "--report")
        s = run_audit(p, backend=backend, address=address, workers=workers, retry_failed=retry_failed)
    except ValueError as exc:          # ZooforgeError is one; an unknown estimator name too
        _fail(exc)
    stale = f" ({s.stale} re-run because their dataset changed)" if s.stale else ""
    console.print(f"{s.cells} cell(s): {s.ran} run now{stale}, {s.skipped} already finished, {len(s.failed)} failed; "
                  f"{s.seconds:.1f} s. Table: [bold]{s.out}[/]")
    for model, dataset, error in s.failed:
        console.print(f"[red]{model} on {dataset} failed:[/] {error}", soft_wrap=True)
    _print_audit_best(s.table)
    if report:
        from zooforge.selection.report import audit_report

        console.print(f"wrote {audit_report(s.out, report)}")
    if s.failed and not allow_failures:
        console.print(f"[red]{len(s.failed)} of {s.cells} cell(s) failed[/] (recorded in the table); exit "
                      f"{EXIT_FAILURES}. Pass --allow-failures to exit 0 all the same.")
        raise typer.Exit(code=EXIT_FAILURES)


def _print_audit_best(table) -> None:
    import polars as pl

    from zooforge.selection.audit import audit_tables

    t = Table(title="best model per dataset", header_style="bold")
    for col in ("dataset", "best model", "ordered by", "mean rank", "runner-up"):
        t.add_column(col, no_wrap=col != "runner-up")
    for dataset, ranking in audit_tables(table).items():
        # failed models and NaN mean ranks drop; the order puts models missing a score last
        ranked = ranking.filter(pl.col("mean_rank").is_not_nan() & pl.col("error").is_null())
        if ranked.height == 0:
            t.add_row(dataset, "[red]no model scored[/]", "-", "-", "-")
            continue
        t.add_row(dataset, ranked["model"][0], ranked["ordering"][0], format_value(ranked["mean_rank"][0], 3),
                  ranked["model"][1] if ranked.height > 1 else "-")
    console.print(t)


@app.command()
def report(
    source: Annotated[Path, typer.Argument(exists=True, help="ranking table (.csv/.json/.parquet) or audit folder")],
    out: Annotated[Path, typer.Argument(help="report file (.html, or .md with PNGs beside it)")],
) -> None:
    """Write a report (tables, score-vs-GMACs plots, provenance) of a ranking or an audit."""
    from zooforge.selection.report import write_report

    try:
        console.print(f"wrote {write_report(source, out)}")
    except ZooforgeError as exc:
        _fail(exc)


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="demo target task")] = "shapes",
    per_class: Annotated[int, typer.Option(help="target samples per class")] = 100,
    bootstrap: Annotated[int, typer.Option(help="resampling rounds for the intervals and P(top-1)")] = 50,
    cache_dir: Annotated[Optional[Path], typer.Option(help="feature cache")] = None,
) -> None:
    """Offline end to end: rank the demo zoo on a demo target task; judge it against fine-tuned truth."""
    from zooforge.selection.rank import DEFAULT_METRICS, rank as rank_models

    from zooforge.demo.truth import KIND_SAMPLES_PER_CLASS
    from zooforge.zoo.demo.kinds import KIND_TASKS

    _threads()
    # a regression or multi-label task has no classes: as many samples as the truth trained on
    spec = f"demo:{task}?n={per_class * (KIND_SAMPLES_PER_CLASS if task in KIND_TASKS else 1)}"
    console.print(f"Ranking the demo zoo (14 small timm models) on [bold]{spec}[/] ...")
    try:
        table = rank_models("demo", spec, cache_dir=cache_dir, bootstrap=bootstrap)
    except ZooforgeError as exc:
        _fail(exc)
    print_ranking(table, [m for m in DEFAULT_METRICS if m in table.columns], f"demo zoo on {spec}")
    best = table.filter(table["best_within_budget"])
    if best.height == 0:
        _fail(ZooforgeError("no demo model could be scored; see the errors above."))
    top = best.row(0, named=True)
    console.print(f"Top model by {top['ordering']}: [bold]{top['model']}[/] "
                  f"(LogME {format_value(top['logme'])}, P(top-1) {format_value(top.get('p_top1'), 2)}).")
    _print_demo_truth(table, task)


def _print_demo_truth(table, task: str) -> None:
    from zooforge.selection.evaluate import evaluate as evaluate_ranking
    from zooforge.demo.truth import load_truth

    try:
        truth = load_truth()
    except ZooforgeError as exc:
        console.print(f"[yellow]{exc}[/]")
        return
    accuracy = truth["accuracy"].get(task)
    if not accuracy:
        console.print(f"[yellow]the demo truth has no fine-tuned accuracies for {task!r}[/]")
        return
    p = truth["protocol"]
    result = evaluate_ranking(table, accuracy)
    best = max(accuracy, key=accuracy.get)
    t = Table(title=f"estimators vs fine-tuned accuracy on {task} ({p['method']} fine-tuning, "
                    f"{len(p['seeds'])} seeds, lr from {p['lrs']} by validation)", header_style="bold")
    for col in ("estimator", "Kendall τ", "weighted τ", "Pearson r", "top-1 regret", "top-3 hit"):
        t.add_column(col, justify="left" if col == "estimator" else "right")
    for row in result.iter_rows(named=True):
        t.add_row(row["metric"], format_value(row["kendall_tau"], 3), format_value(row["weighted_tau"], 3), format_value(row["pearson_r"], 3),
                  format_value(row["top1_regret"], 3), format_value(row["top3_hit"]))
    console.print(t)
    from zooforge.tuning.objectives import METRIC_LABELS, METRIC_NAMES
    from zooforge.zoo.demo.kinds import KIND_TASKS

    score = "test " + METRIC_LABELS[METRIC_NAMES[KIND_TASKS[task].kind if task in KIND_TASKS else "classification"]]
    console.print(f"Best fine-tuned model: [bold]{best}[/] ({accuracy[best]:.3f} {score}); "
                  f"the ranking's top model fine-tunes to {accuracy.get(table['model'][0], float('nan')):.3f}.")



def _train_config(epochs: int, lr: float, batch_size: int, seed: int, device: str | None, out: Path | None):
    from zooforge.tuning.loop import TrainConfig

    return TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device,
                       checkpoint_dir=str(out / "checkpoint") if out else None)


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="catalogue id (with --catalogue), timm name or HF id/folder")],
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    method: Annotated[str, typer.Option(help="linear|full|bitfit|adapter|adaptformer|lora|ia3")] = "linear",
    catalogue: Annotated[Optional[str], typer.Option(help="catalogue holding MODEL")] = None,
    epochs: Epochs = 10,
    lr: Annotated[Optional[str], typer.Option(
        help="peak learning rate, or 'auto': chosen by validation (80/20 of the training split) from the "
             "method's grid; default: the method's own rate (linear/bitfit/adapters/ia3 1e-2, lora 3e-3, "
             "full 1e-3)")] = None,
    batch_size: BatchSize = 64,
    seed: Annotated[int, typer.Option(help="seed for the split, the initialisation and the order")] = 0,
    rank: Annotated[Optional[int], typer.Option(help="LoRA rank (default 8)")] = None,
    reduction: Annotated[Optional[int], typer.Option(
        help="adapter bottleneck = width // reduction (default 8)")] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        help="LoRA/IA3 target modules (regex on full names; repeatable); default: per architecture")] = None,
    device: DeviceOpt = None,
    task: TaskOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write adapters.safetensors, result.json here")] = None,
) -> None:
    """Fine-tune one model with one method; print the held-out score (accuracy; R^2 for regression,
    mAP for multi-label), trainable params and time."""
    from zooforge.tuning.tune import DEFAULT_LR
    from zooforge.tuning.tune import tune as tune_model

    _threads()
    try:
        _check_device(device)
        peak: float | str | None = lr
        if lr is not None and lr != "auto":
            try:
                peak = float(lr)
            except ValueError:
                raise ZooforgeError(f"--lr must be a number or 'auto'; got {lr!r}.") from None
        options = {k: v for k, v in (("rank", rank), ("reduction", reduction), ("targets", target))
                   if v not in (None, [])}
        start = DEFAULT_LR.get(method, 1e-3) if not isinstance(peak, float) else peak
        r = tune_model(model, data, method, catalogue=catalogue, seed=seed, out_dir=out, lr=peak, task=task,
                       config=_train_config(epochs, start, batch_size, seed, device, out), **options)
    except (ZooforgeError, ValueError) as exc:
        _fail(exc)
    if r.lr_trials:
        console.print("lr by validation (80/20 of the training split): " + ", ".join(
            f"{t['lr']:.3g} {t['val_accuracy']:.3f}" for t in r.lr_trials) + f"; chose {r.lr:.3g}")
    from zooforge.tuning.objectives import METRIC_LABELS

    shown = METRIC_LABELS[r.metric]
    console.print(f"[bold]{r.model}[/] {r.method} (lr {r.lr:.3g}): held-out {shown} [bold]{r.accuracy:.4f}[/], "
                  f"trainable {r.trainable_params:,} of {r.total_params:,} ({100 * r.trainable_ratio:.2f}%), "
                  f"{r.seconds:.1f} s, peak memory {r.peak_memory_mb:.0f} MB")
    if out:
        console.print(f"wrote {out / 'adapters.safetensors'} and {out / 'result.json'}")


@app.command()
def aggregate(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    method: Annotated[str, typer.Option(help="btuning|zootuning|hubpathway")] = "btuning",
    top_k: Annotated[int, typer.Option(help="models taken from the LogME ranking (Hub-Pathway: routed per input)")] = 3,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="explicit members (globs, repeatable)")] = None,
    epochs: Epochs = 10,
    lr: PeakLr = 1e-3,
    batch_size: BatchSize = 64,
    seed: Seed = 0,
    strength: Annotated[Optional[str], typer.Option(
        help="B-Tuning: weight of the Bayesian regulariser (reference 100), or 'auto' to choose it by validation")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="B-Tuning: softmax temperature on LogME (reference 0.1)")] = None,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write model.safetensors and result.json here")] = None,
) -> None:
    """Combine several zoo models (B-Tuning, Zoo-Tuning, Hub-Pathway); print accuracy and cost."""
    from zooforge.selection.aggregate import METHODS, save_result

    _threads()
    try:
        _check_device(device)
        if method not in METHODS:
            raise ZooforgeError(f"unknown aggregation method {method!r}; choose one of {', '.join(METHODS)}.")
        cfg = _train_config(epochs, lr, batch_size, seed, device, None)
        kwargs = {"models": model, "config": cfg, "seed": seed}
        kwargs |= {"candidates": None if model else max(top_k, 2), "top_k": 2} if method == "hubpathway" else {"top_k": top_k}
        if strength is not None and strength != "auto":
            try:
                strength = float(strength)
            except ValueError:
                raise ZooforgeError(f"--strength must be a number or 'auto'; got {strength!r}.") from None
        btuning_only = {k: v for k, v in (("strength", strength), ("temperature", temperature)) if v is not None}
        if btuning_only and method != "btuning":
            raise ZooforgeError(f"--{' and --'.join(btuning_only)} only apply to --method btuning.")
        kwargs |= btuning_only
        r = METHODS[method](catalogue, data, **kwargs)
    except (ZooforgeError, ValueError) as exc:
        _fail(exc)
    t = Table(title=f"{method} on {data}", header_style="bold")
    t.add_column("member")
    t.add_column("weight", justify="right")
    for m, w in zip(r.members, r.weights):
        t.add_row(m, f"{w:.3f}")
    console.print(t)
    if r.extra.get("strength_trials"):
        console.print("strength by validation (80/20 of the training split): " + ", ".join(
            f"λ={trial['strength']:g} {trial['val_accuracy']:.3f}" for trial in r.extra["strength_trials"])
            + f"; chose λ={r.extra['strength']:g}")
    console.print(f"held-out accuracy [bold]{r.accuracy:.4f}[/], trainable {r.trainable_params:,} of "
                  f"{r.total_params:,} params, {r.seconds:.1f} s")
    if out:
        console.print(f"wrote {save_result(r, out)}")


@app.command()
def compose(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help="folder, .npz, sklearn:digits or demo:<task> (images)")],
    budget_gmacs: Annotated[Optional[float], _option(ComposeConfig, "budget_gmacs")] = ComposeConfig.budget_gmacs,
    budget_params: Annotated[Optional[float], _option(ComposeConfig, "budget_params")] = ComposeConfig.budget_params,
    stages: Annotated[int, _option(ComposeConfig, "stages")] = ComposeConfig.stages,
    model: ModelGlobs = None,
    epochs: Annotated[int, _option(ComposeConfig, "epochs")] = ComposeConfig.epochs,
    stitch_epochs: Annotated[int, _option(ComposeConfig, "stitch_epochs")] = ComposeConfig.stitch_epochs,
    lr: PeakLr = 1e-3,
    top_k: Annotated[int, _option(ComposeConfig, "top_k")] = ComposeConfig.top_k,
    screen: Annotated[int, _option(ComposeConfig, "screen")] = ComposeConfig.screen,
    screen_epochs: Annotated[Optional[int], _option(ComposeConfig, "screen_epochs")] = ComposeConfig.screen_epochs,
    compat: Annotated[str, _option(ComposeConfig, "compat")] = ComposeConfig.compat,
    seed: Seed = 0,
    baseline: Annotated[bool, _option(ComposeConfig, "baseline")] = ComposeConfig.baseline,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write assembly.safetensors, recipe.json, result.json")] = None,
) -> None:
    """DeRy: assemble blocks of several zoo models into one network within a budget, and train it."""
    from zooforge.reassembly.compose import compose as compose_model

    _threads()
    try:
        _check_device(device)
        config = ComposeConfig(budget_gmacs=budget_gmacs, budget_params=budget_params, stages=stages, models=model,
                               epochs=epochs, stitch_epochs=stitch_epochs, lr=lr, top_k=top_k, screen=screen,
                               screen_epochs=screen_epochs, compat=compat, seed=seed, baseline=baseline, device=device)
        with console.status("cutting blocks, partitioning, solving, stitching and training ..."):
            r = compose_model(catalogue, data, config, out_dir=out)
    except (ZooforgeError, ValueError) as exc:
        _fail(exc)
    for model_id, why in r.left_out.items():          # never silently: a model the user listed may be among them
        console.print(f"[yellow]{model_id} left out of the assembly:[/] {why}", soft_wrap=True)
    console.print(f"solver: {r.explanation}; within-stage CKA {r.within_stage_similarity:.3f}")
    if r.screened:
        t = Table(title=f"screening ({screen_epochs or epochs} epochs each on 80% of the training split; a mix is "
                        "kept only if it beats the single model by more than one standard error)", header_style="bold")
        for col in ("assembly", "GMACs", "solver objective", "assembly LogME", "val accuracy", "kept"):
            t.add_column(col, justify="left" if col == "assembly" else "right")
        for row in r.screened:
            t.add_row(" + ".join(f"{m}[{a}-{b - 1}]" for m, (a, b) in zip(row["models"], row["blocks"])),
                      format_value(row["gmacs"]), format_value(row["objective"]), format_value(row["assembly_logme"]),
                      format_value(row["val_accuracy"]), "yes" if row["kept"] else "")
        console.print(t)
    t = Table(title="chosen assembly", header_style="bold")
    for col in ("stage", "model", "blocks", "params", "GMACs", "LogME at stage end"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for row in r.stages:
        t.add_row(str(row["stage"]), row["model"], row["blocks"], f"{row['params']:,}", format_value(row["gmacs"]),
                  format_value(row["score"]))
    console.print(t)
    console.print(f"assembly: {r.params / 1e6:.4g} M params (stitches and head included), {r.gmacs:.4g} GMACs, "
                  f"held-out accuracy [bold]{r.accuracy:.4f}[/]")
    if r.baseline:
        b = r.baseline
        console.print(f"best single model within budget: {b['model']}, {b['params'] / 1e6:.4g} M params, "
                      f"{b['gmacs']:.4g} GMACs, held-out accuracy [bold]{b['accuracy']:.4f}[/] "
                      f"(assembly − single: {r.accuracy - b['accuracy']:+.4f})")
    elif baseline:
        console.print("[yellow]no single zoo model fits the budget[/]")
    if out:
        console.print(f"wrote {out}/assembly.safetensors, recipe.json and result.json")


@app.command("select")
def select_cmd(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help="folder, .csv, .npz, sklearn:digits or demo:<task> (the training data)")],
    budget: Annotated[Optional[float], typer.Option(
        help="compute budget as a share of fully fine-tuning every model (e.g. 0.15)")] = 0.15,
    budget_seconds: Annotated[Optional[float], typer.Option(help="wall-clock budget for the fine-tunes")] = None,
    method: Annotated[str, typer.Option(help="trial fine-tuning method: linear|full|bitfit|adapter|lora|ia3|...")] = "full",
    full_epochs: Annotated[int, typer.Option(help="epochs of the full fine-tune that --budget is a share of")] = 10,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="estimator (repeatable)")] = None,
    model: ModelGlobs = None,
    budget_gmacs: Annotated[Optional[float], typer.Option(help="only models within this many GMACs")] = None,
    budget_params: Annotated[Optional[float], typer.Option(help="... and this many million parameters")] = None,
    lr: Annotated[Optional[float], typer.Option(help="peak learning rate (default: the method's)")] = None,
    bootstrap: Annotated[int, typer.Option(help="resampling rounds for the ranking's intervals")] = 100,
    seed: Seed = 0,
    split: SplitOpt = None,
    task: TaskOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="feature cache (default $ZOOFORGE_CACHE_DIR)")] = None,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        help="folder: trials.jsonl (resumable), rounds.parquet, result.json, the chosen model's weights")] = None,
    threads: Threads = None,
) -> None:
    """Rank the catalogue, then confirm the choice with short fine-tunes (successive halving) under a budget."""
    from zooforge.selection.select import SelectConfig, rounds_table, select
    from zooforge.zoo import load_dataset

    _threads(threads)
    try:
        _check_device(device)
        cfg = SelectConfig(fraction=budget, seconds=budget_seconds, method=method, full_epochs=full_epochs, lr=lr,
                           seed=seed)
        ds = load_dataset(data, split, seed=seed, task=task)
        console.print(f"dataset {ds.summary()}", soft_wrap=True)
        r = select(catalogue, ds, cfg, metrics=metric, models=model, budget_gmacs=budget_gmacs,
                   budget_params=budget_params, out_dir=out, cache_dir=cache_dir, device=device,
                   bootstrap=bootstrap, log=lambda m: console.print(m, soft_wrap=True))
    except ValueError as exc:
        _fail(exc)
    t = Table(title="successive halving (validation: 20% of the training data)", header_style="bold")
    from zooforge.tuning.objectives import METRIC_LABELS, METRIC_NAMES

    score = METRIC_LABELS[METRIC_NAMES[ds.task]]
    for col in ("round", "model", "epochs", f"val {score}", "seconds"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for row in r.rounds:
        t.add_row(str(row["round"]), row["model"], str(row["epochs"]), format_value(row["val_accuracy"]),
                  format_value(row.get("seconds"), 3))
    console.print(t)
    console.print(f"chose [bold]{r.model}[/] (validation {score} {r.val_accuracy:.4f}); spent "
                  f"{100 * r.spent_fraction:.1f}% of the compute of fully fine-tuning every model "
                  f"({r.spent:.4g} of {r.fine_tune_all:.4g} GMAC), {r.seconds:.1f} s; the ranking alone "
                  f"named {r.ranking['model'][0]}.", soft_wrap=True)
    if out:
        from zooforge.selection.rank import write_table

        write_table(rounds_table(r), out / "rounds.parquet")
        console.print(f"wrote {out}/result.json, rounds.parquet, rounds.png, ranking.parquet, trials.jsonl and the chosen "
                      f"model's adapters.safetensors; `zooforge report {out} report.html` writes a report")


catalogue_app = typer.Typer(no_args_is_help=True, help="Write a catalogue TOML from timm's registry or the Hugging Face Hub.")
app.add_typer(catalogue_app, name="catalogue")
CatalogueOut = Annotated[Path, typer.Option(help="catalogue file to write (.toml)")]


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
        _fail(exc)
    console.print(f"wrote {len(ds)} samples; read them back as [bold]{spec}[/]", soft_wrap=True)


def _write_listing(entries, out: Path, header: str) -> None:
    from zooforge.zoo.listing import dump_catalogue

    dump_catalogue(entries, out, header)
    console.print(f"wrote {len(entries)} model(s) to {out}")


@catalogue_app.command("timm")
def catalogue_timm(
    pattern: Annotated[Optional[list[str]], typer.Argument(help="timm name patterns, e.g. 'convnext*' 'resnet*'")] = None,
    out: CatalogueOut = Path("zoo.toml"),
    pretrained: Annotated[bool, typer.Option("--pretrained/--all", help="only tags with pretrained weights")] = True,
    exclude: Annotated[Optional[list[str]], typer.Option(help="patterns to leave out (repeatable)")] = None,
    max_gmacs: Annotated[Optional[float], typer.Option(help="only models within this many GMACs (zooforge's count)")] = None,
    max_params: Annotated[Optional[float], typer.Option(help="... and this many million parameters")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="where per-architecture costs are cached")] = None,
) -> None:
    """Catalogue from timm's own registry: tagged names, preprocessing, head size, source-data and license tags."""
    from zooforge.zoo.listing import catalogue_from_timm

    try:
        _check_output(out, (".toml",), "--out")
        entries = catalogue_from_timm(pattern or ["*"], pretrained=pretrained, exclude=exclude or (),
                                      max_gmacs=max_gmacs, max_params=max_params, cache_dir=cache_dir,
                                      progress=True)
        _write_listing(entries, out, f"zooforge catalogue timm {' '.join(pattern or ['*'])}"
                       + (f" --max-gmacs {max_gmacs:g}" if max_gmacs is not None else "")
                       + (f" --max-params {max_params:g}" if max_params is not None else ""))
    except ZooforgeError as exc:
        _fail(exc)


@catalogue_app.command("hub")
def catalogue_hub(
    task: Annotated[str, typer.Option(help="image-classification | image-feature-extraction | sentence-similarity | ...")],
    out: CatalogueOut = Path("zoo.toml"),
    library: Annotated[Optional[str], typer.Option(help="timm | transformers | sentence-transformers")] = None,
    search: Annotated[Optional[str], typer.Option(help="text the repo id must contain")] = None,
    sort: Annotated[str, typer.Option(help="hub sort key")] = "downloads",
    limit: Annotated[int, typer.Option(help="at most this many models")] = 50,
) -> None:
    """Catalogue from the Hugging Face Hub (HF_ENDPOINT), each model pinned to its current commit."""
    from zooforge.zoo.listing import catalogue_from_hub

    try:
        _check_output(out, (".toml",), "--out")
        entries = catalogue_from_hub(task, library=library, search=search, sort=sort, limit=limit)
        _write_listing(entries, out, f"zooforge catalogue hub --task {task}" + (f" --library {library}" if library else "")
                       + (f" --search {search}" if search else "") + " (revisions pinned to the listed commits)")
    except ZooforgeError as exc:
        _fail(exc)


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
            _fail(ZooforgeError(f"{name} must be >= 0; got {value}."))
    r = FeatureCache(cache_dir).prune(older_than_days=older_than_days, partial=not keep_partial,
                                      max_bytes=None if max_gb is None else int(max_gb * 2**30))
    console.print(f"removed {r['entries']} entries, {r['partial_extractions']} unfinished extraction(s) and "
                  f"{r['temporaries']} temporary file(s): {_mb(r['bytes'])}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
