"""The pure parts of ``select`` (:mod:`zooforge.selection.select`): who enters, the schedule of
epochs by round under a compute budget, and successive halving with the ranking's leader kept to the
last round (Jamieson & Talwalkar, AISTATS 2016). No training here: ``trial`` is a callable, so the
rules are tested on synthetic problems with known truth."""

from __future__ import annotations

import math
from typing import Callable, Sequence

__all__ = ["eligible", "entrants", "final_choice", "halving_rounds", "halving_trials", "plan_schedule", "round_epochs",
           "schedule_cost", "successive_halving"]


def eligible(table, metric: str) -> list[dict]:
    """Rows that may enter, in ranking order: not failed, scored by ``metric``, within the budgets."""
    return [r for r in table.iter_rows(named=True)
            if r.get("error") is None and r.get(metric) is not None and r.get("within_budget", True)]


def entrants(table, metric: str, min_entrants: int = 2, max_entrants: int = 16) -> list[str]:
    """Models the ranking cannot separate from its leader: the leader, then (in ranking order) every
    model whose interval of ``metric`` reaches the leader's lower bound; without intervals, the top
    ``min_entrants``. Failed or unscored models never enter."""
    rows = eligible(table, metric)
    if not rows:
        return []
    leader = rows[0]
    floor = leader.get(f"{metric}_lo")
    chosen = [leader["model"]]
    for r in rows[1:]:
        hi = r.get(f"{metric}_hi")
        if len(chosen) < min_entrants or (floor is not None and hi is not None and hi >= floor):
            chosen.append(r["model"])
        if len(chosen) >= max_entrants:
            break
    return chosen


def halving_rounds(n: int) -> int:
    """Rounds successive halving trains over ``n`` arms: the survivors halve (rounded up) until the
    round that trains two or fewer."""
    rounds = 1
    while n > 2:
        n, rounds = math.ceil(n / 2), rounds + 1
    return rounds


def round_epochs(n: int, final: int) -> list[int]:
    """Each round's epochs for ``n`` arms: doubling, the last round at ``final``, at least one."""
    s = halving_rounds(n)
    return [max(1, math.ceil(final / 2 ** (s - 1 - r))) for r in range(s)]


def schedule_cost(costs: Sequence[float], epochs: Sequence[int]) -> float:
    """An upper bound on the compute of successive halving over arms with per-epoch ``costs`` and
    per-round ``epochs``: the survivors are unknown, so each round is charged for the most expensive
    arms that could remain."""
    worst, alive, total = sorted(costs, reverse=True), len(costs), 0.0
    for e in epochs:
        total += e * sum(worst[:alive])
        alive = math.ceil(alive / 2)
    return total


def plan_schedule(costs: Sequence[float], budget: float, *, min_arms: int = 1,
                  max_epochs: int = 10) -> tuple[int, list[int]]:
    """(arms, epochs per round): the most arms (a prefix of ``costs``, in ranking order, at least
    ``min_arms``) whose schedule still ends at ``max_epochs`` within ``budget``; if not even
    ``min_arms`` can end there, those arms with the longest last round that fits; and while not one
    epoch each fits, fewer arms. (0, []) when no arm can train one epoch."""
    floor = min(max(min_arms, 1), len(costs))
    for n in range(len(costs), floor - 1, -1):
        if schedule_cost(costs[:n], round_epochs(n, max_epochs)) <= budget:
            return n, round_epochs(n, max_epochs)
    for n in range(floor, 0, -1):
        for final in range(max_epochs - 1, 0, -1):
            if schedule_cost(costs[:n], round_epochs(n, final)) <= budget:
                return n, round_epochs(n, final)
    return 0, []


def successive_halving(arms: Sequence[str], epochs: Sequence[int], trial: Callable[[str, int, int], float], *,
                       incumbent: str | None = None,
                       decide: Callable[[list[str], dict[str, float]], str] | None = None) -> tuple[str, list[dict]]:
    """Run the halving: round r trains every surviving arm for ``epochs[r]`` epochs,
    ``trial(arm, epochs, round)`` returning its validation score. The better half survives each
    round (ties to the earlier arm, i.e. the ranking); ``incumbent`` survives every round however it
    scores. The last round's finalists (in ranking order) and their scores go to ``decide``
    (default: the best, ties to the earlier arm). Returns (winner, per-trial rows)."""
    arms = list(arms)
    if len(epochs) != halving_rounds(len(arms)):
        raise ValueError(f"{len(arms)} arms take {halving_rounds(len(arms))} round(s); got epochs for {len(epochs)}.")
    alive, rows = arms, []
    for r, e in enumerate(epochs):
        scores = {arm: trial(arm, e, r) for arm in alive}
        rows += [{"round": r, "model": arm, "epochs": e, "val_accuracy": scores[arm]} for arm in alive]
        best_first = sorted(alive, key=lambda a: (-scores[a], arms.index(a)))
        if r == len(epochs) - 1:
            return (decide(alive, scores) if decide else best_first[0]), rows
        survivors = best_first[:math.ceil(len(alive) / 2)]
        if incumbent in alive and incumbent not in survivors:
            survivors[-1] = incumbent
        alive = [a for a in arms if a in survivors]
    raise AssertionError("unreachable: the last round returns")


def halving_trials(n: int) -> int:
    """How many trials successive halving runs over ``n`` arms: every round's survivors, down to one."""
    total = n
    while n > 1:
        n = math.ceil(n / 2)
        total += n if n > 1 else 0
    return total


def final_choice(evidence, leader: int | None, epochs: int, full_epochs: int) -> dict:
    """The last round's decision between the ranking's leader (index ``leader`` into the finalists'
    per-sample validation ``evidence``) and the best other finalist: the challenger replaces the
    leader only if it wins the paired test (:func:`zooforge.tuning.paired.keep`) *and* the trials
    were as long as the fine-tune they stand for (``epochs >= full_epochs``). Learning curves cross:
    a model that leads after 4 of 10 epochs is not the better one after 10 as often as a paired test
    on the validation samples would say, so shorter trials prune the field but do not overturn the
    ranking. Returns kept and challenger (indices), lead (standard errors of the paired difference),
    passed (whether the test alone would replace the leader) and full_length."""
    from zooforge.tuning.paired import keep

    kept, challenger, lead = keep(evidence, leader)
    passed = leader is not None and kept != leader
    full_length = epochs >= full_epochs
    if passed and not full_length:
        kept = leader
    return {"kept": kept, "challenger": challenger, "lead": lead, "passed": passed, "full_length": full_length}
