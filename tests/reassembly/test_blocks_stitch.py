import copy
import importlib
import itertools

import numpy as np

import pytest
import torch
from torch import nn

from zooforge.config import SCREEN_EVIDENCE_KINDS, Budget
from zooforge.errors import ZooforgeError
from zooforge.reassembly.blocks import cut
from zooforge.reassembly.compose import compose, ranked_singles
from zooforge.reassembly.stitch import Assembly, Stitch, init_stitch, load_assembly
from zooforge.zoo import load_catalogue, load_dataset
from zooforge.zoo.backbone import Backbone

sc = importlib.import_module("zooforge.reassembly.screen")

ARCHS = ["demo/effnet-shapes", "demo/convnext-shapes", "demo/resnet-colour", "demo/vit-glyphs",
         "demo/mambaout-colour", "demo/byobnet-counting"]


@pytest.fixture(scope="module")
def zoo():
    entries = {e.id: e for e in load_catalogue("demo")}
    out = {}
    for mid in ARCHS:
        b = Backbone.from_entry(entries[mid])
        b.model.eval()
        out[mid] = (entries[mid], b, *cut(b))
    return out


@pytest.mark.parametrize("mid", ARCHS)
def test_chained_blocks_reproduce_the_model(zoo, mid):
    """Chained end to end, a model's blocks give its own pre-logits features (CNNs: stages that
    feature_info leaves out, conv heads and head norms/MLPs included via the tail), and for a ViT its
    final-normed patch tokens."""
    _, b, blocks, infos = zoo[mid]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = b.model.forward_features(x)
        y = x
        for blk, info in zip(blocks, infos):
            y = blk(y)
            assert tuple(y.shape[1:]) == info.out_shape
    if infos[-1].layout == "tokens":
        # Blocks after 0 drop the class token, so later patch tokens differ from the model's; the tail
        # must still apply the model's final norm to the tokens the last block's body returns.
        assert blocks[-1].tail is not None and blocks[-1].tail.names == ["norm"]
        last, tail = blocks[-1], blocks[-1].tail
        with torch.no_grad():
            h = x
            for blk in blocks[:-1]:
                h = blk(h)
            last.tail = None
            try:
                raw = last(h)                                  # (B, C, H, W) patch tokens, not normed
            finally:
                last.tail = tail
            want = b.model.norm(raw.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(raw.shape)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    else:
        ref = b.model.forward_head(features, pre_logits=True)[:, :, None, None]
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    assert sum(i.params for i in infos) <= b.num_params
    assert all(i.gmacs > 0 for i in infos)


def test_the_tail_keeps_stages_that_feature_info_leaves_out(zoo):
    """test_byobnet's feature_info skips its last stage; the blocks must still run it (and count it)."""
    _, b, blocks, infos = zoo["demo/byobnet-counting"]
    assert "stages.3" in blocks[-1].tail.names
    head = sum(p.numel() for n, p in b.model.named_parameters() if n.startswith("head.fc."))
    assert sum(i.params for i in infos) == b.num_params - head
    assert sum(i.gmacs for i in infos) == pytest.approx(b.gmacs, rel=0.02)


def test_prefix_is_pruned_to_what_it_runs(zoo):
    _, b, blocks, infos = zoo["demo/vit-glyphs"]
    runs = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.", "blocks.0.")
    expected = sum(p.numel() for n, p in b.model.named_parameters() if n.startswith(runs))
    assert infos[0].params == expected          # the final norm and the head are pruned away


@pytest.mark.parametrize("a,b", list(itertools.permutations(ARCHS, 2)))
def test_every_pair_of_architectures_stitches(zoo, a, b):
    _, _, blocks_a, infos_a = zoo[a]
    _, _, blocks_b, infos_b = zoo[b]
    ka, kb = len(blocks_a) // 2, len(blocks_a) // 2
    kb = min(max(1, kb), len(blocks_b) - 1)
    first = nn.Sequential(*blocks_a[:ka])
    second = nn.Sequential(*blocks_b[kb:])
    c_in = infos_a[ka - 1].out_shape[0]
    c_out, h, w = infos_b[kb].in_shape
    stitch = Stitch(c_in, c_out, infos_a[ka - 1].out_shape[1:], (h, w))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        src = first(x)
        tgt = torch.randn(8, c_out, h, w)
        init_stitch(stitch, src, tgt)
        model = Assembly([first, second], [stitch], infos_b[-1].out_shape[0], 5).eval()
        assert model(x).shape == (8, 5)


def test_least_squares_stitch_recovers_a_linear_map():
    torch.manual_seed(0)
    src = torch.randn(16, 6, 4, 4)
    true = nn.Conv2d(6, 3, 1)
    tgt = true(src).detach()
    s = Stitch(6, 3, (4, 4), (4, 4))
    r2 = init_stitch(s, src, tgt, ridge=1e-8)
    assert r2 == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(s.proj.weight, true.weight, rtol=1e-3, atol=1e-4)


def test_compose_trains_and_its_recipe_rebuilds_an_identical_model(tmp_path):
    r = compose("demo", "demo:shapes?n=16", budget_gmacs=0.002, stages=3, epochs=1, stitch_epochs=1,
                models=["demo/effnet-*", "demo/vit-glyphs", "demo/resnet-colour"], baseline=False, out_dir=tmp_path)
    assert r.status in ("OPTIMAL", "FEASIBLE") and len(r.stages) == 3
    assert r.gmacs <= 0.002 and 0.0 <= r.accuracy <= 1.0
    rebuilt, recipe = load_assembly(tmp_path)
    assert [s["model"] for s in recipe["stages"]] == [row["model"] for row in r.stages]
    x = torch.randn(4, 3, 32, 32)
    r.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), r.model(x), rtol=0, atol=0)


def test_compose_says_plainly_when_the_budget_is_too_small():
    with pytest.raises(ZooforgeError, match="smallest feasible budget is"):
        compose("demo", "demo:shapes?n=12", budget_gmacs=1e-6, stages=2, epochs=1,
                models=["demo/convnext-shapes", "demo/resnet-colour"], baseline=False)


def test_load_assembly_names_missing_files(tmp_path):
    with pytest.raises(ZooforgeError, match="recipe.json"):
        load_assembly(tmp_path)


def _plan(**kw):
    plan_module = importlib.import_module("zooforge.reassembly.plan")     # the package's `plan` is the function
    return plan_module, plan_module.plan("demo", "demo:shapes?n=16", 0.002, stages=3, probe=32,
                                         models=["demo/byobnet-counting", "demo/resnet-colour",
                                                 "demo/convnext-shapes"], **kw)


def test_a_single_model_assembly_is_that_model():
    cm, p = _plan()
    sol = p.single_model("demo/byobnet-counting")
    assert [c.model for c in sol.candidates] == ["demo/byobnet-counting"] * 3
    model, r2, _ = p.assemble(sol)
    b = p.backbones["demo/byobnet-counting"]
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        want = b.model.forward_head(b.model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.features(x).flatten(1), want, rtol=1e-4, atol=1e-5)
    assert r2 == []                                          # no stitch between a model's own stages


def test_training_an_assembly_leaves_the_planned_blocks_untouched():
    from zooforge.tuning.loop import TrainConfig, train

    cm, p = _plan()
    before = {m: [{k: v.clone() for k, v in blk.state_dict().items()} for blk in bl] for m, bl in p.blocks.items()}
    sol = p.solved.solutions[0]
    model, _, _ = p.assemble(sol)
    train(model, torch.randn(8, 3, 32, 32), torch.arange(8) % 4, TrainConfig(epochs=1, batch_size=4, lr=1e-2))
    for m, bl in p.blocks.items():
        for blk, state in zip(bl, before[m]):
            for k, v in blk.state_dict().items():
                assert torch.equal(v, state[k]), (m, k)


def test_compat_reward_is_counted_in_units_of_the_stage_score_spread():
    cm, p = _plan(compat_weight=2.0)
    rows = p.problem.stages
    spread = float(np.median([np.std([c.score for c in row]) for row in rows]))
    assert p.problem.compat_weight == pytest.approx(2.0 * spread)


def test_stitch_fit_is_one_for_a_linear_image_of_the_map_and_near_zero_for_noise():
    from zooforge.reassembly.plan import stitch_fit

    g = torch.Generator().manual_seed(0)
    source = torch.randn(16, 6, 8, 8, generator=g)
    target = torch.einsum("nchw,cd->ndhw", source, torch.randn(6, 5, generator=g)) + 3.0
    assert stitch_fit(source, target) == pytest.approx(1.0, abs=1e-4)
    assert stitch_fit(source, torch.randn(16, 5, 8, 8, generator=g)) < 0.02
    # a map at twice the resolution is pooled to the target's grid first
    up = torch.nn.functional.interpolate(source, scale_factor=2, mode="nearest")
    assert stitch_fit(up, target) == pytest.approx(1.0, abs=1e-4)


def test_stitch_compat_scores_each_transition_by_its_least_squares_stitch():
    cm, p = _plan(compat="stitch")
    ids, part, maps = list(p.backbones), p.partition, p.maps
    for k, matrix in enumerate(p.problem.compat):
        for i, a in enumerate(ids):
            for j, b in enumerate(ids):
                ca, cb = part.cuts[a][k + 1], part.cuts[b][k + 1]
                want = 1.0 if a == b else max(0.0, cm.stitch_fit(maps[a][ca - 1][:cm.COMPAT_PROBE],
                                                                 maps[b][cb - 1][:cm.COMPAT_PROBE]))
                assert matrix[i, j] == pytest.approx(want, abs=1e-9), (k, a, b)
    with pytest.raises(ValueError, match="'stitch' or 'cka'"):
        _plan(compat="cosine")


def test_a_single_model_assembly_scores_its_own_stage_outputs_and_keeps_the_best():
    from zooforge.metrics import logme

    cm, p = _plan()
    sol = p.single_model("demo/resnet-colour")
    b = p.backbones["demo/resnet-colour"]
    x = b.prepare([p.dataset.image(int(i)) for i in p.probe.index])["x"]
    y = p.dataset.labels[p.probe.index]
    with torch.no_grad():
        feats = b.model.forward_head(b.model.forward_features(x), pre_logits=True)
        maps = cm.run_blocks(p.blocks["demo/resnet-colour"], x)
    stages = sc.stage_logme(p, sol)
    assert len(stages) == 3
    assert stages[-1] == pytest.approx(logme(feats.double().numpy(), y), rel=1e-4)   # the model's own features
    cuts = [c.blocks[1] for c in sol.candidates]
    for k, end in enumerate(cuts):                  # stage k ends where the model's block ``end - 1`` does
        assert stages[k] == pytest.approx(logme(maps[end - 1].mean(dim=(2, 3)).double().numpy(), y), rel=1e-4)
    assert sc.assembly_logme(p, sol) == max(stages)


def test_probe_blocks_pools_every_image_and_keeps_maps_of_the_first_only():
    cm, p = _plan()
    blocks = p.blocks["demo/byobnet-counting"]
    x = torch.randn(10, 3, 32, 32)
    whole = cm.run_blocks(blocks, x)
    pooled, maps = cm.probe_blocks(blocks, x, keep=3, batch_size=4)
    for w, pl, m in zip(whole, pooled, maps):
        torch.testing.assert_close(pl, w.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m, w[:3], rtol=1e-5, atol=1e-6)


def test_screen_shortlist_orders_by_assembly_logme_and_keeps_the_single_model():
    cm, p = _plan(screen=3)
    shortlist = sc.shortlist(p, p.diverse + p.solved.solutions, Budget(0.002), size=3,
                             singles=ranked_singles(p, Budget(0.002)))
    assert len(shortlist) <= 3
    *mixed, single = shortlist
    single = single.solution
    assert len({c.model for c in single.candidates}) == 1
    scores = [s.assembly_logme for s in mixed]
    assert scores == sorted(scores, reverse=True)
    pool = {s.choice for s in p.diverse + p.solved.solutions} - {single.choice}
    assert all(s.solution.choice in pool for s in mixed)
    dropped = [sc.assembly_logme(p, s) for s in p.diverse + p.solved.solutions
               if s.choice in pool - {m.solution.choice for m in mixed}]
    assert all(d <= min(scores) + 1e-12 for d in dropped)
    for sol, score, model, stages in shortlist:          # the kept model is the one scored, untrained
        assert sc.assembly_logme(p, sol) == pytest.approx(score, rel=1e-9) == max(stages)
        torch.manual_seed(0)
        fresh = p.assemble(sol).model
        for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
            assert torch.equal(a, b), name


def test_the_shortlists_single_model_is_the_first_of_the_given_order_that_fits():
    cm, p = _plan(screen=2)
    budget = Budget(0.002)
    singles = ranked_singles(p, budget)
    assert sorted(singles) == ["demo/byobnet-counting", "demo/convnext-shapes"]    # resnet-colour: 0.0041 GMACs
    pool = p.diverse + p.solved.solutions
    for order, first in ((singles, singles[0]), (singles[::-1], singles[1]),
                         (["demo/resnet-colour"] + singles[::-1], singles[1])):     # over budget: passed over
        *_, last = sc.shortlist(p, pool, budget, size=2, singles=order)
        assert {c.model for c in last.solution.candidates} == {first}, order


def test_the_single_model_compose_must_beat_is_the_one_rank_recommends():
    """The screen's single model and the baseline are the first of the models that fit the budget in
    the order rank gives them on the training split (by default the ordering rank recommends; with
    ``ordering="logme"`` LogME's): on demo counting the two orders disagree on which comes first."""
    from zooforge.selection.rank import ranked_ids

    models = ["demo/byobnet-counting", "demo/convnext-counting", "demo/resnet-colour"]   # the resnet does not fit
    train_ds, _ = load_dataset("demo:counting?n=16").split(0.8, 0)
    fitting = [e for e in load_catalogue("demo") if e.id in models[:2]]
    recommended, by_logme = ranked_ids(fitting, train_ds)[0], ranked_ids(fitting, train_ds, "logme")[0]
    assert recommended != by_logme, "the case needs the two orders to disagree; pick another target"
    for ordering, first in ((None, recommended), ("logme", by_logme)):
        r = compose("demo", "demo:counting?n=16", budget_gmacs=0.002, stages=3, epochs=1, screen=2, screen_epochs=1,
                    probe=32, models=models, ordering=ordering)
        assert r.baseline["model"] == first and r.baseline["ordering"] == ordering, ordering
        assert set(r.screened[-1]["models"]) == {first}, ordering


def test_a_fitting_model_rank_cannot_score_is_said_not_silently_passed_over(monkeypatch):
    """A model that fits the budget whole but fails in ``rank`` cannot be the single model; compose says
    which and why (``unranked``, and a line of the CLI) instead of comparing with the next one
    silently, and when none can be ranked it still composes, with no single model to compare."""
    from typer.testing import CliRunner

    from zooforge.cli import app

    rank_module = importlib.import_module("zooforge.selection.rank")
    real = rank_module.score_model

    def failing(backbone, *args, **kwargs):
        if backbone.id in broken:
            raise RuntimeError("out of memory on this model")
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(rank_module, "score_model", failing)
    models = ["demo/byobnet-counting", "demo/convnext-counting", "demo/resnet-colour"]   # the resnet does not fit
    kw = dict(budget_gmacs=0.002, stages=3, epochs=1, screen=2, screen_epochs=1, probe=32, models=models)
    broken = {"demo/convnext-counting"}
    r = compose("demo", "demo:counting?n=16", **kw)
    assert list(r.unranked) == ["demo/convnext-counting"] and "out of memory" in r.unranked["demo/convnext-counting"]
    assert r.baseline["model"] == "demo/byobnet-counting"
    broken = {"demo/convnext-counting", "demo/byobnet-counting"}
    r = compose("demo", "demo:counting?n=16", **kw)
    assert sorted(r.unranked) == sorted(broken) and r.baseline is None and r.accuracy is not None
    out = CliRunner().invoke(app, ["compose", "demo", "demo:counting?n=16", "--budget-gmacs", "0.002", "--stages", "3",
                                   "--epochs", "1", "--screen", "1", "--probe", "32"] + [f"--model={m}" for m in models])
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())
    assert "demo/byobnet-counting fits the budget whole but could not be ranked" in said
    assert "no single zoo model that fits the budget could be ranked" in said


def test_the_screens_per_image_evidence_has_the_scoring_rules_values():
    """Two images, three classes: 0/1 correctness, the true class's probability, minus the Brier score
    and the floored log-probability, by hand; an unknown kind is refused by name."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    y = torch.tensor([0, 2])
    ev = {k: sc.per_image_evidence(probs, y, k).tolist() for k in SCREEN_EVIDENCE_KINDS}
    assert ev["correct"] == [1.0, 0.0]
    assert ev["p_true"] == pytest.approx([0.7, 0.2])
    assert ev["brier"] == pytest.approx([-(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2), -(0.5 ** 2 + 0.3 ** 2 + 0.8 ** 2)])
    assert ev["loglik"] == pytest.approx([np.log(0.7), np.log(0.2)])
    assert sc.per_image_evidence(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), "loglik").item() == pytest.approx(
        np.log(1e-4))                                        # floored: one sure mistake is not -inf
    # a better-calibrated network that is right on the same images scores higher on every graded kind
    sharper = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.2, 0.4]])
    for k in ("p_true", "brier", "loglik"):
        assert (sc.per_image_evidence(sharper, y, k) > sc.per_image_evidence(probs, y, k)).all(), k
    with pytest.raises(ValueError, match="evidence must be one of .*'margin'"):
        sc.per_image_evidence(probs, y, "margin")


def test_screening_tries_the_best_single_model_and_keeps_by_the_margin_rule():
    r = compose("demo", "demo:shapes?n=20", budget_gmacs=0.002, stages=3, epochs=1, screen=3, screen_epochs=1,
                models=["demo/byobnet-counting", "demo/resnet-colour", "demo/convnext-shapes"], baseline=False)
    assert 2 <= len(r.screened) <= 3
    assert all(np.isfinite(s["assembly_logme"]) for s in r.screened)
    singles = [s for s in r.screened if len(set(s["models"])) == 1]
    assert singles, "the best single model within budget must be screened"
    assert all(s["gmacs"] <= 0.002 for s in r.screened)
    kept = [s for s in r.screened if s["kept"]]
    assert len(kept) == 1 and [row["model"] for row in r.stages] == kept[0]["models"]
    single, mixes = r.screened[-1], r.screened[:-1]
    assert len(set(single["models"])) == 1
    assert all(s["evidence"] == "brier" and -2 <= s["val_score"] <= 0 for s in r.screened)   # minus a Brier score
    best = max(mixes, key=lambda s: s["val_score"])          # first maximum: ties keep the shortlist's order
    assert "margin_se" in best and all("margin_se" not in s for s in mixes if s is not best)
    assert kept[0] is (best if best["margin_se"] > sc.keep_margin(len(mixes), sc.SCREEN_ALPHA) else single)
    if kept[0] is best:
        assert best["val_score"] > single["val_score"]


def test_a_cross_validated_screen_validates_every_training_image_once_from_the_same_start():
    from zooforge.tuning.loop import TrainConfig, outputs, predict, train
    from zooforge.tuning.methods import inputs_for

    cm, p = _plan(screen=2)
    train_ds = load_dataset("demo:shapes?n=10")
    shortlist = sc.shortlist(p, p.diverse + p.solved.solutions, Budget(0.002), size=2,
                             singles=ranked_singles(p, Budget(0.002)))
    untrained = [copy.deepcopy(s.model) for s in shortlist]
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0, progress=False)
    kept, records = sc.screen(p, shortlist, train_ds, cfg, 1, 0, folds=3)
    assert [r["folds"] for r in records] == [3] * len(shortlist) and sum(r["kept"] for r in records) == 1
    assert kept.choice == shortlist[[r["kept"] for r in records].index(True)].solution.choice
    # what it reports: every training image predicted once, by a copy of the untrained model fitted to
    # the other folds (each fold starts from the same weights, never from the previous fold's)
    first = p.backbones[shortlist[0].solution.candidates[0].model]
    correct, brier = [], []
    for fit, val in train_ds.folds(3, 1):
        model = copy.deepcopy(untrained[0])
        train(model, inputs_for(first, fit), torch.as_tensor(fit.labels), cfg)
        x, y = inputs_for(first, val), torch.as_tensor(val.labels)
        correct += (predict(model, x) == y).tolist()
        probs = torch.softmax(outputs(model, x).double(), -1)
        brier += (probs - nn.functional.one_hot(y, probs.shape[1])).square().sum(1).tolist()
    assert len(correct) == len(train_ds)
    assert records[0]["val_accuracy"] == pytest.approx(np.mean(correct), abs=1e-12)
    assert records[0]["val_score"] == pytest.approx(-np.mean(brier), abs=1e-9)      # the test's evidence
    # on 0/1 evidence the score the test compares is the accuracy
    _, zero_one = sc.screen(p, [s._replace(model=copy.deepcopy(m)) for s, m in zip(shortlist, untrained)], train_ds,
                            cfg, 1, 0, folds=3, evidence="correct", alpha=0.05)
    assert zero_one[0]["val_score"] == pytest.approx(np.mean(correct), abs=1e-12) == zero_one[0]["val_accuracy"]
    with pytest.raises(ZooforgeError, match=r"--screen-folds 50 .* needs at least 50 training images .* has 30"):
        sc.screen(p, shortlist, train_ds.subset(np.arange(30), "small"), cfg, 1, 0, folds=50)
    with pytest.raises(ZooforgeError, match="--screen-folds 500"):        # refused before any model is cut
        compose("demo", "demo:shapes?n=10", budget_gmacs=0.002, screen_folds=500, models=["demo/nothing-*"])


def test_compose_cli_prints_the_screen_and_both_accuracies():
    from typer.testing import CliRunner

    from zooforge.cli import app

    result = CliRunner().invoke(app, ["compose", "demo", "demo:shapes?n=12", "--budget-gmacs", "0.002", "--stages", "2",
                                      "--epochs", "1", "--screen", "2", "--screen-epochs", "1",
                                      "--model", "demo/convnext-shapes", "--model", "demo/byobnet-counting"])
    assert result.exit_code == 0, result.output
    assert "screening" in result.output and "accuracy" in result.output
    assert "leads the single model on minus the Brier score" in " ".join(result.output.split())   # the test's evidence
    assert "−Brier" in result.output
    assert "held-out accuracy" in result.output and "assembly − single" in result.output
    assert "the first that fits in the order rank recommends" in " ".join(result.output.split())


def test_compose_refuses_an_unknown_order_before_cutting_any_model(monkeypatch):
    from typer.testing import CliRunner

    from zooforge.cli import app

    def never(*args, **kwargs):
        raise AssertionError("the models were cut and probed before the order was checked")

    monkeypatch.setattr(importlib.import_module("zooforge.reassembly.compose"), "plan", never)
    result = CliRunner().invoke(app, ["compose", "demo", "demo:shapes?n=12", "--budget-gmacs", "0.002",
                                      "--order", "logmee"])
    assert result.exit_code == 1 and "unknown estimator 'logmee'" in result.output, result.output


def test_screen_keeps_a_mix_only_when_it_beats_the_single_model_beyond_the_paired_noise():
    t = lambda bits: torch.tensor(bits, dtype=torch.float64)    # noqa: E731
    single = t([1, 1, 0, 0] * 25)                                # 50% correct
    tie = t([0, 0, 1, 1] * 25)                                   # 50% too, on other samples
    better = t([1, 1, 1, 0] * 25)                                # +25 points, never worse: paired SE 0.044
    slightly = t([1, 1, 0, 0] * 24 + [1, 1, 1, 0])               # +1 point of 100: 1 SE exactly (0.01 vs 0.01)
    assert sc.keep([tie, single], incumbent=1) == (1, 0, 0.0)
    kept, best, margin = sc.keep([tie, better, single], incumbent=2)
    assert (kept, best) == (1, 1) and margin == pytest.approx(0.25 / (np.sqrt(0.25 * 0.75 * 100 / 99) / 10))
    kept, best, margin = sc.keep([slightly, single], incumbent=1, alpha=0.1)
    assert (kept, best) == (1, 0) and margin == pytest.approx(1.0)    # 1 SE < z_0.9 = 1.28: the single stays
    assert sc.keep([slightly, single], incumbent=1, alpha=0.5)[0] == 0    # z_0.5 = 0: any lead is enough
    assert sc.keep([tie, single], incumbent=None) == (0, 0, None)     # nothing fits alone: the best of the rest
    assert sc.keep([single, tie], incumbent=None)[0] == 0             # ties: the shortlist's order
    assert sc.keep([single], incumbent=0) == (0, None, None)


def test_the_keep_margin_grows_with_the_mixes_compared_and_holds_its_level_under_the_null():
    """Known truth: m mixes exactly as good as the single model (independent errors, 70% correct on
    100 validation images). The best of them leads by chance; the Bonferroni margin keeps a mix at most
    about alpha of the time, the uncorrected one-mix margin far more often; a mix truly 20 points better
    is still kept nearly always."""
    assert sc.keep_margin(1, 0.16) == pytest.approx(0.994, abs=1e-3)
    assert sc.keep_margin(1, 0.16) < sc.keep_margin(3, 0.16) < sc.keep_margin(6, 0.16)
    for bad in (0.0, 0.6):
        with pytest.raises(ValueError, match="alpha"):
            sc.keep_margin(3, bad)
    g = torch.Generator().manual_seed(0)
    draw = lambda p: (torch.rand(100, generator=g) < p).double()   # noqa: E731
    alpha, mixes, trials = 0.1, 4, 400
    kept_corrected = kept_plain = kept_better = 0
    for _ in range(trials):
        null = [draw(0.7) for _ in range(mixes)] + [draw(0.7)]
        kept_corrected += sc.keep(null, incumbent=mixes, alpha=alpha)[0] != mixes
        kept_plain += sc.keep(null, incumbent=mixes, alpha=alpha * mixes)[0] != mixes     # margin z_(1 - alpha)
        better = [draw(0.9)] + [draw(0.7) for _ in range(mixes - 1)] + [draw(0.7)]
        kept_better += sc.keep(better, incumbent=mixes, alpha=alpha)[0] == 0
    assert kept_corrected / trials <= alpha + 0.03
    assert kept_plain / trials > 2 * kept_corrected / trials
    assert kept_better / trials > 0.9


def test_compose_takes_hf_vision_models_and_reports_the_models_it_leaves_out(tiny_vit_folder, tiny_bert_folder):
    # Issue #20: a Hugging Face ViT selected for compose was left out without a word; it is cut now,
    # and a model that cannot be cut (a text encoder) is named with the reason.
    from zooforge.reassembly.compose import compose, ranked_singles
    from zooforge.zoo import CatalogueEntry, load_catalogue

    demo = [e for e in load_catalogue("demo") if e.id in ("demo/convnext-shapes", "demo/byobnet-counting")]
    vit = CatalogueEntry(id="hf/tiny-vit", source="hf", name=str(tiny_vit_folder))
    bert = CatalogueEntry(id="hf/tiny-bert", source="hf", name=str(tiny_bert_folder))
    r = compose([*demo, vit, bert], "demo:shapes?n=12", budget_gmacs=0.002, stages=2, epochs=1, screen=1,
                baseline=False, top_k=8)
    assert list(r.left_out) == ["hf/tiny-bert"] and "text model" in r.left_out["hf/tiny-bert"]
    assert r.record()["left_out"] == r.left_out
    assert any("hf/tiny-vit" in alt["models"] for alt in r.alternatives)       # a candidate at some stage
