import numpy as np
import pytest
import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.selection.aggregate import btuning, hubpathway, save_result, zootuning
from zooforge.selection.aggregate.btuning import teacher_weights
from zooforge.selection.aggregate.hubpathway import cv_squared
from zooforge.selection.aggregate.zootuning import AggregatedLayer, aggregate_models
from zooforge.tuning.loop import TrainConfig

CFG = TrainConfig(epochs=2, batch_size=32, lr=2e-3, progress=False)
DATA = "demo:shapes?n=24"


def test_teacher_weights_are_a_tempered_softmax():
    pi = teacher_weights([-0.3, -0.4, -0.5], temperature=0.1)
    assert pi.sum() == pytest.approx(1.0)
    assert pi[0] / pi[1] == pytest.approx(np.exp(1.0))            # exp((−0.3 + 0.4) / 0.1)
    assert np.all(np.diff(pi) < 0)
    flat = teacher_weights([-0.3, -0.4, -0.5], temperature=100.0)
    assert np.allclose(flat, 1 / 3, atol=1e-3)


@pytest.mark.parametrize("kind", ["conv", "grouped", "linear"])
def test_aggregated_layer_is_the_per_sample_mixture_of_kernels(kind):
    torch.manual_seed(0)
    make = {"conv": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
            "grouped": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2),
            "linear": lambda: nn.Linear(5, 3)}[kind]
    layers = [make() for _ in range(3)]
    agg = AggregatedLayer(layers, align=True)
    with torch.no_grad():                                          # non-trivial gates and alignment
        agg.gate[2].weight.normal_()
        agg.align.add_(0.1 * torch.randn_like(agg.align))
    x = torch.randn(4, 4, 9, 9) if kind != "linear" else torch.randn(4, 7, 5)
    y = agg(x)
    g = agg.last_gates
    torch.testing.assert_close(g.sum(-1), torch.ones(4))
    for b in range(4):                                             # each sample: Σ_k g_k (A_k W_k)
        w, bias = agg.folded(g[b])
        ref = (nn.functional.conv2d(x[b:b + 1], w, bias, layers[0].stride, layers[0].padding, 1, layers[0].groups)
               if kind != "linear" else nn.functional.linear(x[b:b + 1], w, bias))
        torch.testing.assert_close(y[b:b + 1], ref, rtol=1e-4, atol=1e-5)


def test_aggregating_copies_of_one_model_is_that_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 2)).eval()
    net[1].running_mean.normal_()
    agg = aggregate_models([net, net, net]).eval()
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(agg(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("copies", [1, 3])
def test_zootuning_of_one_expert_or_copies_of_it_is_plain_fine_tuning(copies):
    """Issue #20: aggregation that cannot reproduce its one member's fine-tuning is broken. Trained
    the same way (same head init, data order, optimiser), Zoo-Tuning of k copies of an expert ends
    where plain fine-tuning of the expert ends; with the learned channel alignment it does not."""
    from zooforge.selection.aggregate.zootuning import ZooTuned
    from zooforge.tuning.loop import train
    from zooforge.tuning.methods import MethodConfig, TaskModel, inputs_for
    from zooforge.zoo import load_catalogue, load_dataset
    from zooforge.zoo.backbone import Backbone

    entry = next(e for e in load_catalogue("demo") if e.id == "demo/convnext-shapes")
    ds = load_dataset("demo:shapes?n=8")
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=8, seed=0, device="cpu", progress=False)
    x, y = inputs_for(Backbone.from_entry(entry), ds), torch.as_tensor(ds.labels)

    def fine_tuned(make):
        model = make()
        train(model, x, y, cfg)
        with torch.no_grad():
            return model.eval()(x)

    def plain():
        backbone = Backbone.from_entry(entry)
        torch.manual_seed(5)
        return TaskModel(backbone, 4, MethodConfig("full"))

    def zoo(align):
        members = [Backbone.from_entry(entry) for _ in range(copies)]
        body = aggregate_models([m.model for m in members], {"head.fc"}, align=align)
        torch.manual_seed(5)
        return ZooTuned(members[0].with_model(body), 4, MethodConfig("full"))

    reference = fine_tuned(plain)
    scale = float(reference.abs().max())
    assert float((fine_tuned(lambda: zoo(False)) - reference).abs().max()) < 1e-3 * scale
    assert float((fine_tuned(lambda: zoo(True)) - reference).abs().max()) > 0.05 * scale


def test_btuning_runs_and_its_weights_sum_to_one(tmp_path):
    r = btuning("demo", DATA, top_k=2, config=CFG)
    assert len(r.members) == 2 and sum(r.weights) == pytest.approx(1.0)
    assert r.extra["student"] == max(r.extra["logme"], key=r.extra["logme"].get)
    assert 0.0 <= r.accuracy <= 1.0 and r.trainable_params > 0
    save_result(r, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "result.json").is_file()


def test_zootuning_same_architecture_gates_sum_to_one_and_collapse():
    r = zootuning("demo", DATA, models=["demo/convnext-*"], config=CFG)   # 3 trained + 1 random, no head
    assert len(r.members) == 4 and sum(r.weights) == pytest.approx(1.0, abs=1e-5)
    assert r.extra["collapsed_params"] < r.total_params           # one plain network of the base size
    assert r.extra["layers"] > 5


def test_zootuning_refuses_mixed_architectures():
    with pytest.raises(ZooforgeError, match="one architecture"):
        zootuning("demo", DATA, models=["demo/vit-glyphs", "demo/resnet-colour"], config=CFG)


def test_hubpathway_heterogeneous_routing_sums_to_one():
    r = hubpathway("demo", DATA, models=["demo/vit-glyphs", "demo/resnet-colour", "demo/effnet-shapes"],
                   top_k=2, config=CFG)
    assert sum(r.weights) == pytest.approx(1.0, abs=1e-5)
    model = r.model.eval()
    x = torch.rand(6, 3, 32, 32)
    w = model.routing(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(6))
    assert ((w > 0).sum(-1) == 2).all()                              # exactly top-k models per input
    assert model(x).shape == (6, 4)


def test_load_balance_term():
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    assert cv_squared(torch.tensor([6.0, 0.0, 0.0])).item() == pytest.approx(2.0)   # var 8 / mean² 4


def test_btuning_strength_zero_is_plain_fine_tuning_of_the_student():
    """λ = 0 removes the regulariser: the same student, data, seed and loop as a plain full fine-tune."""
    from zooforge.tuning.tune import tune

    r = btuning("demo", DATA, top_k=2, config=CFG, strength=0.0)
    plain = tune(r.extra["student"], DATA, "full", catalogue="demo", loop=CFG)
    assert r.accuracy == pytest.approx(plain.accuracy, abs=1e-9)


def test_aggregate_cli_passes_strength_to_btuning_only():
    from typer.testing import CliRunner

    from zooforge.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["aggregate", "demo", DATA, "--method", "btuning", "--top-k", "2", "--epochs", "1",
                             "--strength", "1.5", "--temperature", "0.5"])
    assert ok.exit_code == 0, ok.output
    auto = runner.invoke(app, ["aggregate", "demo", DATA, "--method", "btuning", "--top-k", "2", "--epochs", "1",
                               "--strength", "auto"])
    assert auto.exit_code == 0, auto.output
    assert "strength by validation" in auto.output and "chose λ=" in auto.output
    word = runner.invoke(app, ["aggregate", "demo", DATA, "--strength", "lots"])
    assert word.exit_code != 0 and "number or 'auto'" in word.output
    bad = runner.invoke(app, ["aggregate", "demo", DATA, "--method", "hubpathway", "--strength", "1"])
    assert bad.exit_code != 0 and "only apply to --method btuning" in bad.output


def test_btuning_auto_strength_picks_the_best_validated_value_and_matches_a_run_with_it():
    """Each λ is tried on 80/20 of the training split; the chosen one (ties: the larger) is then
    trained on the whole split, exactly as if it had been given: the trials train copies, so they
    leave the student's weights untouched."""
    auto = btuning("demo", DATA, top_k=2, config=CFG, strength="auto", strength_grid=(0.0, 5.0))
    trials = auto.extra["strength_trials"]
    assert [t["strength"] for t in trials] == [0.0, 5.0]
    best = max(trials, key=lambda t: (t["val_accuracy"], t["strength"]))["strength"]
    assert auto.extra["strength"] == best
    given = btuning("demo", DATA, top_k=2, config=CFG, strength=best)
    assert auto.accuracy == pytest.approx(given.accuracy, abs=1e-9)
    for a, b in zip(auto.model.state_dict().values(), given.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="number or 'auto'"):
        btuning("demo", DATA, top_k=2, config=CFG, strength="high")
