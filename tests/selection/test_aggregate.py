import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from zooforge.errors import ZooforgeError
from zooforge.selection.aggregate import btuning, ensemble, hubpathway, save_result, zootuning
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


def test_collapse_averages_the_gates_over_every_row_a_layer_gates():
    """A MaxViT's attention layers run on windows, so they gate more rows than the batch has images:
    the mean gates are still a distribution, and with gates that do not depend on the input (the gate
    layers' weights at zero, only the lead) the collapsed network is the aggregate itself (before,
    the mean counted each window as an image: gates summing to 6 and a collapsed MaxViT at chance)."""
    from zooforge.selection.aggregate.architecture import source_head
    from zooforge.selection.aggregate.zootuning import ZooTuned
    from zooforge.tuning.methods import MethodConfig
    from zooforge.zoo.backbone import Backbone
    from zooforge.zoo.catalogue import CatalogueEntry

    torch.manual_seed(0)
    members = [Backbone.from_entry(CatalogueEntry(id=f"t/maxvit{i}", source="timm", name="test_maxvit",
                                                  pretrained=False, input_size=(3, 32, 32),
                                                  model_args={"img_size": 32})) for i in range(3)]
    body = aggregate_models([m.model for m in members], source_head(members[0].model), lead=1.0)
    model = ZooTuned(members[0].with_model(body), 4, MethodConfig("full")).eval()
    x = torch.rand(6, 3, 32, 32)
    gates = model.mean_gates(x, batch_size=4)
    windowed = [n for n in gates if "attn_block" in n]
    assert windowed and all(float(g.sum()) == pytest.approx(1.0, abs=1e-5) for g in gates.values())
    plain = model.collapse(x, members[0].model)
    single = ZooTuned(members[0].with_model(plain), 4, MethodConfig("full")).eval()
    single.head.load_state_dict(model.head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(single(x), model(x), rtol=1e-4, atol=1e-4)
    assert all(layer.tally is None for _, layer in model.aggregated_layers())     # recording is off again


def test_the_reference_gates_and_reset_statistics_are_what_they_say():
    """gate="sigmoid" (the reference's ada_agg.py): each model's weight in (0, 1) on its own, 0.5 each at
    lead 0, so the aggregate kernel starts at half the sum of the kernels; norm_stats="reset" (its
    backbone.py): batch norms start from mean 0, variance 1 instead of the models' averaged statistics."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval() for _ in range(3)]
    for n in nets:
        n[1].running_mean.normal_()
    agg = aggregate_models(nets, gate="sigmoid", lead=0.0, norm_stats="reset").eval()
    x = torch.randn(4, 3, 8, 8)
    agg(x)
    layer = agg[0]
    torch.testing.assert_close(layer.last_gates, torch.full((4, 3), 0.5))
    w, _ = layer.folded(layer.last_gates[0])
    torch.testing.assert_close(w, 0.5 * sum(n[0].weight for n in nets))
    assert torch.equal(agg[1].running_mean, torch.zeros(8)) and torch.equal(agg[1].running_var, torch.ones(8))
    averaged = aggregate_models(nets, lead=0.0)
    torch.testing.assert_close(averaged[1].running_mean, sum(n[1].running_mean for n in nets) / 3)
    with pytest.raises(ValueError, match="gate"):
        aggregate_models(nets, gate="relu")
    with pytest.raises(ValueError, match="norm_stats"):
        aggregate_models(nets, norm_stats="drop")


def _fine_tuner(entry, data: str):
    """``fine_tuned(make)``: the logits on ``data`` of the model ``make()`` builds, after 2 epochs on
    ``data`` with the one loop (the identity tests' recipe; ``entry`` prepares the inputs)."""
    from zooforge.tuning.loop import train
    from zooforge.tuning.methods import inputs_for
    from zooforge.zoo import load_dataset
    from zooforge.zoo.backbone import Backbone

    ds = load_dataset(data)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=8, seed=0, device="cpu", progress=False)
    x, y = inputs_for(Backbone.from_entry(entry), ds), torch.as_tensor(ds.labels)

    def fine_tuned(make):
        model = make()
        train(model, x, y, cfg)
        with torch.no_grad():
            return model.eval()(x)

    return fine_tuned


@pytest.mark.parametrize("copies", [1, 3])
def test_zootuning_of_one_expert_or_copies_of_it_is_plain_fine_tuning(copies):
    """Issue #20: aggregation that cannot reproduce its one member's fine-tuning is broken. Trained
    the same way (same head init, data order, optimiser), Zoo-Tuning of k copies of an expert ends
    where plain fine-tuning of the expert ends; with the learned channel alignment it does not."""
    from zooforge.selection.aggregate.zootuning import ZooTuned
    from zooforge.tuning.methods import MethodConfig, TaskModel
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    entry = next(e for e in load_catalogue("demo") if e.id == "demo/convnext-shapes")
    fine_tuned = _fine_tuner(entry, "demo:shapes?n=8")

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
    assert r.extra["student"] == r.members[0]                     # the top of the ordering, not LogME's pick
    assert 0.0 <= r.accuracy <= 1.0 and r.trainable_params > 0
    save_result(r, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "result.json").is_file()


def test_zootuning_same_architecture_gates_sum_to_one_and_collapse():
    r = zootuning("demo", DATA, models=["demo/convnext-*"], config=CFG)   # 3 trained + 1 random, no head
    assert len(r.members) == 4 and sum(r.weights) == pytest.approx(1.0, abs=1e-5)
    assert r.extra["collapsed_params"] < r.total_params           # one plain network of the base size
    assert r.extra["layers"] > 5


def test_zootuning_gate_lr_moves_only_the_gates_faster():
    # the gates start at the lead's prior; at 30x the rate they leave it further, and the kernels of
    # the run start equal: gate_lr reaches the optimiser for the gates alone
    slow = zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, gate_lr=1.0, collapse=False)
    fast = zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, gate_lr=30.0, collapse=False)
    prior = torch.softmax(torch.tensor([3.0, 0.0, 0.0]), 0)
    moved = [float((torch.tensor(r.weights) - prior).abs().sum()) for r in (slow, fast)]
    assert moved[1] > 3 * moved[0] and fast.extra["gate_lr"] == 30.0
    with pytest.raises(ValueError, match="gate_lr"):
        zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, gate_lr=0.0)
    with pytest.raises(ValueError, match="`gate_lr` must be a finite number"):
        zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, gate_lr=float("nan"))
    with pytest.raises(ValueError, match="`lead` must be a finite number"):
        zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, lead=float("nan"))


@pytest.mark.parametrize("method, setting, value", [
    (btuning, "strength", float("nan")), (btuning, "strength", float("inf")), (btuning, "strength", -1.0),
    (btuning, "temperature", float("nan")), (btuning, "temperature", 0.0),
    (zootuning, "gate_lr", float("inf")), (zootuning, "lead", float("-inf")),
    (hubpathway, "balance", float("nan")), (hubpathway, "balance", -0.1),
    (hubpathway, "exploit", float("inf")), (hubpathway, "lead", float("nan")),
])
def test_aggregators_refuse_a_non_finite_or_out_of_range_weight_before_loading_a_model(method, setting, value,
                                                                                      monkeypatch):
    # `x < 0` is false for NaN and `x >= 0` true for inf: checked that way, such weights trained to NaN
    # and still reported an accuracy. Refused by name, before the dataset is split or a model loaded.
    import sys

    def no_loading(*args, **kwargs):
        raise AssertionError("a model or the dataset was loaded before the setting was checked")

    module = sys.modules[method.__module__]          # the package's names are the functions, not the modules
    monkeypatch.setattr(module, "split_dataset", no_loading)
    monkeypatch.setattr(module, "load_members", no_loading)
    with pytest.raises(ZooforgeError, match=f"`{setting}` must be a finite number"):
        method("demo", DATA, **{setting: value})


@pytest.mark.parametrize("ordering", [None, "logme"])
def test_zootuning_gives_its_lead_to_the_top_ranked_of_the_named_models(ordering):
    """The gates' lead went to whichever model the catalogue lists first when the members were named
    (``--model demo/effnet-*``): on demo shapes that is effnet-shapes (0.70 fine-tuned alone) and not the
    LogME-best effnet-glyphs (0.90), and Zoo-Tuning followed the weaker one (0.74). It goes to the
    first of the named models as ``rank`` orders them (by default its recommended ordering)."""
    from zooforge.selection.aggregate._common import split_dataset
    from zooforge.selection.rank import rank

    _, train_ds, _ = split_dataset(DATA)
    table = rank("demo", train_ds, metrics=None if ordering is None else [ordering], ordering=ordering, bootstrap=0,
                 models=["demo/effnet-*"])
    r = zootuning("demo", DATA, models=["demo/effnet-*"], config=CFG, ordering=ordering)
    assert len(r.members) == 3 and r.members[0] == table["model"][0]
    assert r.weights[0] == max(r.weights)


def test_members_come_in_the_order_rank_recommends_unless_another_is_asked():
    """Every aggregator takes its members from ``load_members``: by default the top of the table
    ``zooforge rank`` prints (its recommended ordering over the default estimators), with ``ordering``
    another one (``logme``: the papers'); a name that is no estimator fails before any training."""
    from zooforge.selection.aggregate._common import load_members, split_dataset
    from zooforge.selection.rank import rank

    _, train_ds, _ = split_dataset(DATA)
    recommended = rank("demo", train_ds, bootstrap=0).filter(pl.col("error").is_null())["model"].to_list()
    members = load_members("demo", None, 3, train_ds, load=False)
    assert [m.id for m in members] == recommended[:3]
    by_logme = rank("demo", train_ds, metrics=["logme"], bootstrap=0).sort("logme", descending=True)["model"]
    members = load_members("demo", None, 3, train_ds, ordering="logme", load=False)
    assert [m.id for m in members] == by_logme.to_list()[:3]
    with pytest.raises(ValueError, match="unknown estimator 'nonsense'"):
        load_members("demo", None, 3, train_ds, ordering="nonsense", load=False)


def test_architecture_group_is_the_highest_ranked_model_with_enough_of_its_architecture(monkeypatch):
    from zooforge.selection.aggregate.architecture import architecture_group
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    loads, build = [], Backbone.from_entry.__func__

    def counted(cls, entry, *args, **kwargs):
        loads.append(entry.id)
        return build(cls, entry, *args, **kwargs)

    monkeypatch.setattr(Backbone, "from_entry", classmethod(counted))

    by_id = {e.id: e for e in load_catalogue("demo")}
    ranked = [by_id[f"demo/{m}"] for m in ("byobnet-counting", "convnext-shapes", "effnet-shapes", "effnet-glyphs",
                                            "convnext-counting", "effnet-textures", "mambaout-colour")]
    ids = lambda group: [e.id for e in group]                                       # noqa: E731
    group, over = architecture_group(ranked, 2)              # the ByobNet and the MambaOut are alone of their kind
    assert ids(group) == ["demo/convnext-shapes", "demo/convnext-counting"] and over == ["demo/byobnet-counting"]
    group, over = architecture_group(ranked, None, min_models=3)      # two ConvNeXts are too few: the EfficientNets
    assert ids(group) == ["demo/effnet-shapes", "demo/effnet-glyphs", "demo/effnet-textures"]
    assert over == ["demo/byobnet-counting", "demo/convnext-shapes"]
    loads.clear()
    group, over = architecture_group(ranked[1:], 3)           # in ranked order, cut at the size asked for
    assert ids(group) == ["demo/convnext-shapes", "demo/convnext-counting"] and over == []
    # where the top model leads the group, each model scanned is loaded once: the group comes back as
    # loaded for its layout, not loaded again
    assert loads == ids(ranked[1:]) and all(hasattr(b, "model") for b in group)
    with pytest.raises(ZooforgeError, match="none of the 2 ranked models has 1 other of its architecture"):
        architecture_group([ranked[0], ranked[-1]])


def test_zootuning_warns_when_its_group_is_not_the_top_ranked_models_architecture(tmp_path):
    """Without named members Zoo-Tuning takes the top-ranked model's architecture; where the top-ranked
    model is alone of its kind (the ByobNet leads demo counting) the group is the next architecture,
    which the library warns about and the CLI says, naming the model passed over."""
    from typer.testing import CliRunner

    from zooforge.cli import app
    from zooforge.selection.aggregate._common import split_dataset
    from zooforge.selection.aggregate.architecture import GroupWarning, architecture_group
    from zooforge.selection.rank import ranked_ids
    from zooforge.zoo import load_catalogue

    data = "demo:counting?n=16"
    _, train_ds, _ = split_dataset(data)
    by_id = {e.id: e for e in load_catalogue("demo")}
    ranked = ranked_ids(list(by_id.values()), train_ds)
    assert ranked[0] == "demo/byobnet-counting", "the case needs a top model without a sibling"
    group, over = architecture_group([by_id[m] for m in ranked], 2)
    assert over and over[0] == ranked[0]
    with pytest.warns(GroupWarning, match="top-ranked model demo/byobnet-counting has no other of its architecture"):
        r = zootuning("demo", data, top_k=2, config=CFG)
    assert r.members == [e.id for e in group] and r.extra["passed_over"] == over
    # no architecture has 6 models in the demo zoo: the group is smaller than asked, and the CLI says so
    out = CliRunner().invoke(app, ["aggregate", "demo", data, "--method", "zootuning", "--top-k", "6", "--epochs", "1"])
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())
    assert f"the top-ranked model {ranked[0]} has no other of its architecture" in said
    assert f"led by {group[0].id}, ranked {len(over) + 1}" in said and "GroupWarning" not in said
    assert "--top-k 6 asked for 6 models; zootuning took" in said and "every model of that architecture" in said


@pytest.mark.parametrize("method", ["zootuning", "hubpathway"])
def test_aggregators_that_need_two_models_refuse_a_top_k_of_one_before_ranking(method, monkeypatch):
    # Hub-Pathway used to take 2 candidates silently where --top-k 1 asked for one; Zoo-Tuning ranked
    # the whole zoo before finding that one model is no group
    import importlib

    from typer.testing import CliRunner

    from zooforge.cli import app

    rank_module = importlib.import_module("zooforge.selection.rank")     # the package's `rank` is the function
    monkeypatch.setattr(rank_module, "ranked_ids", lambda *a, **k: pytest.fail("ranked before refusing"))
    out = CliRunner().invoke(app, ["aggregate", "demo", "demo:shapes?n=16", "--method", method, "--top-k", "1"])
    assert out.exit_code == 1
    assert "at least 2 models" in out.output and "--method ensemble --top-k 1" in " ".join(out.output.split())


def test_zootuning_refuses_mixed_architectures():
    with pytest.raises(ZooforgeError, match="one architecture"):
        zootuning("demo", DATA, models=["demo/vit-glyphs", "demo/resnet-colour"], config=CFG)


def test_zootuning_refuses_models_whose_tensors_match_but_whose_layers_do_not():
    # a GroupNorm and a LayerNorm EfficientNet hold tensors of the same names and shapes; mixing
    # their kernels and norms would make a network neither was trained as
    import timm

    from zooforge.selection.aggregate.architecture import check_same_architecture

    gn, ln = timm.create_model("test_efficientnet_gn"), timm.create_model("test_efficientnet_ln")
    assert {k: v.shape for k, v in gn.state_dict().items()} == {k: v.shape for k, v in ln.state_dict().items()}
    check_same_architecture([gn, timm.create_model("test_efficientnet_gn")], ["a", "b"], set())
    with pytest.raises(ZooforgeError, match=r"'gn' and 'ln' differ at .*GroupNorm.* vs .*LayerNorm"):
        check_same_architecture([gn, ln], ["gn", "ln"], set())


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


def test_hubpathways_lead_goes_to_the_top_ranked_of_the_named_members():
    """``lead`` is added to the generator's starting logit of the first member, which is the top-ranked of
    the named members as ``rank`` orders them, not the first named; with a lead that large every input
    is still routed to it after training."""
    from zooforge.selection.aggregate._common import split_dataset
    from zooforge.selection.rank import ranked_ids
    from zooforge.zoo import load_catalogue

    ids = ["demo/vit-glyphs", "demo/resnet-colour", "demo/effnet-shapes"]
    _, train_ds, _ = split_dataset(DATA)
    ranked = ranked_ids([e for e in load_catalogue("demo") if e.id in ids], train_ds)
    named = ranked[::-1]                                   # named worst first
    r = hubpathway("demo", DATA, models=named, top_k=2, lead=20.0, config=CFG)
    assert r.members == ranked and r.extra["lead"] == 20.0
    w = r.model.eval().routing(torch.rand(8, 3, 32, 32))
    assert (w[:, 0] > 0).all() and (w[:, 0] > w.max(-1).values - 1e-6).all()


def test_hubpathway_refuses_a_lead_its_generator_cannot_take():
    from zooforge.selection.aggregate.hubpathway import HubPathway
    from zooforge.tuning.methods import build
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    entries = {e.id: e for e in load_catalogue("demo")}
    tasks = [build(Backbone.from_entry(entries[m]), 4, "linear") for m in ("demo/vit-glyphs", "demo/resnet-colour")]

    class Uniform(nn.Module):                 # a generator with no `logits` layer to put the lead in
        def forward(self, x):
            return torch.zeros(len(x), 2), torch.ones(len(x), 2)

    with pytest.raises(ValueError, match="a `lead` needs a generator whose `logits`"):
        HubPathway(tasks, generator=Uniform(), lead=3.0)
    with pytest.raises(ValueError, match="`lead` must be a finite number"):
        HubPathway(tasks, lead=float("nan"))
    assert HubPathway(tasks, generator=Uniform(), lead=0.0).routing(torch.rand(3, 3, 32, 32)).shape == (3, 2)


def test_hubpathway_inference_costs_only_the_members_it_routes_to():
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    ids = ["demo/vit-glyphs", "demo/resnet-colour", "demo/effnet-shapes"]
    one = hubpathway("demo", DATA, models=ids, top_k=1, config=CFG)
    two = hubpathway("demo", DATA, models=ids, top_k=2, config=CFG)
    entries = {e.id: e for e in load_catalogue("demo")}
    each = [Backbone.from_entry(entries[m]).gmacs for m in ids]
    assert min(each) < one.gmacs < two.gmacs < sum(each) + 0.001       # the router is small
    assert one.gmacs < max(each) + 0.001


def test_the_ensemble_of_one_is_the_single_model_fine_tuned_alone():
    from zooforge.tuning.tune import tune

    r = ensemble("demo", DATA, top_k=1, config=CFG, lr="auto")
    alone = tune(r.members[0], DATA, "full", catalogue="demo", loop=CFG, lr="auto")
    assert r.accuracy == pytest.approx(alone.accuracy, abs=1e-6) and r.extra["lr"] == [alone.lr]
    assert r.total_params == alone.total_params and r.weights == [1.0]
    assert r.gmacs == pytest.approx(alone.task.backbone.gmacs, rel=0.02)   # the body, and a linear head


def test_the_ensemble_validates_each_member_over_the_rates_it_is_given():
    r = ensemble("demo", DATA, top_k=2, config=CFG, lr="auto", lr_grid=(7e-4, 2e-3))   # not the default grid
    assert len(r.extra["lr"]) == 2 and set(r.extra["lr"]) <= {7e-4, 2e-3}


def test_the_ensemble_averages_its_members_logits():
    from zooforge.selection.aggregate._common import split_dataset
    from zooforge.tuning.loop import outputs
    from zooforge.tuning.methods import inputs_for
    from zooforge.tuning.tune import tune

    ids = ["demo/vit-glyphs", "demo/resnet-colour", "demo/effnet-shapes"]
    r = ensemble("demo", DATA, models=ids, config=CFG)
    _, _, test_ds = split_dataset(DATA)
    runs = [tune(m, DATA, "full", catalogue="demo", loop=CFG) for m in r.members]
    assert r.extra["member_accuracy"] == [run.accuracy for run in runs]
    mean = torch.stack([outputs(run.task, inputs_for(run.task.backbone, test_ds)) for run in runs]).mean(0)
    assert r.accuracy == pytest.approx(float((mean.argmax(1) == torch.as_tensor(test_ds.labels)).double().mean()))
    assert r.gmacs == pytest.approx(sum(run.task.backbone.gmacs for run in runs), rel=0.02)
    assert r.total_params == sum(run.total_params for run in runs)


def test_load_balance_term():
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    assert cv_squared(torch.tensor([6.0, 0.0, 0.0])).item() == pytest.approx(2.0)   # var 8 / mean² 4


def _reference_logme_fit(f, y):
    """thuml/LogME's fixed point (alpha = beta = 1, then alpha = gamma / m2, beta = (N - gamma) / res2)
    per class, iterated to convergence instead of its 1e-3 stop: (mean evidence, posterior means (C, D))."""
    n, d = f.shape
    u, s, vh = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2
    evidences, ms = [], []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64)
        x = u.T @ y_
        x2, res_x2 = x ** 2, (y_ ** 2).sum() - (x ** 2).sum()
        alpha, beta = 1.0, 1.0
        for _ in range(10_000):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / (t + sigma) ** 2).sum()
            res2 = (x2 / (1 + sigma / t) ** 2).sum() + res_x2
            alpha, beta = gamma / m2, (n - gamma) / res2
            if abs(alpha / beta - t) / t < 1e-13:
                break
        evidences.append((d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * sigma).sum()
                          - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi)) / n)
        ms.append(vh.T @ (s * x / (alpha / beta + sigma)))
    return float(np.mean(evidences)), np.stack(ms)


def test_btuning_targets_and_regulariser_follow_the_reference_script():
    """On features where LogME's fixed point reaches the evidence's maximum (N > D, separable classes),
    B-Tuning's teacher weights, soft targets and regulariser are b_tuning.py's: π = softmax(LogME / T);
    targets Σ π_k f_k m_kᵀ with m_k LogME's posterior means; λ · MSE(f_s m_sᵀ, targets)."""
    from types import SimpleNamespace

    from zooforge.selection.aggregate.btuning import BTuningStudent, _plan

    rng = np.random.default_rng(0)
    n, c = 120, 3
    y = np.arange(n) % c
    feats = {f"t{k}": (rng.normal(size=(n, d)) + (2.0 - 0.6 * k) * np.eye(c, d)[y]).astype(np.float32)
             for k, d in enumerate((8, 12, 6))}
    members = [SimpleNamespace(id=name) for name in feats]
    plan = _plan(members, feats, y, np.arange(n), temperature=0.1)
    ref = {name: _reference_logme_fit(f.astype(np.float64), y) for name, f in feats.items()}
    scores = np.array([ref[m.id][0] for m in members])
    np.testing.assert_allclose(plan["logme"], scores, rtol=1e-7)
    pi = np.exp((scores - scores.max()) / 0.1)
    pi /= pi.sum()
    np.testing.assert_allclose(plan["pi"], pi, rtol=1e-6)
    targets = sum(p * feats[m.id].astype(np.float64) @ ref[m.id][1].T for p, m in zip(pi, members))
    np.testing.assert_allclose(plan["targets"].numpy(), targets, rtol=1e-4, atol=1e-5)
    student = plan["student"].id
    assert student == members[0].id and int(np.argmax(scores)) == 0    # the first member: given in LogME's order

    class Probe(nn.Module):            # a "task" whose features are the cached ones and a fixed head
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(feats[student].shape[1], c)

        def features(self, x):
            return x

    model = BTuningStudent(Probe(), plan["weights"], strength=100.0).train()
    x = torch.as_tensor(feats[student])
    model(x, plan["targets"])
    want = 100.0 * np.mean((feats[student].astype(np.float64) @ ref[student][1].T - targets) ** 2)
    assert model.aux_loss.item() == pytest.approx(want, rel=1e-4)


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


def test_aggregate_cli_shows_zootunings_collapsed_network(tmp_path):
    import json

    from typer.testing import CliRunner

    from zooforge.cli import app

    out = CliRunner().invoke(app, ["aggregate", "demo", DATA, "--method", "zootuning", "--model", "demo/effnet-*",
                                   "--epochs", "1", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "result.json").read_text())
    assert sum(saved["weights"]) == pytest.approx(1.0, abs=1e-4)
    assert "collapsed into one plain network" in out.output
    assert f"held-out accuracy {saved['extra']['collapsed_accuracy']:.4f}" in out.output
    bad = CliRunner().invoke(app, ["aggregate", "demo", DATA, "--method", "zootuning", "--order", "nonsense"])
    assert bad.exit_code != 0 and "nonsense" in bad.output


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


def test_hubpathway_trains_when_a_member_is_routed_a_single_input():
    """A batch-norm member routed one input of a batch (batch statistics of one sample are undefined)
    normalises it with its running statistics instead of failing the run; those are left as they were."""
    from zooforge.selection.aggregate.hubpathway import HubPathway
    from zooforge.tuning.methods import build
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    entries = {e.id: e for e in load_catalogue("demo")}
    tasks = [build(Backbone.from_entry(entries[m]), 4, "full") for m in ("demo/resnet-colour", "demo/effnet-shapes")]
    model = HubPathway(tasks, top_k=1).train()
    x = torch.rand(5, 3, 32, 32)
    # input 0 alone to the resnet (its last stage's map is 1x1 at 32 pixels), the rest to the other
    model.routing = lambda inp: torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * (len(inp) - 1))
    bn = next(m for m in model.members[0].modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = model(x)
    out.sum().backward()
    assert out.shape == (5, 4) and torch.isfinite(out).all()
    assert torch.equal(bn.running_mean, before) and bn.training        # untouched, and back in training mode


def test_hubpathway_exploit_term_is_each_members_own_loss_on_the_inputs_routed_to_it():
    """With ``exploit`` > 0 the loop gets a callable of the labels: the balance term plus ``exploit``
    times the mean, over routed (input, member) pairs, of each member's own cross-entropy there. A
    member with a small routing weight still gets its own loss's full gradient; at 0 the term is off."""
    from zooforge.selection.aggregate.hubpathway import HubPathway, cv_squared
    from zooforge.tuning.methods import build
    from zooforge.zoo import load_catalogue
    from zooforge.zoo.backbone import Backbone

    entries = {e.id: e for e in load_catalogue("demo")}
    ids = ("demo/effnet-shapes", "demo/convnext-shapes", "demo/vit-glyphs")
    torch.manual_seed(0)
    tasks = [build(Backbone.from_entry(entries[m]), 4, "full") for m in ids]
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    route = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.0, 0.1], [0.0, 0.99, 0.01]] * 2)
    loss = nn.functional.cross_entropy
    for exploit in (0.0, 0.5):
        model = HubPathway(tasks, top_k=2, balance=0.01, exploit=exploit).train()
        model.routing = lambda inp: route
        for m in model.members:                       # batch statistics differ by batch: compare in eval
            for b in m.modules():
                if isinstance(b, nn.modules.batchnorm._BatchNorm):
                    b.eval()
        model(x)
        balance = 0.01 * cv_squared(route.sum(0))
        if exploit == 0:
            assert torch.is_tensor(model.aux_loss) and model.aux_loss.item() == pytest.approx(balance.item())
            continue
        aux = model.aux_loss(y, loss)
        own = []
        for k, m in enumerate(model.members):
            rows = (route[:, k] > 0).nonzero(as_tuple=True)[0]
            own += [loss(m(x[i:i + 1]), y[i:i + 1]).item() for i in rows.tolist()]
        assert aux.item() == pytest.approx(balance.item() + exploit * float(np.mean(own)), rel=1e-4)
        model.zero_grad()
        aux.backward()                                 # the third member has weight 0.01 on its two inputs
        head = model.members[2].task.head
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


def _tiny_berts(root, data, seeds, vocab_order=None):
    """Tiny BERT encoders written with save_pretrained, one per seed, over the words of ``data``; the
    same tokenizer unless ``vocab_order`` reverses the words for the last one."""
    import transformers

    from zooforge.zoo import CatalogueEntry, load_dataset

    ds = load_dataset(data)
    words = sorted({w for i in range(len(ds)) for w in ds.text(i).split()})
    entries = []
    for i, seed in enumerate(seeds):
        folder = root / f"bert{i}"
        folder.mkdir()
        order = words[::-1] if vocab_order == "reversed" and i == len(seeds) - 1 else words
        (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *order]))
        tokenizer = transformers.BertTokenizerFast(vocab=str(folder / "vocab.txt"))
        config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32)
        torch.manual_seed(seed)
        transformers.BertModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        entries.append(CatalogueEntry(id=f"hf/bert{i}", source="hf", name=str(folder), modality="text"))
    return entries


def test_hubpathway_routes_text_members_that_share_a_tokenizer(tmp_path):
    # The generator of a text hub is a bag of token embeddings: padding changes no route.
    from zooforge.selection.aggregate.hubpathway import TokenGenerator

    data = "demo:negation?n=16"
    entries = _tiny_berts(tmp_path, data, seeds=(0, 1, 2))
    r = hubpathway(entries, data, models=[e.id for e in entries], top_k=2, config=CFG)
    model = r.model.eval()
    assert isinstance(model.generator, TokenGenerator) and sum(r.weights) == pytest.approx(1.0, abs=1e-5)
    ids = model.members[0].task.backbone.prepare(["my friends said the book was fun", "the book"])["input_ids"]
    w = model.routing(ids)
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    assert ((w > 0).sum(-1) == 2).all() and model(ids).shape == (2, 2)
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=ids.dtype)], 1)             # [PAD] is id 0
    torch.testing.assert_close(model.routing(padded), w)
    assert 0 < r.accuracy <= 1 and r.gmacs > 0


def test_hubpathway_refuses_text_members_that_tokenise_differently(tmp_path):
    data = "demo:negation?n=8"
    entries = _tiny_berts(tmp_path, data, seeds=(0, 1), vocab_order="reversed")
    # named members are ranked (the generator's lead goes to the first), so either may come first
    with pytest.raises(ZooforgeError, match="'hf/bert(0|1)' and 'hf/bert(1|0)' tokenise this data differently"):
        hubpathway(entries, data, models=[e.id for e in entries], config=CFG)


def test_zootuning_of_copies_of_a_text_encoder_is_plain_fine_tuning(tmp_path):
    # The one-expert identity above, on a transformer's linear layers over (batch, tokens, width).
    from zooforge.selection.aggregate.zootuning import ZooTuned
    from zooforge.tuning.methods import MethodConfig, TaskModel
    from zooforge.zoo.backbone import Backbone

    data = "demo:negation?n=8"
    entry = _tiny_berts(tmp_path, data, seeds=(0,))[0]
    fine_tuned = _fine_tuner(entry, data)

    def plain():
        torch.manual_seed(5)
        return TaskModel(Backbone.from_entry(entry), 2, MethodConfig("full"))

    def zoo():
        members = [Backbone.from_entry(entry) for _ in range(3)]
        body = aggregate_models([m.model for m in members])
        assert sum(isinstance(m, AggregatedLayer) for m in body.modules()) >= 6     # q, k, v, out, 2 FFN
        torch.manual_seed(5)
        return ZooTuned(members[0].with_model(body), 2, MethodConfig("full"))

    reference = fine_tuned(plain)
    assert float((fine_tuned(zoo) - reference).abs().max()) < 1e-3 * float(reference.abs().max())


def test_a_model_rank_cannot_score_is_said_and_named_ones_are_refused(monkeypatch):
    """Ranked by ``rank``, a model that fails there is not a candidate: the aggregators say which and why
    (``extra["unranked"]``, and a line of the CLI) instead of leaving it out silently; a named member
    that fails is refused, since the user asked for it (B-Tuning kept the others without a word)."""
    import importlib

    from typer.testing import CliRunner

    from zooforge.cli import app
    from zooforge.selection.aggregate._common import split_dataset
    from zooforge.selection.rank import ranked_ids
    from zooforge.zoo import load_catalogue

    _, train_ds, _ = split_dataset(DATA)
    top = ranked_ids(load_catalogue("demo"), train_ds)[0]
    rank_module = importlib.import_module("zooforge.selection.rank")
    real = rank_module.score_model

    def failing(backbone, *args, **kwargs):
        if backbone.id == top:
            raise RuntimeError("out of memory on this model")
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(rank_module, "score_model", failing)
    r = ensemble("demo", DATA, top_k=1, config=CFG)
    assert top not in r.members and "out of memory" in r.extra["unranked"][top]
    out = CliRunner().invoke(app, ["aggregate", "demo", DATA, "--method", "ensemble", "--top-k", "1", "--epochs", "1"])
    assert out.exit_code == 0, out.output
    assert f"{top} could not be ranked on this data, so it was not considered" in " ".join(out.output.split())
    other = next(m for m in ("demo/effnet-shapes", "demo/vit-glyphs") if m != top)
    with pytest.raises(ZooforgeError, match=rf"\['{top}'\] could not be scored on this data"):
        btuning("demo", DATA, models=[top, other], config=CFG, strength=0.0)
