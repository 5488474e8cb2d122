"""Ranking commands: ``models``, ``rank``, ``evaluate``, ``report`` and the offline ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from zooforge.cli.common import (
    AllowFailures, DATA_HELP, DeviceOpt, EXIT_FAILURES, OrderOpt, SkipBadFiles, SplitOpt,
    TABLE_SUFFIXES, TaskOpt, Threads, app, check_device, check_output, console, fail, option, print_failures, save_table,
    interval_warning_said, print_dataset, set_threads,
)
from zooforge.config import RankConfig
from zooforge.errors import ZooforgeError, first_line
from zooforge.formatting import format_value


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
        console.print(f"[dim]ordered by {ordering}{' (the default, fitted on fine-tune truth and tested leave-one-zoo-out)' if ordering == _default_ordering() else ''}; "
                      f"P(top1): first under that ordering; interval of {first}; mean: mean rank over "
                      f"{len(metrics)} estimator(s){'; --wide shows each' if not wide and len(metrics) > 1 else ''}[/]",
                      soft_wrap=True)
    print_failures([(row["model"], row["error"]) for row in table.iter_rows(named=True) if row["error"]])
    for row in table.iter_rows(named=True):
        if not row["error"] and row["skipped"]:
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

    set_threads()
    try:
        entries = load_catalogue(catalogue)
    except ZooforgeError as exc:
        fail(exc)
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
    metric: Annotated[Optional[list[str]], option(RankConfig, "metrics", "--metric", "-m")] = None,
    model: Annotated[Optional[list[str]], option(RankConfig, "models", "--model")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the table: .csv, .json or .parquet")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="draw score vs GMACs with the Pareto front (.png/.svg/.pdf)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write a report with table, plot and provenance (.html/.md)")] = None,
    budget_gmacs: Annotated[Optional[float], option(RankConfig, "budget_gmacs")] = RankConfig.budget_gmacs,
    budget_params: Annotated[Optional[float], option(RankConfig, "budget_params")] = RankConfig.budget_params,
    max_per_class: Annotated[Optional[int], option(RankConfig, "max_per_class")] = RankConfig.max_per_class,
    split: SplitOpt = None,
    task: TaskOpt = None,
    seed: Annotated[int, option(RankConfig, "seed")] = RankConfig.seed,
    bootstrap: Annotated[int, option(RankConfig, "bootstrap")] = RankConfig.bootstrap,
    order: OrderOpt = None,
    intervals: Annotated[str, option(RankConfig, "intervals")] = RankConfig.intervals,
    batch_size: Annotated[int, option(RankConfig, "batch_size")] = RankConfig.batch_size,
    cache_dir: Annotated[Optional[Path], option(RankConfig, "cache_dir")] = None,
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

    if json_out:
        import sys

        console.file = sys.stderr               # stdout carries only the JSON
        ctx.call_on_close(lambda: setattr(console, "file", None))
    set_threads(threads)
    metrics = metric or list(DEFAULT_METRICS)
    try:
        check_device(device)
        check_output(out, TABLE_SUFFIXES, "--out")
        check_output(plot, (".png", ".svg", ".pdf"), "--plot")
        check_output(report, (".html", ".md"), "--report")
        config = RankConfig(metrics=metric or None, models=model or None, ordering=order, budget_gmacs=budget_gmacs,
                            budget_params=budget_params, bootstrap=bootstrap, intervals=intervals, seed=seed,
                            split=split, max_per_class=max_per_class, task=task, batch_size=batch_size,
                            cache_dir=cache_dir, device=device, progress=not quiet and not json_out)
        ds = load_dataset(data, split, max_per_class=max_per_class, seed=seed, skip_bad_files=skip_bad_files,
                          task=task)
        print_dataset(ds, bootstrap)
        if not metric and ds.task != "classification":
            metrics = default_metrics(ds.task)
            console.print(f"[dim]a {ds.task} target: scored by {', '.join(metrics)}; "
                          f"{', '.join(m for m in DEFAULT_METRICS if m not in metrics)} are defined for classes "
                          f"only[/]", soft_wrap=True)
        with interval_warning_said():
            table = rank_models(catalogue, ds, metrics, config)
    except ValueError as exc:          # ZooforgeError is one
        fail(exc)
    if json_out:
        import sys

        sys.stdout.write(table.write_json() + "\n")
    else:
        print_ranking(table, metrics, f"{catalogue} on {data}", wide=wide)
    if (budget_gmacs is not None or budget_params is not None) and not table["within_budget"].any():
        console.print("[yellow]No model fits the budget[/] "
                      f"(smallest: {table['gmacs'].min():.4g} GMACs, {table['params_m'].min():.4g} M params).")
    if out:
        save_table(table, out)
    if plot:
        from zooforge.selection.plot import plot_ranking

        try:
            console.print(f"wrote {plot_ranking(table, plot, metrics[0], budget_gmacs, f'{catalogue} on {data}')}")
        except ZooforgeError as exc:
            fail(exc)
    if report:
        from zooforge.selection.report import ranking_report

        settings = {"catalogue": catalogue, "dataset": data, "metrics": metrics, "bootstrap": bootstrap,
                    "max_per_class": max_per_class, "budget_gmacs": budget_gmacs, "budget_params": budget_params,
                    "skipped_files": ds.meta.get("skipped_files", [])}
        try:
            console.print(f"wrote {ranking_report(table, report, title=f'{catalogue} on {data}', settings=settings, budget_gmacs=budget_gmacs)}")
        except ZooforgeError as exc:
            fail(exc)
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
        check_output(out, TABLE_SUFFIXES, "--out")
        result = evaluate_ranking(read_table(ranking, "ranking"), read_table(truth, "truth"))
    except ValueError as exc:
        fail(exc)
    t = Table(title="estimators vs fine-tuned accuracy", header_style="bold")
    for col in result.columns:
        t.add_column(col, justify="left" if col == "metric" else "right")
    for row in result.iter_rows():
        t.add_row(*[format_value(v, 3) for v in row])
    console.print(t)
    if out:
        save_table(result, out)


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
        fail(exc)


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

    set_threads()
    # a regression or multi-label task has no classes: as many samples as the truth trained on
    spec = f"demo:{task}?n={per_class * (KIND_SAMPLES_PER_CLASS if task in KIND_TASKS else 1)}"
    console.print(f"Ranking the demo zoo (14 small timm models) on [bold]{spec}[/] ...")
    try:
        table = rank_models("demo", spec, cache_dir=cache_dir, bootstrap=bootstrap)
    except ZooforgeError as exc:
        fail(exc)
    print_ranking(table, [m for m in DEFAULT_METRICS if m in table.columns], f"demo zoo on {spec}")
    best = table.filter(table["best_within_budget"])
    if best.height == 0:
        fail(ZooforgeError("no demo model could be scored; see the errors above."))
    top = best.row(0, named=True)
    from zooforge.selection.ordering import Ordering

    lead = Ordering.parse(top["ordering"]).first_decided_by[0]        # the estimator that put it first
    console.print(f"Top model by {top['ordering']}: [bold]{top['model']}[/] "
                  f"({lead} {format_value(top.get(lead))}, P(top-1) {format_value(top.get('p_top1'), 2)}).")
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
