"""Ranking and judging on regression and multi-label targets."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from zooforge.cli import app
from zooforge.selection.evaluate import evaluate
from zooforge.selection.rank import rank


@pytest.mark.parametrize("spec, kind", [("demo:size?n=60", "regression"), ("demo:tags?n=60", "multilabel")])
def test_rank_scores_other_kinds_with_the_estimators_that_have_their_form(spec, kind):
    table = rank("demo", spec, models=["demo/*-shapes", "demo/*-counting"], bootstrap=10, progress=False)
    assert set(table["ordering"]) == {"rank(linear_probe+logme)"}
    assert table["linear_probe"].is_not_null().all() and table["logme"].is_not_null().all()
    assert "parc" not in table.columns                     # defaults without a form for the kind are left out
    assert table["linear_probe_lo"].is_not_null().all()    # intervals: R^2's influence, mAP's resamples
    assert table["missing_scores"].to_list() == [0] * table.height
    # an estimator asked for by name that has no form for the kind is skipped with the reason
    asked = rank("demo", spec, ["logme", "leep"], models=["demo/*-shapes"], bootstrap=0, progress=False)
    assert asked["leep"].is_null().all()
    assert all(f"leep: defined for classification targets, not {kind}" in s for s in asked["skipped"])


def test_cli_rank_and_tune_take_a_task():
    runner = CliRunner()
    ranked = runner.invoke(app, ["rank", "demo", "demo:counting?n=12", "--task", "regression", "--model",
                                 "demo/*-counting", "--bootstrap", "0", "--json", "-q"])
    assert ranked.exit_code == 0, ranked.output
    rows = json.loads(ranked.stdout)
    assert {r["ordering"] for r in rows} == {"rank(linear_probe+logme)"}
    bad = runner.invoke(app, ["rank", "demo", "demo:counting?n=12", "--task", "ranking"])
    assert bad.exit_code == 1 and "unknown task 'ranking'" in bad.output
    tuned = runner.invoke(app, ["tune", "demo/convnext-shapes", "demo:size?n=60", "--catalogue", "demo",
                                "--epochs", "1"])
    assert tuned.exit_code == 0, tuned.output
    assert "held-out R^2" in tuned.output


def test_evaluate_takes_an_r2_or_map_truth():
    ranking = pl.DataFrame({"model": ["a", "b", "c"], "logme": [3.0, 2.0, 1.0], "logme_rank": [1.0, 2.0, 3.0]})
    judged = evaluate(ranking, pl.DataFrame({"model": ["a", "b", "c"], "r2": [0.9, 0.5, 0.1]}))
    assert judged.filter(pl.col("metric") == "logme")["kendall_tau"][0] == pytest.approx(1.0)
    assert judged.filter(pl.col("metric") == "logme")["top1_regret"][0] == 0.0


def test_select_confirms_a_regression_choice_and_class_only_steps_refuse():
    from zooforge.errors import DatasetError
    from zooforge.reassembly.compose import compose
    from zooforge.selection.aggregate import zootuning
    from zooforge.selection.select import SelectConfig, select

    r = select("demo", "demo:size?n=80", SelectConfig(fraction=0.05, seed=0), models=["demo/*-counting", "demo/*-shapes"],
               bootstrap=0)
    assert r.model in set(r.ranking["model"]) and r.val_accuracy <= 1.0
    with pytest.raises(DatasetError, match="aggregation .* demo:size is a regression target"):
        zootuning("demo", "demo:size?n=40", top_k=2)
    with pytest.raises(DatasetError, match="reassembly .* demo:tags is a multilabel target"):
        compose("demo", "demo:tags?n=40", budget_gmacs=0.01)
