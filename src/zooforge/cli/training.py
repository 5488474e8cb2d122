"""Commands that train: ``tune``, ``aggregate``, ``compose`` and ``select``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from zooforge.cli.common import (
    DATA_HELP, DeviceOpt, SplitOpt, TaskOpt, Threads, app,
    check_device, console, fail, interval_warning_said, option, print_dataset, set_threads,
)
from zooforge.config import SCREEN_EVIDENCE_KINDS, AggregateConfig, ComposeConfig, SelectConfig, TuneConfig
from zooforge.errors import ZooforgeError
from zooforge.formatting import format_value


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="catalogue id (with --catalogue), timm name or HF id/folder")],
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    method: Annotated[str, option(TuneConfig, "method")] = TuneConfig.method,
    catalogue: Annotated[Optional[str], typer.Option(help="catalogue holding MODEL")] = None,
    epochs: Annotated[int, option(TuneConfig, "epochs")] = TuneConfig.epochs,
    lr: Annotated[Optional[str], option(TuneConfig, "lr")] = TuneConfig.lr,
    batch_size: Annotated[int, option(TuneConfig, "batch_size")] = TuneConfig.batch_size,
    seed: Annotated[int, option(TuneConfig, "seed")] = TuneConfig.seed,
    rank: Annotated[Optional[int], option(TuneConfig, "rank")] = TuneConfig.rank,
    reduction: Annotated[Optional[int], option(TuneConfig, "reduction")] = TuneConfig.reduction,
    target: Annotated[Optional[list[str]], option(TuneConfig, "targets")] = None,
    alpha: Annotated[Optional[float], option(TuneConfig, "alpha")] = TuneConfig.alpha,
    dropout: Annotated[Optional[float], option(TuneConfig, "dropout")] = TuneConfig.dropout,
    scale: Annotated[Optional[float], option(TuneConfig, "scale")] = TuneConfig.scale,
    lr_grid: Annotated[Optional[list[float]], option(TuneConfig, "lr_grid")] = None,
    train_share: Annotated[float, option(TuneConfig, "split", "--train-share")] = TuneConfig.split,
    device: DeviceOpt = None,
    task: TaskOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        help="write adapters.safetensors, result.json here (and an epoch checkpoint that resumes)")] = None,
) -> None:
    """Fine-tune one model with one method; print the held-out score (accuracy; R^2 for regression,
    mAP for multi-label), trainable params and time."""
    from zooforge.tuning.tune import tune as tune_model

    set_threads()
    try:
        check_device(device)
        config = TuneConfig(method=method, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed, task=task,
                            device=device, rank=rank, reduction=reduction, targets=target or None, alpha=alpha,
                            dropout=dropout, scale=scale, lr_grid=lr_grid or None, split=train_share)
        r = tune_model(model, data, config, catalogue=catalogue, out_dir=out)
    except (ZooforgeError, ValueError) as exc:
        fail(exc)
    if r.lr_trials:
        console.print(_trials("lr", r.lr_trials, lambda lr: f"{lr:.3g}") + f"; chose {r.lr:.3g}")
    from zooforge.tuning.objectives import METRIC_LABELS

    shown = METRIC_LABELS[r.metric]
    console.print(f"[bold]{r.model}[/] {r.method} (lr {r.lr:.3g}): held-out {shown} [bold]{r.accuracy:.4f}[/], "
                  f"trainable {r.trainable_params:,} of {r.total_params:,} ({100 * r.trainable_ratio:.2f}%), "
                  f"{r.seconds:.1f} s, peak memory {r.peak_memory_mb:.0f} MB")
    if out:
        console.print(f"wrote {out / 'adapters.safetensors'} and {out / 'result.json'}")


def _trials(name: str, trials: list[dict], shown) -> str:
    """A choice by validation, one trial per value of ``name``: its validation score, or "diverged"
    (a trial whose training diverged scores -inf, so that it loses)."""
    return f"{name} by validation (80/20 of the training split): " + ", ".join(
        f"{shown(t[name])} " + (f"{t['val_accuracy']:.3f}" if t["val_accuracy"] > float("-inf") else "diverged")
        for t in trials)


@app.command()
def aggregate(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help=DATA_HELP)],
    method: Annotated[str, option(AggregateConfig, "method")] = AggregateConfig.method,
    top_k: Annotated[int, option(AggregateConfig, "top_k")] = AggregateConfig.top_k,
    model: Annotated[Optional[list[str]], option(AggregateConfig, "models", "--model")] = None,
    order: Annotated[Optional[str], option(AggregateConfig, "ordering", "--order")] = None,
    epochs: Annotated[int, option(AggregateConfig, "epochs")] = AggregateConfig.epochs,
    lr: Annotated[float, option(AggregateConfig, "lr")] = AggregateConfig.lr,
    batch_size: Annotated[int, option(AggregateConfig, "batch_size")] = AggregateConfig.batch_size,
    seed: Annotated[int, option(AggregateConfig, "seed")] = AggregateConfig.seed,
    strength: Annotated[Optional[str], option(AggregateConfig, "strength")] = AggregateConfig.strength,
    temperature: Annotated[Optional[float], option(AggregateConfig, "temperature")] = AggregateConfig.temperature,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write model.safetensors and result.json here")] = None,
) -> None:
    """Combine several zoo models (B-Tuning, Zoo-Tuning, Hub-Pathway; or the baseline they are judged against,
    an ensemble of the top-k each fine-tuned alone); print accuracy and cost."""
    from zooforge.selection.aggregate import aggregate as aggregate_models, save_result
    from zooforge.selection.aggregate.architecture import GroupWarning, group_warning

    set_threads()
    try:
        check_device(device)
        config = AggregateConfig(method=method, top_k=top_k, models=model or None, ordering=order, epochs=epochs, lr=lr,
                                 batch_size=batch_size, seed=seed, strength=strength, temperature=temperature,
                                 device=device, progress=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GroupWarning)          # said below, in the result's words
            r = aggregate_models(catalogue, data, config)
    except (ZooforgeError, ValueError) as exc:
        fail(exc)
    for model_id, why in r.extra.get("unranked", {}).items():     # rank could not place it: not a candidate
        console.print(f"[yellow]{model_id} could not be ranked on this data, so it was not considered:[/] {why}",
                      soft_wrap=True)
    if r.extra.get("passed_over"):
        console.print(f"[yellow]{group_warning(r.extra['passed_over'], r.members[0])}[/]", soft_wrap=True)
    if not model and len(r.members) < top_k:
        why = ("its group is every model of that architecture here" if method == "zootuning" else
               "that is every model the ranking could place")
        console.print(f"[yellow]--top-k {top_k} asked for {top_k} models; {method} took {len(r.members)}: {why}.[/]",
                      soft_wrap=True)
    t = Table(title=f"{method} on {data}", header_style="bold")
    t.add_column("member")
    t.add_column("weight", justify="right")
    for m, w in zip(r.members, r.weights):
        t.add_row(m, f"{w:.3f}")
    console.print(t)
    if r.extra.get("strength_trials"):
        console.print(_trials("strength", r.extra["strength_trials"], lambda v: f"λ={v:g}")
                      + f"; chose λ={r.extra['strength']:g}")
    console.print(f"held-out accuracy [bold]{r.accuracy:.4f}[/], trainable {r.trainable_params:,} of "
                  f"{r.total_params:,} params, {r.gmacs:.4g} GMACs per input at inference, {r.seconds:.1f} s")
    if "collapsed_accuracy" in r.extra:
        console.print(f"collapsed into one plain network (the gates fixed at their mean over the training split): "
                      f"held-out accuracy {r.extra['collapsed_accuracy']:.4f}, {r.extra['collapsed_params']:,} params, "
                      f"{r.extra['collapsed_gmacs']:.4g} GMACs per input")
    if out:
        console.print(f"wrote {save_result(r, out)}")


@app.command()
def compose(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help="folder, .npz, sklearn:digits or demo:<task> (images)")],
    budget_gmacs: Annotated[Optional[float], option(ComposeConfig, "budget_gmacs")] = ComposeConfig.budget_gmacs,
    budget_params: Annotated[Optional[float], option(ComposeConfig, "budget_params")] = ComposeConfig.budget_params,
    stages: Annotated[int, option(ComposeConfig, "stages")] = ComposeConfig.stages,
    model: Annotated[Optional[list[str]], option(ComposeConfig, "models", "--model")] = None,
    epochs: Annotated[int, option(ComposeConfig, "epochs")] = ComposeConfig.epochs,
    stitch_epochs: Annotated[int, option(ComposeConfig, "stitch_epochs")] = ComposeConfig.stitch_epochs,
    lr: Annotated[float, option(ComposeConfig, "lr")] = ComposeConfig.lr,
    batch_size: Annotated[int, option(ComposeConfig, "batch_size")] = ComposeConfig.batch_size,
    top_k: Annotated[int, option(ComposeConfig, "top_k")] = ComposeConfig.top_k,
    screen: Annotated[int, option(ComposeConfig, "screen")] = ComposeConfig.screen,
    screen_epochs: Annotated[Optional[int], option(ComposeConfig, "screen_epochs")] = ComposeConfig.screen_epochs,
    screen_folds: Annotated[int, option(ComposeConfig, "screen_folds")] = ComposeConfig.screen_folds,
    screen_evidence: Annotated[str, option(ComposeConfig, "screen_evidence")] = ComposeConfig.screen_evidence,
    screen_level: Annotated[float, option(ComposeConfig, "screen_level")] = ComposeConfig.screen_level,
    compat: Annotated[str, option(ComposeConfig, "compat")] = ComposeConfig.compat,
    compat_weight: Annotated[float, option(ComposeConfig, "compat_weight")] = ComposeConfig.compat_weight,
    max_blocks: Annotated[Optional[int], option(ComposeConfig, "max_blocks")] = ComposeConfig.max_blocks,
    probe: Annotated[int, option(ComposeConfig, "probe")] = ComposeConfig.probe,
    seed: Annotated[int, option(ComposeConfig, "seed")] = ComposeConfig.seed,
    baseline: Annotated[bool, option(ComposeConfig, "baseline")] = ComposeConfig.baseline,
    order: Annotated[Optional[str], option(ComposeConfig, "ordering", "--order")] = None,
    train_share: Annotated[float, option(ComposeConfig, "split", "--train-share")] = ComposeConfig.split,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write assembly.safetensors, recipe.json, result.json")] = None,
) -> None:
    """DeRy: assemble blocks of several zoo models into one network within a budget, and train it."""
    from zooforge.reassembly.compose import compose as compose_model

    set_threads()
    try:
        check_device(device)
        config = ComposeConfig(budget_gmacs=budget_gmacs, budget_params=budget_params, stages=stages, models=model,
                               epochs=epochs, stitch_epochs=stitch_epochs, lr=lr, batch_size=batch_size, top_k=top_k,
                               screen=screen, screen_epochs=screen_epochs, screen_folds=screen_folds,
                               screen_evidence=screen_evidence, screen_level=screen_level, compat=compat,
                               compat_weight=compat_weight, max_blocks=max_blocks, probe=probe, seed=seed,
                               baseline=baseline, ordering=order, split=train_share, device=device)
        with console.status("cutting blocks, partitioning, solving, stitching and training ..."):
            r = compose_model(catalogue, data, config, out_dir=out)
    except (ZooforgeError, ValueError) as exc:
        fail(exc)
    for model_id, why in r.left_out.items():          # never silently: a model the user listed may be among them
        console.print(f"[yellow]{model_id} left out of the assembly:[/] {why}", soft_wrap=True)
    for model_id, why in r.unranked.items():
        console.print(f"[yellow]{model_id} fits the budget whole but could not be ranked, so it is not the single "
                      f"model compared with:[/] {why}", soft_wrap=True)
    console.print(f"solver: {r.explanation}; within-stage CKA {r.within_stage_similarity:.3f}")
    if r.screened:
        where = "on 80% of the training split" if screen_folds <= 1 else f"in each of {screen_folds} folds"
        said, header = SCREEN_EVIDENCE_KINDS[screen_evidence]
        t = Table(title=f"screening ({screen_epochs or epochs} epochs each {where}; the best mix "
                        f"is kept only if it leads the single model on {said} by more "
                        f"than the margin of a paired test at level {screen_level:g} over the mixes compared)",
                  header_style="bold")
        for col in ("assembly", "GMACs", "solver objective", "assembly LogME", "val accuracy", header, "kept"):
            t.add_column(col, justify="left" if col == "assembly" else "right")
        for row in r.screened:
            t.add_row(" + ".join(f"{m}[{a}-{b - 1}]" for m, (a, b) in zip(row["models"], row["blocks"])),
                      format_value(row["gmacs"]), format_value(row["objective"]), format_value(row["assembly_logme"]),
                      format_value(row["val_accuracy"]), format_value(row["val_score"]), "yes" if row["kept"] else "")
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
        named = f"the ordering {b['ordering']}" if b.get("ordering") else "the order rank recommends"
        console.print(f"best single model within budget (the first that fits in {named}): {b['model']}, "
                      f"{b['params'] / 1e6:.4g} M params, {b['gmacs']:.4g} GMACs, held-out accuracy "
                      f"[bold]{b['accuracy']:.4f}[/] (assembly − single: {r.accuracy - b['accuracy']:+.4f})",
                      soft_wrap=True)
    elif baseline:
        console.print("[yellow]no single zoo model that fits the budget could be ranked[/]" if r.unranked
                      else "[yellow]no single zoo model fits the budget[/]")
    if out:
        console.print(f"wrote {out}/assembly.safetensors, recipe.json and result.json")


@app.command("select")
def select_cmd(
    catalogue: Annotated[str, typer.Argument(help="catalogue TOML file or built-in name (demo)")],
    data: Annotated[str, typer.Argument(help="folder, .csv, .npz, sklearn:digits or demo:<task> (the training data)")],
    budget: Annotated[Optional[float], option(SelectConfig, "fraction")] = SelectConfig.fraction,
    budget_seconds: Annotated[Optional[float], option(SelectConfig, "seconds")] = SelectConfig.seconds,
    method: Annotated[str, option(SelectConfig, "method")] = SelectConfig.method,
    full_epochs: Annotated[int, option(SelectConfig, "full_epochs")] = SelectConfig.full_epochs,
    metric: Annotated[Optional[list[str]], option(SelectConfig, "metrics", "--metric", "-m")] = None,
    model: Annotated[Optional[list[str]], option(SelectConfig, "models", "--model")] = None,
    budget_gmacs: Annotated[Optional[float], option(SelectConfig, "budget_gmacs")] = SelectConfig.budget_gmacs,
    budget_params: Annotated[Optional[float], option(SelectConfig, "budget_params")] = SelectConfig.budget_params,
    lr: Annotated[Optional[float], option(SelectConfig, "lr")] = SelectConfig.lr,
    batch_size: Annotated[int, option(SelectConfig, "batch_size")] = SelectConfig.batch_size,
    min_entrants: Annotated[int, option(SelectConfig, "min_entrants")] = SelectConfig.min_entrants,
    max_entrants: Annotated[int, option(SelectConfig, "max_entrants")] = SelectConfig.max_entrants,
    bootstrap: Annotated[int, option(SelectConfig, "bootstrap")] = SelectConfig.bootstrap,
    seed: Annotated[int, option(SelectConfig, "seed")] = SelectConfig.seed,
    split: SplitOpt = None,
    task: TaskOpt = None,
    cache_dir: Annotated[Optional[Path], option(SelectConfig, "cache_dir")] = None,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        help="folder: trials.jsonl (resumable), rounds.parquet, result.json, the chosen model's weights")] = None,
    threads: Threads = None,
) -> None:
    """Rank the catalogue, then confirm the choice with short fine-tunes (successive halving) under a budget."""
    from zooforge.selection.select import decision_sentence, rounds_table, select
    from zooforge.zoo import load_dataset

    set_threads(threads)
    try:
        check_device(device)
        config = SelectConfig(fraction=budget, seconds=budget_seconds, method=method, full_epochs=full_epochs, lr=lr,
                              batch_size=batch_size, min_entrants=min_entrants, max_entrants=max_entrants,
                              seed=seed, metrics=metric or None, models=model or None, budget_gmacs=budget_gmacs,
                              budget_params=budget_params, bootstrap=bootstrap, cache_dir=cache_dir, device=device)
        ds = load_dataset(data, split, seed=seed, task=task)
        print_dataset(ds, bootstrap)
        with interval_warning_said():
            r = select(catalogue, ds, config, out_dir=out, log=lambda m: console.print(m, soft_wrap=True))
    except ValueError as exc:
        fail(exc)
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
    console.print(decision_sentence(r.decision), soft_wrap=True)
    if out:
        from zooforge.selection.rank import write_table

        write_table(rounds_table(r), out / "rounds.parquet")
        console.print(f"wrote {out}/result.json, rounds.parquet, rounds.png, ranking.parquet, trials.jsonl and the chosen "
                      f"model's adapters.safetensors; `zooforge report {out} report.html` writes a report")
