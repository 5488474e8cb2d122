"""Choose one block-stage per stage under a budget with OR-Tools CP-SAT (DeRy, Sec. 3.2).

Variables: x[k, i] = 1 when stage k comes from candidate i (one model's stage k), exactly one per stage;
y[k, i, j] = 1 when stage k's candidate i feeds stage k+1's candidate j (linked to x so that exactly
the chosen pair is 1). Constraints: Σ params ≤ P and Σ GMACs ≤ G, where the sums include each stage's
blocks and the stitching layer of every chosen transition (none when consecutive stages come from the
same model), and optionally y = 0 for transitions whose compatibility is below ``min_compat``.
Objective: maximise Σ score(k, i) · x + λ Σ compat(k, i, j) · y.

The score is our training-free proxy: LogME (You et al., 2021) of the target data on the model's own
features at the end of stage k. DeRy scores whole assemblies with NASWOT-style zero-cost proxies that
ignore the target labels and are not additive over stages, so an exact integer program cannot use them
(the reference searches greedily instead). Stage-wise LogME is additive, uses the labels, and is
already what zooforge computes; the compatibility term (CKA between the representations the two
models hold at that cut) rewards transitions that a stitching layer can bridge.

CP-SAT needs integers: scores are scaled by 10⁴; parameters are exact; GMACs are counted in
kilo-MACs, each cost rounded up and each budget down, so an integer-feasible answer is feasible in
real numbers. The status is reported in words (OPTIMAL / FEASIBLE / INFEASIBLE); an infeasible budget
is answered with the smallest feasible budget in each currency. ``top_k`` distinct assemblies come
from re-solving with a no-good cut that excludes every assembly already found.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from zooforge.errors import ZooforgeError
from zooforge.config import PARAMS_M_CEILING, Budget

__all__ = ["Candidate", "Problem", "Solution", "SolveResult", "solve", "brute_force"]

SCORE_SCALE = 10_000
KMACS = 1_000_000          # kilo-MACs per GMAC


@dataclass(frozen=True)
class Candidate:
    model: str
    blocks: tuple[int, int]      # [start, end) block indices in its model
    params: int
    gmacs: float
    score: float


@dataclass
class Problem:
    stages: list[list[Candidate]]              # candidates per stage
    compat: list[np.ndarray]                   # per transition k -> k+1: (n_k, n_{k+1}) in [0, 1]
    stitch_params: list[np.ndarray]            # same shapes, ints
    stitch_gmacs: list[np.ndarray]
    compat_weight: float = 1.0
    min_compat: float | None = None
    fixed_params: int = 0                      # the head and anything every assembly carries
    fixed_gmacs: float = 0.0

    def __post_init__(self):
        k = len(self.stages)
        if k < 1 or any(not s for s in self.stages):
            raise ZooforgeError("every stage needs at least one candidate block.")
        for name in ("compat", "stitch_params", "stitch_gmacs"):
            arrays = getattr(self, name)
            if len(arrays) != k - 1 or any(a.shape != (len(self.stages[t]), len(self.stages[t + 1]))
                                           for t, a in enumerate(arrays)):
                raise ZooforgeError(f"`{name}` needs one (n_k, n_k+1) matrix per transition.")

    # integer data shared by the solver and brute force
    def int_score(self, k, i) -> int:
        return round(self.stages[k][i].score * SCORE_SCALE)

    def int_compat(self, k, i, j) -> int:
        return round(self.compat_weight * float(self.compat[k][i, j]) * SCORE_SCALE)

    @staticmethod
    def kmacs(gmacs: float) -> int:
        return math.ceil(gmacs * KMACS - 1e-9)

    def allowed(self, k, i, j) -> bool:
        return self.min_compat is None or float(self.compat[k][i, j]) >= self.min_compat

    def evaluate(self, choice: tuple[int, ...]) -> tuple[int, int, int, bool]:
        """(integer objective, params, kilo-MACs, transitions allowed) of one assembly."""
        obj = sum(self.int_score(k, i) for k, i in enumerate(choice))
        params = self.fixed_params + sum(self.stages[k][i].params for k, i in enumerate(choice))
        kmacs = self.kmacs(self.fixed_gmacs) + sum(self.kmacs(self.stages[k][i].gmacs) for k, i in enumerate(choice))
        ok = True
        for k in range(len(choice) - 1):
            i, j = choice[k], choice[k + 1]
            obj += self.int_compat(k, i, j)
            params += int(self.stitch_params[k][i, j])
            kmacs += self.kmacs(float(self.stitch_gmacs[k][i, j]))
            ok &= self.allowed(k, i, j)
        return obj, params, kmacs, ok


@dataclass
class Solution:
    choice: tuple[int, ...]                 # candidate index per stage
    candidates: list[Candidate]
    objective: float                        # in score units
    params: int                             # blocks + stitches + fixed
    gmacs: float


@dataclass
class SolveResult:
    status: str                             # OPTIMAL | FEASIBLE | INFEASIBLE | UNKNOWN
    solutions: list[Solution] = field(default_factory=list)
    smallest_gmacs: float | None = None     # when INFEASIBLE: least GMACs any assembly needs (within P)
    smallest_params: int | None = None      # ... and least params (within G)
    seconds: float = 0.0

    def explain(self) -> str:
        if self.status in ("OPTIMAL", "FEASIBLE"):
            best = self.solutions[0]
            return (f"{self.status.lower()}: best assembly scores {best.objective:.4g} with "
                    f"{best.params / 1e6:.3g} M params and {best.gmacs:.4g} GMACs")
        if self.status == "INFEASIBLE":
            parts = []
            if self.smallest_gmacs is not None:
                parts.append(f"{self.smallest_gmacs:.4g} GMACs")
            if self.smallest_params is not None:
                parts.append(f"{self.smallest_params / 1e6:.4g} M params")
            return ("infeasible: no assembly fits the budget; the smallest feasible budget is "
                    + (" or ".join(parts) if parts else "none (no assembly satisfies the compatibility bound)"))
        return "unknown: the solver stopped before finding an assembly; raise the time limit."


def _model(problem: Problem, budget_params: int | None, budget_kmacs: int | None, objective: str):
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = [[m.NewBoolVar(f"x{k}_{i}") for i in range(len(s))] for k, s in enumerate(problem.stages)]
    for row in x:
        m.AddExactlyOne(row)
    y = []
    for k in range(len(problem.stages) - 1):
        yk = {}
        for i in range(len(problem.stages[k])):
            for j in range(len(problem.stages[k + 1])):
                if problem.allowed(k, i, j):
                    yk[i, j] = m.NewBoolVar(f"y{k}_{i}_{j}")
        for i in range(len(problem.stages[k])):     # the chosen i has exactly one successor pair
            m.Add(sum(v for (a, _), v in yk.items() if a == i) == x[k][i])
        for j in range(len(problem.stages[k + 1])):
            m.Add(sum(v for (_, b), v in yk.items() if b == j) == x[k + 1][j])
        y.append(yk)
    params = problem.fixed_params + sum(c.params * x[k][i] for k, s in enumerate(problem.stages) for i, c in enumerate(s)) \
        + sum(int(problem.stitch_params[k][i, j]) * v for k, yk in enumerate(y) for (i, j), v in yk.items())
    kmacs = problem.kmacs(problem.fixed_gmacs) \
        + sum(problem.kmacs(c.gmacs) * x[k][i] for k, s in enumerate(problem.stages) for i, c in enumerate(s)) \
        + sum(problem.kmacs(float(problem.stitch_gmacs[k][i, j])) * v for k, yk in enumerate(y) for (i, j), v in yk.items())
    if budget_params is not None:
        m.Add(params <= budget_params)
    if budget_kmacs is not None:
        m.Add(kmacs <= budget_kmacs)
    if objective == "score":
        m.Maximize(sum(problem.int_score(k, i) * x[k][i] for k, s in enumerate(problem.stages) for i in range(len(s)))
                   + sum(problem.int_compat(k, i, j) * v for k, yk in enumerate(y) for (i, j), v in yk.items()))
    elif objective == "gmacs":
        m.Minimize(kmacs)
    else:
        m.Minimize(params)
    return m, x


def _solver(time_limit: float, seed: int):
    from ortools.sat.python import cp_model

    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = time_limit
    s.parameters.num_workers = 1 if time_limit is None else 2
    s.parameters.random_seed = seed
    return s


def _int_budgets(budget_gmacs: float | None, budget_params: float | None) -> tuple[int | None, int | None]:
    """(parameters, kilo-MACs), both rounded down, from GMACs and millions of parameters."""
    budget = Budget(budget_gmacs, budget_params)
    if budget.params_m is not None and budget.params_m > PARAMS_M_CEILING:
        raise ZooforgeError(f"`budget_params` is in millions of parameters; got {budget_params:g} (give "
                            f"{budget_params / 1e6:g} for {budget_params:g} parameters).")
    return budget.max_params, None if budget.gmacs is None else int(math.floor(budget.gmacs * KMACS + 1e-9))


def solve(problem: Problem, budget_gmacs: float | None = None, budget_params: float | None = None, *,
          top_k: int = 1, time_limit: float = 10.0, seed: int = 0, distinct: str = "assembly") -> SolveResult:
    """Best ``top_k`` distinct assemblies within the budgets (``budget_gmacs`` in GMACs,
    ``budget_params`` in millions of parameters, as everywhere in zooforge).

    ``distinct="assembly"``: each next solution differs from all earlier ones somewhere (the usual
    top-k). ``distinct="last"``: each ends in a last-stage block no earlier solution ended in, i.e.
    the best assembly for each of the ``top_k`` best final blocks, a structurally diverse short list
    (the plain top-k often differs only in an early stage whose score is noise)."""
    if distinct not in ("assembly", "last"):
        raise ValueError(f"`distinct` must be 'assembly' or 'last'; got {distinct!r}.")
    import time

    from ortools.sat.python import cp_model

    started = time.perf_counter()
    p_budget, g_budget = _int_budgets(budget_gmacs, budget_params)
    model, x = _model(problem, p_budget, g_budget, "score")
    solver = _solver(time_limit, seed)
    names = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE", cp_model.INFEASIBLE: "INFEASIBLE",
             cp_model.MODEL_INVALID: "INVALID", cp_model.UNKNOWN: "UNKNOWN"}
    result = SolveResult("UNKNOWN")
    for n in range(top_k):
        status = solver.Solve(model)
        name = names.get(status, "UNKNOWN")
        if n == 0:
            result.status = name
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            break
        choice = tuple(next(i for i, v in enumerate(row) if solver.Value(v)) for row in x)
        obj, params, kmacs, _ = problem.evaluate(choice)
        result.solutions.append(Solution(choice, [problem.stages[k][i] for k, i in enumerate(choice)],
                                         obj / SCORE_SCALE, params, kmacs / KMACS))
        if distinct == "last":
            model.Add(x[-1][choice[-1]] == 0)
        else:
            model.Add(sum(x[k][i] for k, i in enumerate(choice)) <= len(choice) - 1)   # no-good cut
    if result.status == "INFEASIBLE":
        for objective in ("gmacs", "params"):
            m, xs = _model(problem, p_budget if objective == "gmacs" else None,
                           g_budget if objective == "params" else None, objective)
            s = _solver(time_limit, seed)
            if s.Solve(m) in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                choice = tuple(next(i for i, v in enumerate(row) if s.Value(v)) for row in xs)
                _, params, kmacs, _ = problem.evaluate(choice)
                if objective == "gmacs":
                    result.smallest_gmacs = kmacs / KMACS
                else:
                    result.smallest_params = params
    result.seconds = time.perf_counter() - started
    return result


def brute_force(problem: Problem, budget_gmacs: float | None = None, budget_params: float | None = None):
    """Enumerate every assembly (small instances only): (best integer objective, its choice) or None."""
    p_budget, g_budget = _int_budgets(budget_gmacs, budget_params)
    best = None
    for choice in itertools.product(*[range(len(s)) for s in problem.stages]):
        obj, params, kmacs, ok = problem.evaluate(choice)
        if not ok or (p_budget is not None and params > p_budget) or (g_budget is not None and kmacs > g_budget):
            continue
        if best is None or obj > best[0]:
            best = (obj, choice)
    return best
