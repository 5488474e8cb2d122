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
from zooforge.selection.halving import (entrants, halving_rounds, plan_schedule, round_epochs, schedule_cost,
                                        successive_halving)
from zooforge.selection.select import SelectConfig, select


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
    winner, rows = successive_halving(arms, round_epochs(8, 4), trial)
    assert winner == best
    assert [len([r for r in rows if r["round"] == k]) for k in range(3)] == [8, 4, 2]   # halves each round
    assert {r["epochs"] for r in rows if r["round"] == 2} == {4}


def test_ties_go_to_the_ranking_order():
    winner, _ = successive_halving(["a", "b", "c"], [1, 1], lambda arm, epochs, r: 0.5)
    assert winner == "a"


def test_the_leader_survives_every_round_and_the_last_round_is_decided_on_the_finalists():
    arms = [f"m{i}" for i in range(8)]                                # m0 leads the ranking, scores worst
    seen = {}

    def decide(finalists, scores):
        seen.update(finalists=finalists, scores=scores)
        return finalists[0]

    winner, rows = successive_halving(arms, round_epochs(8, 8), lambda arm, epochs, r: int(arm[1:]),
                                      incumbent="m0", decide=decide)
    assert [sorted(r["model"] for r in rows if r["round"] == k) for k in range(3)] == [
        arms, ["m0", "m5", "m6", "m7"], ["m0", "m7"]]                   # it takes the last survivor's place
    assert winner == "m0" and seen["finalists"] == ["m0", "m7"] and seen["scores"] == {"m0": 0, "m7": 7}
    assert [r["epochs"] for r in rows if r["model"] == "m0"] == [2, 4, 8]
    with pytest.raises(ValueError, match="8 arms take 3 round"):
        successive_halving(arms, [1, 2], lambda arm, epochs, r: 0.0)


def test_a_challenger_replaces_the_ranking_leader_only_on_a_clear_lead():
    """Four arms scored on the same 150 validation samples; the leader's true accuracy is 0.7. Equal
    challengers (the null): the leader stays in at least 93% of 400 draws although some challenger
    outscores it on validation in about half of them; a challenger 20 points better replaces it in 95%."""
    import torch

    from zooforge.tuning.paired import keep

    def run(gain, seed):
        rng = np.random.default_rng(seed)
        truth = {"lead": 0.7, "b": 0.7 + gain, "c": 0.65, "d": 0.6}
        evidence = {}

        def trial(arm, epochs, r):
            evidence[arm] = torch.as_tensor(rng.random(150) < truth[arm], dtype=torch.float64)
            return float(evidence[arm].mean())

        def decide(finalists, scores):
            return finalists[keep([evidence[m] for m in finalists], finalists.index("lead"))[0]]

        winner, _ = successive_halving(list(truth), [1, 2], trial, incumbent="lead", decide=decide)
        return winner, max(evidence, key=lambda a: float(evidence[a].mean())) != "lead"

    null = [run(0.0, s) for s in range(400)]
    assert np.mean([w == "lead" for w, _ in null]) >= 0.93
    assert np.mean([beaten for _, beaten in null]) > 0.4          # validation alone would switch in about half
    assert np.mean([run(0.2, s)[0] == "b" for s in range(400)]) >= 0.95


def test_only_a_full_length_trial_overturns_the_ranking():
    """A challenger that wins the paired test replaces the leader when its trial was as long as the
    fine-tune it stands for; after 4 of 10 epochs it only prunes, and the decision says why."""
    import torch

    from zooforge.selection.halving import final_choice
    from zooforge.selection.select import decision_sentence

    rng = np.random.default_rng(0)
    leader = torch.as_tensor(rng.random(300) < 0.6, dtype=torch.float64)
    strong = torch.as_tensor(rng.random(300) < 0.9, dtype=torch.float64)
    full = final_choice([leader, strong], 0, epochs=10, full_epochs=10)
    assert (full["kept"], full["challenger"], full["passed"], full["full_length"]) == (1, 1, True, True)
    short = final_choice([leader, strong], 0, epochs=4, full_epochs=10)
    assert (short["kept"], short["passed"], short["full_length"]) == (0, True, False)
    assert short["lead"] == pytest.approx(full["lead"]) and short["lead"] > 1.65
    tie = final_choice([leader, leader.clone()], 0, epochs=10, full_epochs=10)
    assert (tie["kept"], tie["passed"]) == (0, False)
    assert final_choice([leader, strong], None, epochs=4, full_epochs=10)["kept"] == 1    # no leader left: the best
    sentence = decision_sentence({"leader": "a", "challenger": "b", "chosen": "a", "lead_se": short["lead"],
                                  "margin_se": 1.64, "passed": True, "epochs": 4, "full_epochs": 10,
                                  "full_length_budget": 0.12})
    assert "after 4 of the fine-tune's 10 epochs" in sentence and "a budget of 0.12" in sentence


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 16])
def test_rounds_double_the_epochs_and_end_at_the_final(n):
    epochs = round_epochs(n, 10)
    assert len(epochs) == halving_rounds(n) and epochs[-1] == 10
    assert all(a <= b <= 2 * a for a, b in zip(epochs, epochs[1:])) and epochs[0] >= 1


def test_schedule_fits_the_budget_and_buys_models_before_epochs():
    costs = [5.0, 1.0, 3.0, 2.0, 4.0, 1.0]
    for min_arms in (1, 2, 4):
        for budget in (6.0, 20.0, 50.0, 100.0, 200.0, 1000.0):
            n, epochs = plan_schedule(costs, budget, min_arms=min_arms, max_epochs=8)
            assert n >= 1 and schedule_cost(costs[:n], epochs) <= budget
            assert epochs == round_epochs(n, epochs[-1]) and epochs[-1] <= 8
            if epochs[-1] == 8 and n < len(costs):                   # full length: the most models that fit
                assert schedule_cost(costs[:n + 1], round_epochs(n + 1, 8)) > budget
            if epochs[-1] < 8:                                       # shorter only for the models that must enter
                assert n <= min_arms and schedule_cost(costs[:n], round_epochs(n, epochs[-1] + 1)) > budget
                assert schedule_cost(costs[:min(min_arms, len(costs))], round_epochs(min_arms, 8)) > budget
            if n < min_arms:                                        # fewer only when not one epoch each fits
                assert schedule_cost(costs[:n + 1], round_epochs(n + 1, 1)) > budget
            spent = []
            successive_halving([str(i) for i in range(n)], epochs,
                               lambda arm, e, r: spent.append(e * costs[int(arm)]) or -int(arm), incumbent="0")
            assert sum(spent) <= budget                                     # the bound holds for real runs
    assert plan_schedule(costs, 0.5, min_arms=2) == (0, [])
    assert plan_schedule(costs, 1000.0, min_arms=2, max_epochs=8)[0] == len(costs)     # a large budget: all of them


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
    assert first.decision["chosen"] == first.model and first.decision["leader"] == first.entrants[0]
    assert first.entrants[0] == first.ranking["model"][0]                 # the leader is the ranking's first
    recorded = json.loads((tmp_path / "s" / "result.json").read_text())
    assert recorded["model"] == first.model and recorded["spent_fraction"] <= 0.1
    # the report section: the choice, every round, the plot by round and the ranking it started from
    from zooforge.selection.report import write_report

    html = write_report(tmp_path / "s", tmp_path / "select.html").read_text()
    assert (tmp_path / "s" / "rounds.png").stat().st_size > 1000
    assert f"Chose {first.model}" in html and "validation accuracy by round" in html
    assert html.count("<tr") >= len(first.rounds) + len(models) and "data:image/png;base64" in html


def test_a_rerun_reuses_its_ranking_and_weights_only_when_what_they_depend_on_matches(tmp_path, monkeypatch):
    import importlib

    import torch

    rank_module = importlib.import_module("zooforge.selection.rank")  # the package exports a function of that name
    cfg = SelectConfig(fraction=0.1, method="linear")
    kwargs = dict(models=["demo/effnet-shapes", "demo/convnext-shapes", "demo/resnet-random"], metrics=["logme"],
                  bootstrap=10, cache_dir=tmp_path / "c", progress=False)
    first = select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **kwargs)

    def ranked_again(*args, **kw):
        raise AssertionError("ranked again")

    monkeypatch.setattr(rank_module, "rank", ranked_again)
    loop = importlib.import_module("zooforge.tuning.loop")
    trained = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("trained again")))
    said = []
    again = select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", log=said.append, **kwargs)
    assert again.model == first.model and again.rounds == first.rounds and again.ranking.equals(first.ranking)
    assert any("reusing the ranking" in m for m in said)
    for (name, a), b in zip(first.task.state_dict().items(), again.task.state_dict().values()):   # the saved
        assert torch.equal(a, b), name                                                            # weights
    (tmp_path / "s" / "chosen.json").write_text('{"key": "another trial"}')     # weights of another trial:
    with pytest.raises(AssertionError, match="trained again"):                 # the winner trains again
        select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **kwargs)
    monkeypatch.setattr(loop, "train", trained)
    for changed in ({"metrics": ["leep"]}, {"bootstrap": 0}, {"models": kwargs["models"][:2]}):
        with pytest.raises(AssertionError, match="ranked again"):
            select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **(kwargs | changed))
    with pytest.raises(AssertionError, match="ranked again"):                  # other data
        select("demo", "demo:shapes?n=14", cfg, out_dir=tmp_path / "s", **kwargs)
    (tmp_path / "s" / "ranking.json").write_text('{"ke')                        # cut by a kill: rank again
    with pytest.raises(AssertionError, match="ranked again"):
        select("demo", "demo:shapes?n=12", cfg, out_dir=tmp_path / "s", **kwargs)


def test_a_diverged_trial_is_last_and_a_choice_that_diverged_is_refused(tmp_path):
    # at lr 1e9 every trial trains to NaN: select used to choose among NaN models by their chance
    # accuracy (or, for R^2, by NaN, which sorts anywhere) and report the choice
    said = []
    with pytest.raises(ZooforgeError, match=r"the trial of demo/\S+, the choice, diverged at lr 1e\+09"):
        select("demo", "demo:shapes?n=6", SelectConfig(fraction=0.5, method="full", lr=1e9), models=["demo/effnet-*"],
               metrics=["logme"], bootstrap=0, cache_dir=tmp_path / "c", progress=False, log=said.append)
    assert any("diverged, last (the training loss became nan" in line for line in said)


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
    successive_halving([f"m{i}" for i in range(n)], round_epochs(n, 1),
                       lambda arm, epochs, r: calls.append(arm) or -len(arm))
    assert halving_trials(n) == len(calls)
