"""select: successive halving on a synthetic problem with known truth, the budget, entrants from the
ranking's intervals, resume after SIGKILL without repeating trials, and its errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from zooforge.errors import ZooforgeError
from zooforge.selection.select import (SelectConfig, _schedule_cost, entrants, plan_schedule, select,
                                       successive_halving)


def _noisy_arms(truth, seed=0):
    """trial(arm, epochs): the arm's true accuracy plus noise that shrinks as 1/sqrt(epochs), and a
    learning curve that rises towards it."""
    rng = np.random.default_rng(seed)
    calls = []

    def trial(arm, epochs, round_):
        calls.append((arm, epochs))
        return truth[arm] * (1 - 0.5 / (1 + epochs)) + rng.normal(0, 0.02 / np.sqrt(epochs))

    return trial, calls


@pytest.mark.parametrize("seed", range(5))
def test_halving_keeps_the_best_arm(seed):
    # the best arm leads the rest by at least 0.1 (5 noise standard deviations at one epoch); the
    # others are anywhere below it, close to each other
    rng = np.random.default_rng(100 + seed)
    truth = {f"m{i}": float(a) for i, a in enumerate(rng.uniform(0.4, 0.8, 8))}
    best = f"m{rng.integers(8)}"
    truth[best] = 0.9
    arms = list(rng.permutation(list(truth)))                 # the ranking's order is not the truth's
    trial, calls = _noisy_arms(truth, seed)
    winner, rows = successive_halving(arms, 1, trial)
    assert winner == best
    assert [len([r for r in rows if r["round"] == k]) for k in range(3)] == [8, 4, 2]   # halves each round
    assert {r["epochs"] for r in rows if r["round"] == 2} == {4}


def test_ties_go_to_the_ranking_order():
    winner, _ = successive_halving(["a", "b", "c"], 1, lambda arm, epochs, r: 0.5)
    assert winner == "a"


def test_schedule_fits_the_budget_to_within_one_round():
    costs = [5.0, 1.0, 3.0, 2.0, 4.0, 1.0]
    for budget in (6.0, 20.0, 50.0, 200.0, 1000.0):
        n, e0 = plan_schedule(costs, budget)
        assert n >= 1 and _schedule_cost(costs[:n], e0) <= budget
        assert _schedule_cost(costs[:n], e0 + 1) > budget                        # the largest e0 that fits
        if n < len(costs):
            assert _schedule_cost(costs[:n + 1], 1) > budget                     # the most arms that fit
        spent = []
        successive_halving([str(i) for i in range(n)], e0,
                           lambda arm, epochs, r: spent.append(epochs * costs[int(arm)]) or -int(arm))
        assert sum(spent) <= budget                                             # the bound holds for real runs
    assert plan_schedule(costs, 0.5) == (0, 0)


def test_entrants_follow_the_ranking_intervals():
    table = pl.DataFrame({"model": ["a", "b", "c", "d", "e"], "error": [None, None, None, "boom", None],
                          "logme": [1.0, 0.9, 0.5, 0.95, 0.8], "logme_lo": [0.8, 0.7, 0.4, 0.9, 0.6],
                          "logme_hi": [1.2, 1.0, 0.6, 1.0, 0.85], "within_budget": [True, True, True, True, True]},
                         schema_overrides={"error": pl.Utf8})
    assert entrants(table, "logme") == ["a", "b", "e"]                 # c is clearly worse; d failed
    narrow = table.with_columns(pl.lit(1.1).alias("logme_lo"))
    assert entrants(narrow, "logme", min_entrants=2) == ["a", "b"]     # none overlaps: the minimum
    assert entrants(table, "logme", max_entrants=2) == ["a", "b"]


def test_select_on_the_demo_zoo_resumes_without_repeating_trials(tmp_path):
    models = ["demo/effnet-shapes", "demo/effnet-glyphs", "demo/convnext-shapes", "demo/resnet-random"]
    cfg = SelectConfig(fraction=0.1, method="linear")
    kwargs = dict(models=models, metrics=["logme"], bootstrap=10, cache_dir=tmp_path / "c", progress=False)
    first = select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **kwargs)
    assert first.model in models and 0 < first.spent <= 0.1 * first.fine_tune_all
    assert (tmp_path / "s" / "adapters.safetensors").is_file()
    lines = (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    assert len(lines) == len(first.rounds) and len({json.loads(x)["key"] for x in lines}) == len(lines)
    again = select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **kwargs)
    assert again.model == first.model and again.rounds == first.rounds
    assert len((tmp_path / "s" / "trials.jsonl").read_text().splitlines()) == len(lines)   # nothing re-run
    recorded = json.loads((tmp_path / "s" / "result.json").read_text())
    assert recorded["model"] == first.model and recorded["spent_fraction"] <= 0.1
    # the report section: the choice, every round, the plot by round and the ranking it started from
    from zooforge.selection.report import write_report

    html = write_report(tmp_path / "s", tmp_path / "select.html").read_text()
    assert (tmp_path / "s" / "rounds.png").stat().st_size > 1000
    assert f"Chose {first.model}" in html and "validation accuracy by round" in html
    assert html.count("<tr") >= len(first.rounds) + len(models) and "data:image/png;base64" in html


def test_select_refuses_a_budget_too_small_and_says_what_fits(tmp_path):
    with pytest.raises(ZooforgeError, match=r"cannot pay for one epoch of one model.*--budget \d"):
        select("demo", "demo:shapes?n=6", SelectConfig(fraction=1e-6, method="full"), models=["demo/effnet-*"],
               metrics=["logme"], bootstrap=0, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ZooforgeError, match=r"`fraction` \(--budget\) must be in \(0, 1\]"):
        SelectConfig(fraction=1.5)
    with pytest.raises(ZooforgeError, match="give a budget"):
        SelectConfig(fraction=None, seconds=None)


def test_select_resumes_after_sigkill(tmp_path):
    out = tmp_path / "s"
    env = os.environ | {"ZOOFORGE_CACHE_DIR": str(tmp_path / "c"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zooforge.cli", "select", "demo", "demo:shapes?n=16", "--budget", "0.3",
           "--method", "full", "--bootstrap", "0", "-m", "logme", "--out", str(out),
           "--model", "demo/effnet-*", "--model", "demo/convnext-shapes"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = out / "trials.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.is_file() and len(ledger.read_text().splitlines()) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert before, "the kill came before the first trial finished"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = [json.loads(x) for x in ledger.read_text().splitlines()]
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys))                                  # no finished trial ran twice
    assert after[:len(before)] == before
    assert json.loads((out / "result.json").read_text())["model"] in {r["model"] for r in after}


def test_a_time_budget_alone_runs_and_stops(tmp_path):
    cfg = SelectConfig(fraction=None, seconds=1e-9, method="linear")      # spent after the first trial
    r = select("demo", "demo:shapes?n=6", cfg, models=["demo/effnet-*"], metrics=["logme"], bootstrap=0,
               cache_dir=tmp_path / "c", progress=False)
    assert len(r.rounds) == 1 and r.model == r.rounds[0]["model"]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13])
def test_the_progress_total_is_the_number_of_trials_halving_runs(n):
    from zooforge.selection.select import halving_trials

    calls = []
    successive_halving([f"m{i}" for i in range(n)], 1, lambda arm, epochs, r: calls.append(arm) or -len(arm))
    assert halving_trials(n) == len(calls)
