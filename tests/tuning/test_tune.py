import pytest
import torch

from zooforge.tuning.loop import TrainConfig
from zooforge.tuning.tune import DEFAULT_LR, LR_GRID, choose_by_validation, tune

DATA = "demo:shapes?n=16"
MODEL = "demo/resnet-textures"


def test_choose_by_validation_takes_the_best_and_breaks_ties_by_preference():
    scores = {1: 0.5, 2: 0.8, 3: 0.8, 4: 0.1}
    assert choose_by_validation([1, 2, 3, 4], scores.get, "lr")[0] == 2
    chosen, trials = choose_by_validation([1, 2, 3, 4], scores.get, "x", prefer_larger=True)
    assert chosen == 3 and trials == [{"x": v, "val_accuracy": scores[v]} for v in (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="no lr values"):
        choose_by_validation([], scores.get, "lr")


def test_every_method_has_a_default_rate_inside_its_grid():
    from zooforge.tuning.methods import METHODS

    assert set(DEFAULT_LR) == set(LR_GRID) == set(METHODS)
    assert all(DEFAULT_LR[m] in LR_GRID[m] and list(LR_GRID[m]) == sorted(LR_GRID[m]) for m in METHODS)


def test_auto_lr_is_the_validation_argmax_and_trains_like_that_lr_given():
    cfg = TrainConfig(epochs=2, batch_size=32, progress=False)
    grid = (1e-4, 3e-2)
    auto = tune(MODEL, DATA, "bitfit", catalogue="demo", loop=cfg, lr="auto", lr_grid=grid)
    assert [t["lr"] for t in auto.lr_trials] == list(grid)
    best = max(t["val_accuracy"] for t in auto.lr_trials)
    assert auto.lr == next(t["lr"] for t in auto.lr_trials if t["val_accuracy"] == best)
    given = tune(MODEL, DATA, "bitfit", catalogue="demo", loop=cfg, lr=auto.lr)
    assert given.lr_trials == [] and given.accuracy == auto.accuracy
    for (name, a), b in zip(auto.task.state_dict().items(), given.task.state_dict().values()):
        assert torch.equal(a, b), name


def test_lr_defaults_per_method_and_bad_values_are_named():
    r = tune(MODEL, DATA, "linear", catalogue="demo")
    assert r.lr == DEFAULT_LR["linear"]
    with pytest.raises(ValueError, match="'auto'"):
        tune(MODEL, DATA, "linear", catalogue="demo", lr="fast")
    with pytest.raises(ValueError, match="positive"):
        tune(MODEL, DATA, "linear", catalogue="demo", lr=0.0)


def test_tune_cli_auto_prints_the_trials_and_refuses_a_bad_lr():
    from typer.testing import CliRunner

    from zooforge.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["tune", MODEL, DATA, "--catalogue", "demo", "--method", "lora", "--rank", "2",
                             "--epochs", "1", "--lr", "auto"])
    assert ok.exit_code == 0, ok.output
    assert "lr by validation" in ok.output and "chose" in ok.output and "held-out accuracy" in ok.output
    bad = runner.invoke(app, ["tune", MODEL, DATA, "--catalogue", "demo", "--lr", "fast"])
    assert bad.exit_code != 0 and "(--lr) must be a number or 'auto'" in bad.output


def test_tune_cli_passes_the_methods_options_grid_and_training_share(tmp_path):
    """--alpha, --dropout, --lr-grid and --train-share were Python-only; result.json records them."""
    import json

    from typer.testing import CliRunner

    from zooforge.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["tune", MODEL, DATA, "--catalogue", "demo", "--method", "lora", "--rank", "2",
                             "--alpha", "4", "--dropout", "0.1", "--epochs", "1", "--lr", "auto", "--lr-grid", "1e-4",
                             "--lr-grid", "3e-3", "--train-share", "0.5", "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    record = json.loads((tmp_path / "result.json").read_text())
    assert [t["lr"] for t in record["lr_trials"]] == [1e-4, 3e-3]
    assert record["method_options"] == {"rank": 2, "alpha": 4.0, "dropout": 0.1}
    assert record["train_share"] == 0.5 and record["train_samples"] == record["test_samples"] == 32
    bad = runner.invoke(app, ["tune", MODEL, DATA, "--catalogue", "demo", "--train-share", "1.5"])
    assert bad.exit_code != 0 and "`split` (--train-share) must be between 0 and 1" in " ".join(bad.output.split())


def test_a_demo_id_without_its_catalogue_suggests_it():
    from zooforge.errors import ZooforgeError
    from zooforge.tuning.tune import resolve_entry

    with pytest.raises(ZooforgeError, match=r"did you mean --catalogue demo\?"):
        resolve_entry("demo/convnext-counting")


@pytest.mark.parametrize("model", ["demo/effnet-shapes", "demo/convnext-shapes", "demo/resnet-colour",
                                   "demo/vit-glyphs", "demo/mambaout-colour", "demo/byobnet-counting"])
def test_every_demo_architecture_tunes_with_a_checkpoint_and_its_rerun_resumes_it(tmp_path, model):
    """Checkpointing hashed every tensor of the state dict, and a batch norm's 0-d step counter broke
    the hash (ResNet, EfficientNet); 33 training rows in batches of 32 left a batch of one, which batch
    norm cannot train on. Every demo architecture must get through both."""
    data = "demo:shapes?n=10"                              # 40 images, 80% train: 32 + the stratified rest
    first = tune(model, data, "full", catalogue="demo", epochs=1, batch_size=31, out_dir=tmp_path)
    assert (tmp_path / "checkpoint").exists() and 0.0 <= first.accuracy <= 1.0
    again = tune(model, data, "full", catalogue="demo", epochs=1, batch_size=31, out_dir=tmp_path)
    assert again.accuracy == first.accuracy                 # resumed from the finished checkpoint, not retrained
