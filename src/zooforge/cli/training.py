"""Commands that train: ``tune``, ``aggregate``, ``compose`` and ``select``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from zooforge.cli.common import (
    BatchSize, DATA_HELP, DeviceOpt, Epochs, ModelGlobs, PeakLr, Seed, SplitOpt, TaskOpt, Threads, app,
    check_device, console, fail, option, set_threads,
)
from zooforge.config import ComposeConfig
from zooforge.errors import ZooforgeError
from zooforge.formatting import format_value


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

    set_threads()
    try:
        check_device(device)
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
        fail(exc)
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

    set_threads()
    try:
        check_device(device)
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
        fail(exc)
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
    budget_gmacs: Annotated[Optional[float], option(ComposeConfig, "budget_gmacs")] = ComposeConfig.budget_gmacs,
    budget_params: Annotated[Optional[float], option(ComposeConfig, "budget_params")] = ComposeConfig.budget_params,
    stages: Annotated[int, option(ComposeConfig, "stages")] = ComposeConfig.stages,
    model: ModelGlobs = None,
    epochs: Annotated[int, option(ComposeConfig, "epochs")] = ComposeConfig.epochs,
    stitch_epochs: Annotated[int, option(ComposeConfig, "stitch_epochs")] = ComposeConfig.stitch_epochs,
    lr: PeakLr = 1e-3,
    top_k: Annotated[int, option(ComposeConfig, "top_k")] = ComposeConfig.top_k,
    screen: Annotated[int, option(ComposeConfig, "screen")] = ComposeConfig.screen,
    screen_epochs: Annotated[Optional[int], option(ComposeConfig, "screen_epochs")] = ComposeConfig.screen_epochs,
    compat: Annotated[str, option(ComposeConfig, "compat")] = ComposeConfig.compat,
    seed: Seed = 0,
    baseline: Annotated[bool, option(ComposeConfig, "baseline")] = ComposeConfig.baseline,
    device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="write assembly.safetensors, recipe.json, result.json")] = None,
) -> None:
    """DeRy: assemble blocks of several zoo models into one network within a budget, and train it."""
    from zooforge.reassembly.compose import compose as compose_model

    set_threads()
    try:
        check_device(device)
        config = ComposeConfig(budget_gmacs=budget_gmacs, budget_params=budget_params, stages=stages, models=model,
                               epochs=epochs, stitch_epochs=stitch_epochs, lr=lr, top_k=top_k, screen=screen,
                               screen_epochs=screen_epochs, compat=compat, seed=seed, baseline=baseline, device=device)
        with console.status("cutting blocks, partitioning, solving, stitching and training ..."):
            r = compose_model(catalogue, data, config, out_dir=out)
    except (ZooforgeError, ValueError) as exc:
        fail(exc)
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

    set_threads(threads)
    try:
        check_device(device)
        cfg = SelectConfig(fraction=budget, seconds=budget_seconds, method=method, full_epochs=full_epochs, lr=lr,
                           seed=seed)
        ds = load_dataset(data, split, seed=seed, task=task)
        console.print(f"dataset {ds.summary()}", soft_wrap=True)
        r = select(catalogue, ds, cfg, metrics=metric, models=model, budget_gmacs=budget_gmacs,
                   budget_params=budget_params, out_dir=out, cache_dir=cache_dir, device=device,
                   bootstrap=bootstrap, log=lambda m: console.print(m, soft_wrap=True))
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
    if out:
        from zooforge.selection.rank import write_table

        write_table(rounds_table(r), out / "rounds.parquet")
        console.print(f"wrote {out}/result.json, rounds.parquet, rounds.png, ranking.parquet, trials.jsonl and the chosen "
                      f"model's adapters.safetensors; `zooforge report {out} report.html` writes a report")
