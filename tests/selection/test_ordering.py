import importlib.util
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from zooforge.errors import ZooforgeError
from zooforge.selection.ordering import (DEFAULT_ORDERING, Ordering, candidates, choose_ordering, fit_stack, judge,
                                         order, stacked_default)

ROOT = Path(__file__).parents[2]


def test_names_round_trip_and_bad_orderings_are_refused():
    for o in (Ordering(("logme",)), Ordering(("logme", "nce"), "rank"), Ordering(("gbc", "logme", "nce"), "z"),
              Ordering(("logme", "nce"), "stack", (2.0, 0.125)), Ordering(("logme", "nce"), "rank", lead="nce"),
              DEFAULT_ORDERING):
        assert Ordering.parse(o.name) == o
    assert Ordering.parse(" rank( logme + leep ) ") == Ordering(("logme", "leep"), "rank")
    assert Ordering.parse("logme > stack(1*logme + 0.5*gbc)") == Ordering(("logme", "gbc"), "stack", (1.0, 0.5), "logme")
    with pytest.raises(ValueError, match="at least one"):
        Ordering(())
    with pytest.raises(ValueError, match="'rank', 'z' or 'stack'"):
        Ordering(("logme",), "max")
    with pytest.raises(ValueError, match="one finite weight >= 0 per estimator"):
        Ordering(("logme", "nce"), "stack", (1.0,))
    with pytest.raises(ValueError, match="one finite weight >= 0 per estimator"):
        Ordering(("logme",), "stack", (-1.0,))
    with pytest.raises(ValueError, match="only a stacked ordering has weights"):
        Ordering(("logme",), "z", (1.0,))
    with pytest.raises(ValueError, match="lead estimator 'gbc' must be one of"):
        Ordering(("logme",), lead="gbc")
    with pytest.raises(ValueError, match=r"written stack\(2\*logme"):
        Ordering.parse("stack(logme+nce)")


def test_a_stack_orders_by_its_weighted_z_scores_and_the_lead_puts_its_first_model_first():
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([3.0, 2.1, 0.0, 0.9])
    scores = {"a": a, "b": b}
    z = lambda v: (v - v.mean()) / v.std()
    stack = order(scores, Ordering(("a", "b"), "stack", (1.0, 2.0)))
    np.testing.assert_allclose(stack["value"], -(z(a) + 2 * z(b)))
    assert list(np.argsort(stack["position"])) == list(np.argsort(z(a) + 2 * z(b))[::-1])
    # scaling every weight keeps the order; a zero weight ignores its estimator
    assert (order(scores, Ordering(("a", "b"), "stack", (3.0, 6.0)))["position"] == stack["position"]).all()
    assert list(np.argsort(order(scores, Ordering(("a", "b"), "stack", (1.0, 0.0)))["position"])) == [3, 2, 1, 0]
    led = order(scores, Ordering(("a", "b"), "stack", (1.0, 2.0), lead="a"))
    assert led["position"][3] == 0                        # a's first model first
    rest = [i for i in np.argsort(stack["position"]) if i != 3]
    assert list(np.argsort(led["position"]))[1:] == rest   # the stack orders the rest as before
    # one missing score counts as the table's mean (as fit_stack learns it); only a model with none sorts last
    gap = order({"a": a, "b": np.array([3.0, np.nan, 0.0, 0.9])}, Ordering(("a", "b"), "stack", (1.0, 0.1)))
    assert list(gap["missing"]) == [0, 0, 0, 0] and gap["position"][1] != 3
    # a lead that scored nobody does not lead
    none = order({"a": a, "b": np.full(4, np.nan)}, Ordering(("a", "b"), "stack", (1.0, 2.0), lead="b"))
    assert list(np.argsort(none["position"])) == [3, 2, 1, 0]


def test_fit_stack_learns_the_informative_estimator_and_never_a_negative_weight():
    rng = np.random.default_rng(0)
    tables = []
    for _ in range(6):
        acc = rng.uniform(0.3, 0.9, 12)
        good = acc + rng.normal(0, 0.05, 12)                       # tracks the truth
        anti = -good + rng.normal(0, 0.01, 12)                     # anti-correlated: must not be used
        noise = rng.normal(0, 1, 12)
        tables.append(({"good": good, "noise": noise, "anti": anti}, acc))
    w = dict(zip(("good", "noise", "anti"), fit_stack(tables, ["good", "noise", "anti"])))
    assert w["good"] > 1.0 and w["anti"] == 0.0 and w["noise"] < 0.3 * w["good"]
    assert min(w.values()) >= 0
    # z-scoring within a target: an affine change of one target's scores changes nothing
    moved = [({m: 10 * v + 3 for m, v in s.items()} if i == 0 else s, acc) for i, (s, acc) in enumerate(tables)]
    np.testing.assert_allclose(fit_stack(moved, ["good", "noise", "anti"]), list(w.values()), atol=1e-5)
    with pytest.raises(ValueError, match="no pair"):
        fit_stack([({"good": np.ones(3)}, np.ones(3))], ["good"])
    singles = {"good": {"z": {"weighted_tau": 0.9, "regret": 0.0}}, "noise": {"z": {"weighted_tau": 0.1, "regret": 9.0}}}
    default = stacked_default(tables, singles, ["noise", "good", "anti"])
    assert default.lead == "good" and default.metrics[0] == "good" and "anti" not in default.metrics


def test_order_puts_missing_scores_last_then_the_value_then_the_overall_mean_rank():
    scores = {"a": np.array([3.0, np.nan, 1.0, 2.0, 2.0]), "b": np.array([0.0, 9.0, 5.0, 1.0, 4.0])}
    keys = order(scores, Ordering(("a",)))
    # model 1 lacks `a`: last although `b` loves it; models 3 and 4 tie on `a`: b breaks the tie
    assert list(np.argsort(keys["position"])) == [0, 4, 3, 2, 1]
    assert list(keys["missing"]) == [0, 1, 0, 0, 0]
    both = order(scores, Ordering(("a", "b"), "rank"))
    assert both["position"].argmax() == 1                  # still missing one of the two
    z = order(scores, Ordering(("a", "b"), "z"))
    assert set(z["value"][[0, 2, 3, 4]]) and np.isfinite(z["value"]).all()


def test_an_estimator_that_scored_nobody_is_left_out_and_none_left_falls_back_to_the_mean_rank():
    scores = {"leep": np.full(3, np.nan), "logme": np.array([1.0, 3.0, 2.0]), "gbc": np.array([1.0, 2.0, 3.0])}
    keys = order(scores, Ordering(("leep", "logme"), "rank"))
    assert list(np.argsort(keys["position"])) == [1, 2, 0] and not keys["missing"].any()
    only = order(scores, Ordering(("leep",)))
    assert list(np.argsort(only["position"])) == [1, 2, 0]      # mean ranks 1.5, 1.5 (tie: stable), 3


def test_judge_regret_and_budgets():
    acc = np.array([0.9, 0.8, 0.5])
    gmacs = np.array([10.0, 1.0, 0.5])
    r = judge(np.array([1, 0, 2]), acc, gmacs, budgets=(2.0, 0.5))
    assert r["regret"] == pytest.approx(10.0)           # picked 0.8 instead of 0.9: 10 points
    assert r["regret_b0"] == 0.0 and r["regret_b1"] == 0.0
    perfect = judge(np.array([0, 1, 2]), acc)
    assert perfect["weighted_tau"] == pytest.approx(1.0) and perfect["kendall_tau"] == pytest.approx(1.0)


def test_the_rule_prefers_tau_then_regret_then_fewer_estimators():
    results = {"logme": {"z1": {"weighted_tau": 0.70, "regret": 1.0}, "z2": {"weighted_tau": 0.70, "regret": 1.0}},
               "rank(logme+nce)": {"z1": {"weighted_tau": 0.705, "regret": 1.0}, "z2": {"weighted_tau": 0.705, "regret": 1.0}},
               "nce": {"z1": {"weighted_tau": 0.9, "regret": 5.0}, "z2": {"weighted_tau": 0.2, "regret": 5.0}}}
    assert choose_ordering(results) == Ordering(("logme",))        # a near-tie goes to the simpler one
    results["rank(logme+nce)"]["z1"]["regret"] = 0.0
    assert choose_ordering(results) == Ordering(("logme", "nce"))
    assert len(candidates(["a", "b", "c"])) == 3 + 2 * 3 + 2 * 1


def _benchmark():
    spec = importlib.util.spec_from_file_location("selection_benchmark", ROOT / "benchmarks" / "selection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_ordering_is_what_the_rule_picks_from_the_stored_benchmark():
    """Issue #16: the default is reproducible from the benchmark's stored truth and scores."""
    bench = _benchmark()
    data = json.loads(bench.DATA.read_text())
    assert len(data["zoos"]) >= 3 and sum(len(t) for t in bench.targets_used(data).values()) >= 12
    import io

    result = bench.report(data, out=io.StringIO())
    final = result["final"]
    assert (final.metrics, final.combine, final.lead) == (DEFAULT_ORDERING.metrics, "stack", DEFAULT_ORDERING.lead)
    np.testing.assert_allclose(final.weights, DEFAULT_ORDERING.weights, atol=2e-3)   # refitted, not copied
    assert len(result["held_out"]) == len(data["zoos"])
    from zooforge.selection.rank import DEFAULT_METRICS

    assert set(DEFAULT_ORDERING.metrics) <= set(DEFAULT_METRICS)


def test_rank_sorts_by_the_ordering_and_names_it(tmp_path):
    from zooforge.selection.rank import DEFAULT_METRICS, rank

    cache = tmp_path / "cache"
    kw = dict(models=["demo/resnet-*", "demo/effnet-textures", "demo/vit-glyphs"], cache_dir=cache, progress=False)
    default = rank("demo", "demo:textures?n=12", list(DEFAULT_METRICS), bootstrap=10, **kw)
    assert set(default["ordering"]) == {DEFAULT_ORDERING.name}
    assert default["p_top1"].sum() == pytest.approx(1.0)
    chosen = rank("demo", "demo:textures?n=12", ["logme", "leep"], bootstrap=0, **kw)
    assert set(chosen["ordering"]) == {"rank(logme+leep)"}
    by_gbc = rank("demo", "demo:textures?n=12", ["logme", "gbc"], bootstrap=0, ordering="gbc", **kw)
    assert by_gbc["gbc"].is_sorted(descending=True, nulls_last=True)
    with pytest.raises(ZooforgeError, match="needs estimator.s. nce, which were not computed"):
        rank("demo", "demo:textures?n=12", ["logme"], bootstrap=0, ordering="rank(logme+nce)", **kw)
    assert isinstance(default, pl.DataFrame)


def test_scores_equal_but_for_floating_point_noise_are_ties():
    """H-score without shrinkage is C - 1 for every model whose features have as many dimensions as
    there are samples, give or take 1e-15: ranked as they stood, that noise ordered them at random."""
    from zooforge.selection.ordering import _zscores, metric_ranks, order, settled

    noisy = np.array([3.0 + 2e-15, 3.0, np.nan, 3.0 + 1e-15, 2.0])
    assert settled(noisy)[[0, 1, 3]].tolist() == [3.0 + 2e-15] * 3 and np.isnan(settled(noisy)[2])
    assert settled(noisy)[4] == 2.0
    assert metric_ranks(noisy)[[0, 1, 3, 4]].tolist() == [1, 2, 3, 4]        # tied: in the table's order
    assert _zscores(np.array([3.0 + 2e-15, 3.0, 3.0 + 1e-15])).tolist() == [0.0, 0.0, 0.0]   # not noise blown up to ±1
    assert settled(np.array([1.0, 1.0 - 1e-6])).tolist() == [1.0, 1.0 - 1e-6]     # a real difference stays
    # tied in one estimator, the models fall to the table's mean rank over all of them
    scores = {"hscore": np.array([3.0, 3.0 + 1e-15, 3.0 - 1e-15]), "logme": np.array([0.1, 0.3, 0.2])}
    assert order(scores, Ordering(("hscore",)))["position"].tolist() == [2, 0, 1]
