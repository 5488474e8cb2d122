"""The shipped demo truth: complete, consistent with its own runs, reproducible, and used by `zooforge demo`."""

import numpy as np
import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.errors import ZooforgeError
from zooforge.zoo import load_catalogue
from zooforge.zoo.demo.kinds import KIND_TASKS
from zooforge.zoo.demo.tasks import TARGET_TASKS
from zooforge.demo.truth import PROTOCOL, fine_tune_accuracy, load_truth


def test_truth_covers_every_model_task_and_seed():
    truth = load_truth()
    ids = {e.id for e in load_catalogue("demo")}
    tasks = [*TARGET_TASKS, *KIND_TASKS]                  # the class tasks, then size (R^2) and tags (mAP)
    assert set(truth["accuracy"]) == set(tasks)
    runs = {(r["task"], r["model"], r["seed"]): r for r in truth["runs"]}
    assert len(runs) == len(truth["runs"]) == len(ids) * len(tasks) * len(PROTOCOL.seeds)
    for task, per_model in truth["accuracy"].items():
        assert set(per_model) == ids
        for model, acc in per_model.items():
            seeds = [runs[(task, model, s)] for s in PROTOCOL.seeds]
            assert acc == pytest.approx(np.mean([r["accuracy"] for r in seeds]))
            # accuracy and mAP lie in [0, 1]; R^2 may fall below 0
            assert all((task == "size" or 0.0 <= r["accuracy"]) and r["accuracy"] <= 1.0 and r["lr"] in PROTOCOL.lrs
                       for r in seeds)
    # transfer is real: on shapes, a model pre-trained on shapes beats the random-init ConvNeXt
    shapes = truth["accuracy"]["shapes"]
    assert shapes["demo/convnext-shapes"] > shapes["demo/convnext-random"]


def test_one_cell_reproduces_the_shipped_number():
    """Rerun the protocol for one (model, task, seed): same learning rate chosen, same test accuracy
    up to a few test images (CPU kernels may differ between machines)."""
    entry = next(e for e in load_catalogue("demo") if e.id == "demo/effnet-shapes")
    shipped = next(r for r in load_truth()["runs"]
                   if (r["model"], r["task"], r["seed"]) == ("demo/effnet-shapes", "counting", 0))
    again = fine_tune_accuracy(entry, "counting", 0)
    assert again["lr"] == shipped["lr"]
    assert again["accuracy"] == pytest.approx(shipped["accuracy"], abs=0.03)


def test_missing_truth_file_says_how_to_rebuild(tmp_path):
    with pytest.raises(ZooforgeError, match="python -m zooforge.demo.truth"):
        load_truth(tmp_path / "none.json")


def test_demo_command_prints_kendall_tau_per_estimator(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--task", "counting", "--per-class", "12", "--bootstrap", "5",
                                      "--cache-dir", str(tmp_path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "estimators vs fine-tuned accuracy on counting" in result.output and "Kendall τ" in result.output
    for metric in ("logme", "leep", "hscore_shrink", "ensemble_z"):
        assert metric in result.output
    assert "Best fine-tuned model: demo/byobnet-counting" in result.output
    # the top line quotes the score of the estimator that decided the first row (the probe), not LogME's
    top = " ".join(result.output.split("Top model by", 1)[1].split())
    assert "(linear_probe " in top and "LogME" not in top


def test_truth_runs_are_keyed_on_everything_that_determines_them():
    from dataclasses import replace

    from zooforge.demo.truth import run_key

    entry = next(e for e in load_catalogue("demo") if e.id == "demo/effnet-shapes")
    base = run_key(entry, "counting", 0)
    assert run_key(entry, "counting", 0) == base
    assert run_key(entry, "counting", 1) != base
    assert run_key(replace(entry, crop_pct=0.5), "counting", 0) != base              # other preprocessing
    other = next(e for e in load_catalogue("demo") if e.id == "demo/effnet-glyphs")
    assert run_key(replace(entry, checkpoint=other.checkpoint), "counting", 0) != base   # other weights, same id
    assert run_key(entry, "counting", 0, replace(PROTOCOL, epochs=PROTOCOL.epochs + 1)) != base


@pytest.mark.parametrize("task", ["size", "tags"])
def test_the_truth_protocol_scores_regression_and_multilabel_tasks_by_their_metric(task):
    from zooforge.demo.truth import Protocol, fine_tune_accuracy
    from zooforge.zoo import load_catalogue

    entry = next(e for e in load_catalogue("demo") if e.id == "demo/convnext-shapes")
    protocol = Protocol(train_per_class=40, test_per_class=20, epochs=1, lrs=(1e-3,), seeds=(0,))
    run = fine_tune_accuracy(entry, task, 0, protocol)
    # R^2 can be negative after one epoch; mAP lies in (0, 1]
    assert np.isfinite(run["accuracy"]) and run["accuracy"] <= 1.0
    assert task == "size" or run["accuracy"] > 0
