"""The shipped demo truth: complete, consistent with its own runs, reproducible, and used by `zooforge demo`."""

import numpy as np
import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.errors import ZooforgeError
from zooforge.zoo import load_catalogue
from zooforge.zoo.demo.tasks import TARGET_TASKS
from zooforge.demo.truth import PROTOCOL, fine_tune_accuracy, load_truth


def test_truth_covers_every_model_task_and_seed():
    truth = load_truth()
    ids = {e.id for e in load_catalogue("demo")}
    assert set(truth["accuracy"]) == set(TARGET_TASKS)
    runs = {(r["task"], r["model"], r["seed"]): r for r in truth["runs"]}
    assert len(runs) == len(truth["runs"]) == len(ids) * len(TARGET_TASKS) * len(PROTOCOL.seeds)
    for task, per_model in truth["accuracy"].items():
        assert set(per_model) == ids
        for model, acc in per_model.items():
            seeds = [runs[(task, model, s)] for s in PROTOCOL.seeds]
            assert acc == pytest.approx(np.mean([r["accuracy"] for r in seeds]))
            assert all(0.0 <= r["accuracy"] <= 1.0 and r["lr"] in PROTOCOL.lrs for r in seeds)
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
