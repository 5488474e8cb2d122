import itertools

import numpy as np
import pytest

from zooforge.reassembly.partition import _best_cuts, block_graph, partition
from zooforge.reassembly.similarity import cka_matrix, linear_cka, minibatch_cka
from zooforge.reassembly.solve import Candidate, Problem, brute_force, solve


def _rep(n=300, d=20, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_cka_identity_symmetry_and_invariances():
    x, y = _rep(seed=0), _rep(d=12, seed=1) + 0.5 * _rep(seed=0)[:, :12]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(20, 20)))
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-10)      # orthogonal transform
    assert linear_cka(7.5 * x, y) == pytest.approx(linear_cka(x, y), rel=1e-10)    # isotropic scaling
    assert linear_cka(x + 3.0, y) == pytest.approx(linear_cka(x, y), rel=1e-10)    # translation
    # not invariant to an anisotropic rescaling (CKA is not CCA)
    assert linear_cka(x * np.linspace(0.1, 10, 20), y) != pytest.approx(linear_cka(x, y), rel=1e-3)
    assert 0.0 <= linear_cka(x, _rep(seed=5)) < 0.2


def test_minibatch_cka_agrees_with_the_full_estimate():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6000, 8))
    x = z @ rng.normal(size=(8, 30)) + 0.5 * rng.normal(size=(6000, 30))
    y = np.tanh(z @ rng.normal(size=(8, 16))) + 0.5 * rng.normal(size=(6000, 16))
    full = linear_cka(x, y)
    assert minibatch_cka(x, y, batch_size=1000) == pytest.approx(full, abs=0.02)
    assert minibatch_cka(x, x, batch_size=500) == pytest.approx(1.0)


def test_cka_matrix_matches_pairwise():
    reps = [_rep(200, d, s) for d, s in ((5, 0), (9, 1), (3, 2))]
    reps.append(reps[0] @ np.random.default_rng(3).normal(size=(5, 7)))
    m = cka_matrix(reps)
    for i, j in itertools.product(range(4), repeat=2):
        assert m[i, j] == pytest.approx(linear_cka(reps[i], reps[j]), abs=1e-9)


def test_dp_cuts_are_optimal_against_enumeration():
    rng = np.random.default_rng(0)
    reps = {f"m{i}": [rng.normal(size=(60, 4)) for _ in range(n)] for i, n in enumerate((6, 5, 7))}
    graph = block_graph(reps)
    fixed = {"m1": [0, 2, 4, 5], "m2": [0, 3, 5, 7]}
    cuts, value = _best_cuts(graph, "m0", 6, 3, fixed)
    best = max(sum(graph.edges[("m0", c), (o, fixed[o][j + 1])]["weight"] for j, c in enumerate(cs) for o in fixed)
               for cs in itertools.combinations(range(1, 6), 2))
    assert value == pytest.approx(best) and cuts[0] == 0 and cuts[-1] == 6


def test_partition_aligns_networks_that_compute_the_same_things():
    rng = np.random.default_rng(1)
    depth = [rng.normal(size=(80, 6)) for _ in range(6)]          # six distinct "functions"
    deep = depth                                                 # network a: all six
    shallow = [depth[1], depth[3], depth[5]]                      # network b: every other one
    p = partition({"a": deep, "b": shallow}, 3)
    assert p.cuts["b"] == [0, 1, 2, 3]
    assert p.cuts["a"] == [0, 2, 4, 6]                            # cuts meet at the shared functions
    assert p.similarity == pytest.approx(1.0)


def _random_problem(rng, models, stages, min_compat=None):
    cands = [[Candidate(f"m{i}", (k, k + 1), int(rng.integers(1_000, 50_000)), float(rng.uniform(0.001, 0.05)),
                        float(rng.normal())) for i in range(models)] for k in range(stages)]
    compat = [rng.uniform(0, 1, (models, models)) for _ in range(stages - 1)]
    sp = [rng.integers(0, 5_000, (models, models)) for _ in range(stages - 1)]
    sg = [rng.uniform(0, 0.005, (models, models)) for _ in range(stages - 1)]
    for k in range(stages - 1):
        np.fill_diagonal(sp[k], 0)
        np.fill_diagonal(sg[k], 0.0)
    return Problem(cands, compat, sp, sg, compat_weight=float(rng.uniform(0, 2)), min_compat=min_compat)


@pytest.mark.parametrize("seed", range(12))
def test_cp_sat_optimum_equals_brute_force_and_respects_the_budget(seed):
    rng = np.random.default_rng(seed)
    models, stages = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    problem = _random_problem(rng, models, stages, min_compat=0.2 if seed % 3 == 0 else None)
    budget_g = float(rng.uniform(0.002, 0.12))
    budget_p = float(rng.uniform(5_000, 150_000))                   # parameters; the API takes millions
    result = solve(problem, budget_g, budget_p / 1e6, top_k=3)
    expected = brute_force(problem, budget_g, budget_p / 1e6)
    if expected is None:
        assert result.status == "INFEASIBLE" and not result.solutions
        assert "infeasible" in result.explain()
        return
    assert result.status == "OPTIMAL"
    assert problem.evaluate(result.solutions[0].choice)[0] == expected[0]
    objectives = [s.objective for s in result.solutions]
    assert objectives == sorted(objectives, reverse=True)
    assert len({s.choice for s in result.solutions}) == len(result.solutions)       # distinct
    for s in result.solutions:
        assert s.params <= budget_p and s.gmacs <= budget_g + 1e-12                 # real-valued budget
        assert problem.evaluate(s.choice)[3]


@pytest.mark.parametrize("seed", range(6))
def test_distinct_last_gives_the_best_assembly_per_final_block(seed):
    """distinct="last": the n-th solution is the brute-force optimum among assemblies whose final block
    is none of the earlier solutions' final blocks."""
    import itertools

    rng = np.random.default_rng(100 + seed)
    problem = _random_problem(rng, 4, 3)
    budget_g = float(rng.uniform(0.03, 0.12))
    result = solve(problem, budget_g, top_k=3, distinct="last")
    used = []
    for sol in result.solutions:
        best = max((problem.evaluate(c)[0], c) for c in itertools.product(range(4), repeat=3)
                   if c[-1] not in used and problem.evaluate(c)[3]
                   and problem.evaluate(c)[2] <= int(np.floor(budget_g * 1e6 + 1e-9)))
        assert problem.evaluate(sol.choice)[0] == best[0]
        assert sol.choice[-1] not in used
        used.append(sol.choice[-1])
    assert len(used) == min(3, len(result.solutions)) and result.solutions


def test_infeasible_budget_names_the_smallest_feasible_one():
    rng = np.random.default_rng(7)
    problem = _random_problem(rng, 4, 3)
    result = solve(problem, budget_gmacs=1e-6)
    assert result.status == "INFEASIBLE" and result.smallest_gmacs is not None
    assert "smallest feasible budget is" in result.explain()
    again = solve(problem, budget_gmacs=result.smallest_gmacs)
    assert again.status == "OPTIMAL"
    assert brute_force(problem, result.smallest_gmacs * (1 - 1e-3)) is None          # and nothing smaller works
