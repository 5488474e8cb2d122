"""Hub-wide work: ``audit`` over a plan, and ``catalogue timm|hub`` to write the catalogues it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from zooforge.cli.common import (
    AllowFailures, EXIT_FAILURES, app, check_device, check_output, console, fail, print_failures, set_threads,
)
from zooforge.errors import ZooforgeError
from zooforge.formatting import format_value


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

    set_threads()
    try:
        p = load_plan(plan, out=str(out.resolve()) if out else None)
        check_device(p.device)
        check_output(report, (".html", ".md"), "--report")
        s = run_audit(p, backend=backend, address=address, workers=workers, retry_failed=retry_failed)
    except ValueError as exc:          # ZooforgeError is one; an unknown estimator name too
        fail(exc)
    stale = f" ({s.stale} re-run because their dataset changed)" if s.stale else ""
    console.print(f"{s.cells} cell(s): {s.ran} run now{stale}, {s.skipped} already finished, {len(s.failed)} failed; "
                  f"{s.seconds:.1f} s. Table: [bold]{s.out}[/]", soft_wrap=True)
    print_failures([(f"{model} on {dataset}", error) for model, dataset, error in s.failed])
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


catalogue_app = typer.Typer(no_args_is_help=True, help="Write a catalogue TOML from timm's registry or the Hugging Face Hub.")
app.add_typer(catalogue_app, name="catalogue")
CatalogueOut = Annotated[Path, typer.Option(help="catalogue file to write (.toml)")]


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
        check_output(out, (".toml",), "--out")
        entries = catalogue_from_timm(pattern or ["*"], pretrained=pretrained, exclude=exclude or (),
                                      max_gmacs=max_gmacs, max_params=max_params, cache_dir=cache_dir,
                                      progress=True)
        _write_listing(entries, out, f"zooforge catalogue timm {' '.join(pattern or ['*'])}"
                       + (f" --max-gmacs {max_gmacs:g}" if max_gmacs is not None else "")
                       + (f" --max-params {max_params:g}" if max_params is not None else ""))
    except ZooforgeError as exc:
        fail(exc)


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
        check_output(out, (".toml",), "--out")
        entries = catalogue_from_hub(task, library=library, search=search, sort=sort, limit=limit)
        _write_listing(entries, out, f"zooforge catalogue hub --task {task}" + (f" --library {library}" if library else "")
                       + (f" --search {search}" if search else "") + " (revisions pinned to the listed commits)")
    except ZooforgeError as exc:
        fail(exc)
