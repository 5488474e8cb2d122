"""The command families' config dataclasses: validation that names field and value, one unit per
quantity, and help text shared by the command line and the API."""

import pytest

from zooforge.config import (AggregateConfig, Budget, ComposeConfig, RankConfig, SelectConfig, TuneConfig,
                             build_config, help_of)
from zooforge.errors import ZooforgeError


def test_budget_is_gmacs_and_millions_of_parameters():
    b = Budget(gmacs=0.5, params_m=0.25)
    assert b.max_params == 250_000
    assert b.fits(0.5, 250_000) and not b.fits(0.5, 250_001) and not b.fits(0.5000001, 1)
    assert Budget().fits(1e9, 10**12) and str(Budget()) == "no budget"
    assert str(b) == "0.5 GMACs and 0.25 M params"
    assert Budget(params_m=0.007).max_params == 7000                 # 0.007 * 1e6 is 6999.999... in floats
    for bad in (0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="`gmacs` must be a positive number"):
            Budget(gmacs=bad)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "compose needs a budget"),
    ({"budget_gmacs": 0.01, "stages": 0}, r"`stages` \(--stages\) must be at least 1; got 0"),
    ({"budget_gmacs": 0.01, "screen_epochs": 0}, r"`screen_epochs` \(--screen-epochs\) must be at least 1; got 0"),
    ({"budget_gmacs": 0.01, "split": 1.0}, r"`split` \(--train-share\) must be between 0 and 1 \(the share of the "
                                           r"data trained on; .*\); got 1.0"),   # --split is a dataset split elsewhere
    ({"budget_gmacs": 0.01, "compat": "cosine"}, r"`compat` \(--compat\) must be one of 'cka', 'stitch'; got 'cosine'"),
    ({"budget_gmacs": 0.01, "screen_evidence": "margin"}, r"`screen_evidence` \(--screen-evidence\) must be one of "
                                                          r"'brier', 'correct', 'p_true', 'loglik'; got 'margin'"),
    ({"budget_gmacs": 0.01, "screen_level": 0.8}, r"`screen_level` \(--screen-level\) must be in \(0, 0.5\] .*; "
                                                  r"got 0.8"),
    ({"budget_gmacs": 0.01, "screen_level": 0}, r"`screen_level` \(--screen-level\) must be in \(0, 0.5\]"),
    ({"budget_params": -2.0}, r"`budget_params` \(--budget-params\) must be a positive number"),
    ({"budget_params": 5e6}, r"`budget_params` \(--budget-params\) is in millions of parameters; 5e\+06 M is 5000 "
                             r"billion. Give millions \(e.g. 5 for 5e\+06 parameters\)"),
])
def test_compose_config_refuses_bad_values_naming_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ComposeConfig(**kwargs)


def test_a_parameter_budget_given_in_parameters_is_refused_by_the_solver_too():
    import numpy as np

    from zooforge.reassembly.solve import Candidate, Problem, solve

    problem = Problem([[Candidate("a", (0, 1), 10, 0.001, 1.0)]], [], [], [])
    assert solve(problem, budget_params=1e-5).status == "OPTIMAL"             # 10 parameters
    assert solve(problem, budget_params=9e-6).status == "INFEASIBLE"
    with pytest.raises(ZooforgeError, match="in millions of parameters"):
        solve(problem, budget_params=2e6)
    assert np.isfinite(solve(problem).solutions[0].objective)


def test_tune_says_where_a_loop_config_goes():
    from zooforge.tuning.loop import TrainConfig
    from zooforge.tuning.tune import tune

    with pytest.raises(TypeError, match="a TrainConfig goes to `loop=`"):
        tune("demo/convnext-shapes", "demo:shapes?n=4", TrainConfig(epochs=1), catalogue="demo")


def test_build_config_names_an_unknown_option_and_applies_overrides():
    base = ComposeConfig(budget_gmacs=0.01)
    assert build_config(ComposeConfig, base, {"stages": 2}, "compose").stages == 2
    assert build_config(ComposeConfig, base, {}, "compose") is base
    with pytest.raises(TypeError, match=r"compose\(\) got unknown option\(s\) 'budget_mparams'"):
        build_config(ComposeConfig, base, {"budget_mparams": 1.0}, "compose")
    with pytest.raises(TypeError, match="must be a ComposeConfig"):
        build_config(ComposeConfig, {"budget_gmacs": 1}, {}, "compose")
    assert ComposeConfig(budget_gmacs=1, models=["a*", "b"]).models == ("a*", "b")


# command -> (config, {CLI parameter name: config field} where they differ)
COMMANDS = {"rank": (RankConfig, {"metric": "metrics", "model": "models", "order": "ordering"}),
            "select": (SelectConfig, {"budget": "fraction", "budget_seconds": "seconds", "metric": "metrics",
                                      "model": "models"}),
            "tune": (TuneConfig, {"target": "targets", "train_share": "split"}),
            "aggregate": (AggregateConfig, {"model": "models", "order": "ordering"}),
            "compose": (ComposeConfig, {"model": "models", "train_share": "split", "order": "ordering"})}


def _options(command: str) -> dict:
    """{config field: click parameter} of one command's options (renamed as COMMANDS says)."""
    import typer

    from zooforge.cli import app

    renamed = COMMANDS[command][1]
    return {renamed.get(p.name, p.name): p for p in typer.main.get_command(app).commands[command].params}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_command_line_takes_the_configs_help_and_defaults(command):
    import dataclasses

    config, _ = COMMANDS[command]
    params = _options(command)
    fields = {f.name: f for f in dataclasses.fields(config)}
    data_options = {"task", "device"} | ({"split"} if command in ("rank", "select") else set())
    shared = set(params) & set(fields) - data_options      # data-reading options share one text
    assert len(shared) >= 6, shared
    for name in shared:
        assert params[name].help == help_of(config, name), (command, name)
        if fields[name].default is not None:
            assert params[name].default == fields[name].default, (command, name)


# fields a command line does not take (Python only), by command; every other field is an option
PYTHON_ONLY = {"rank": {"progress"}, "select": {"progress"}, "aggregate": {"progress"},
               "tune": {"progress"}, "compose": {"progress"}}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_is_an_option_of_its_command(command):
    """A validation error names the option to fix (`max_entrants` (--max-entrants)); the option must
    exist. select's --batch-size, --min-entrants and --max-entrants did not, nor compose's
    --batch-size, --probe, --max-blocks and --compat-weight."""
    import dataclasses

    missing = {f.name for f in dataclasses.fields(COMMANDS[command][0])} - set(_options(command)) - PYTHON_ONLY[command]
    assert not missing, (command, sorted(missing))


@pytest.mark.parametrize("config, kwargs, message", [
    (RankConfig, {"bootstrap": -1}, r"`bootstrap` \(--bootstrap\) must be at least 0; got -1"),
    (RankConfig, {"intervals": "some"}, r"`intervals` \(--intervals\) must be one of 'fast', 'all'; got 'some'"),
    (RankConfig, {"budget_gmacs": 0}, r"`budget_gmacs` \(--budget-gmacs\) must be a positive number"),
    (TuneConfig, {"method": "prefix"}, r"`method` \(--method\) must be one of 'linear', .*; got 'prefix'"),
    (TuneConfig, {"lr": "fast"}, r"`lr` \(--lr\) must be a number or 'auto'; got 'fast'"),
    (TuneConfig, {"lr": "-1e-3"}, r"`lr` \(--lr\) must be positive; got '-1e-3'"),
    (TuneConfig, {"rank": 0}, r"`rank` \(--rank\) must be at least 1; got 0"),
    (TuneConfig, {"alpha": 0.0}, r"`alpha` \(--alpha\) must be a positive number; got 0.0"),
    (TuneConfig, {"scale": float("nan")}, r"`scale` \(--scale\) must be a positive number; got nan"),
    (TuneConfig, {"dropout": 1.0}, r"`dropout` \(--dropout\) is a probability: at least 0 and below 1; got 1.0"),
    (AggregateConfig, {"method": "soup"}, r"`method` \(--method\) must be one of 'btuning'"),
    (AggregateConfig, {"method": "zootuning", "temperature": 0.1},
     r"`temperature` \(--temperature\) only apply to --method btuning"),
    (AggregateConfig, {"strength": "strong"}, r"`strength` \(--strength\) must be a number or 'auto'"),
    (AggregateConfig, {"lr": float("nan")}, r"`lr` \(--lr\) must be a positive number; got nan"),
    (ComposeConfig, {"budget_gmacs": 1, "lr": float("inf")}, r"`lr` \(--lr\) must be a positive number; got inf"),
    (ComposeConfig, {"budget_gmacs": 1, "compat_weight": float("nan")},
     r"`compat_weight` \(--compat-weight\) must be a finite number >= 0"),
    (ComposeConfig, {"budget_gmacs": 1, "compat_weight": -1.0},
     r"`compat_weight` \(--compat-weight\) must be a finite number >= 0"),
    (SelectConfig, {"seconds": float("inf")}, r"`seconds` \(--budget-seconds\) must be a positive number"),
    (SelectConfig, {"seconds": float("nan")}, r"`seconds` \(--budget-seconds\) must be a positive number"),
    (SelectConfig, {"method": "prefix"}, r"`method` \(--method\) must be one of"),
    (SelectConfig, {"lr": "auto"}, r"`lr` \(--lr\) of select's trials is a number"),
    (SelectConfig, {"min_entrants": 3, "max_entrants": 2}, r"`max_entrants` \(--max-entrants\) must be at least 3"),
])
def test_every_config_refuses_a_bad_value_naming_field_and_value(config, kwargs, message):
    with pytest.raises(ZooforgeError, match=message):
        config(**kwargs)


def test_numbers_from_the_command_line_become_numbers_and_lists_become_tuples():
    assert TuneConfig(lr="3e-3").lr == 3e-3 and TuneConfig(lr="auto").lr == "auto"
    assert AggregateConfig(strength="0").strength == 0.0                     # no regulariser is a valid strength
    assert TuneConfig(targets=["qkv", "fc1"]).method_options() == {"targets": ["qkv", "fc1"]}
    assert TuneConfig(rank=4, alpha=8.0).method_options() == {"rank": 4, "alpha": 8.0}
    assert RankConfig(metrics=["logme"]).metrics == ("logme",) and hash(RankConfig(metrics=["logme"]))
    with pytest.raises(TypeError):
        RankConfig("logme")                                                   # keyword-only


def test_aggregate_wires_hub_pathway_candidates_and_btuning_options(monkeypatch):
    import zooforge.selection.aggregate as agg

    seen = {}
    for name in ("btuning", "zootuning", "hubpathway"):
        monkeypatch.setattr(agg, name, lambda *a, _n=name, **kw: seen.setdefault(_n, kw))
    agg.aggregate("demo", "demo:shapes", method="hubpathway", top_k=5)
    assert seen["hubpathway"]["candidates"] == 5 and seen["hubpathway"]["top_k"] == 2
    agg.aggregate("demo", "demo:shapes", method="hubpathway", top_k=1, models=["a", "b", "c"])
    assert seen["hubpathway"]["candidates"] == 5          # (the first call's; setdefault keeps it)
    seen.clear()
    agg.aggregate("demo", "demo:shapes", method="hubpathway", top_k=1, models=["a", "b", "c"])
    assert seen["hubpathway"]["candidates"] is None and seen["hubpathway"]["models"] == ["a", "b", "c"]
    agg.aggregate("demo", "demo:shapes", strength="auto", top_k=4)
    assert seen["btuning"]["strength"] == "auto" and seen["btuning"]["top_k"] == 4
    assert "temperature" not in seen["btuning"]                                 # unset: the method's own default
    loop = seen["btuning"]["config"]
    assert (loop.epochs, loop.lr, loop.batch_size) == (10, 1e-3, 64)


def test_compose_takes_millions_of_parameters_from_the_api_and_the_command_line():
    from typer.testing import CliRunner

    from zooforge.cli import app
    from zooforge.errors import ZooforgeError
    from zooforge.reassembly import compose

    models = ["demo/convnext-shapes", "demo/byobnet-counting"]
    with pytest.raises(ZooforgeError, match="smallest feasible budget is") as api:
        compose("demo", "demo:shapes?n=12", budget_params=0.001, stages=2, epochs=1, models=models, baseline=False)
    args = ["compose", "demo", "demo:shapes?n=12", "--budget-params", "0.001", "--stages", "2", "--epochs", "1"]
    cli = CliRunner().invoke(app, args + [a for m in models for a in ("--model", m)] + ["--no-baseline"],
                             terminal_width=400)
    assert cli.exit_code == 1
    assert str(api.value).split("budget is ")[1].rstrip(".") in " ".join(cli.output.split())
