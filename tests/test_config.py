"""The command families' config dataclasses: validation that names field and value, one unit per
quantity, and help text shared by the command line and the API."""

import pytest

from zooforge.config import Budget, ComposeConfig, build_config, help_of


def test_budget_is_gmacs_and_millions_of_parameters():
    b = Budget(gmacs=0.5, params_m=0.25)
    assert b.max_params == 250_000
    assert b.fits(0.5, 250_000) and not b.fits(0.5, 250_001) and not b.fits(0.5000001, 1)
    assert Budget().fits(1e9, 10**12) and str(Budget()) == "no budget"
    assert str(b) == "0.5 GMACs and 0.25 M params"
    assert Budget(params_m=0.007).max_params == 7000                 # 0.007 * 1e6 is 6999.999... in floats
    for bad in (0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="budget `gmacs` must be a positive number"):
            Budget(gmacs=bad)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "compose needs a budget"),
    ({"budget_gmacs": 0.01, "stages": 0}, "`stages` must be at least 1; got 0"),
    ({"budget_gmacs": 0.01, "screen_epochs": 0}, "`screen_epochs` must be at least 1; got 0"),
    ({"budget_gmacs": 0.01, "split": 1.0}, "`split` must be between 0 and 1; got 1.0"),
    ({"budget_gmacs": 0.01, "compat": "cosine"}, "'stitch' or 'cka'; got 'cosine'"),
    ({"budget_params": -2.0}, "budget `params_m` must be a positive number"),
])
def test_compose_config_refuses_bad_values_naming_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ComposeConfig(**kwargs)


def test_build_config_names_an_unknown_option_and_applies_overrides():
    base = ComposeConfig(budget_gmacs=0.01)
    assert build_config(ComposeConfig, base, {"stages": 2}, "compose").stages == 2
    assert build_config(ComposeConfig, base, {}, "compose") is base
    with pytest.raises(TypeError, match=r"compose\(\) got unknown option\(s\) 'budget_mparams'"):
        build_config(ComposeConfig, base, {"budget_mparams": 1.0}, "compose")
    with pytest.raises(TypeError, match="must be a ComposeConfig"):
        build_config(ComposeConfig, {"budget_gmacs": 1}, {}, "compose")
    assert ComposeConfig(budget_gmacs=1, models=["a*", "b"]).models == ("a*", "b")


def test_the_command_line_takes_the_configs_help_and_defaults():
    import dataclasses

    import typer

    from zooforge.cli import app

    command = typer.main.get_command(app).commands["compose"]
    options = {p.name: p for p in command.params}
    checked = 0
    for f in dataclasses.fields(ComposeConfig):
        if f.name in options:
            assert options[f.name].help == help_of(ComposeConfig, f.name), f.name
            assert options[f.name].default == f.default, f.name
            checked += 1
    assert checked >= 10


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
