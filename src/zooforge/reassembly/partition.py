"""Partition every network into K stages of functionally equivalent blocks (DeRy, Sec. 3.1).

DeRy asks for a cover set: K groups of blocks such that the blocks in a group, one from each network,
compute similar functions, and each network's blocks stay in order. A stage of network a is a run of
consecutive blocks [c_{k-1}, c_k); DeRy scores two stages by the similarity of their inputs plus
that of their outputs. Since stage k's output is stage k+1's input, the total similarity of a
partition is a sum over *cut points*: Σ_k Σ_{a<b} CKA(R^a(c^a_k), R^b(c^b_k)), where R^a(c) is
network a's representation after its first c blocks (the image at c = 0 and the final features at
c = n_a are shared endpoints). We maximise it by coordinate ascent: start every network at evenly
spaced relative depths, then repeatedly give one network its optimal cuts, found exactly by dynamic
programming over monotone cut positions, while the others stay fixed; stop when no network
changes. Each step cannot lower the objective, so it converges (to a local optimum; the reference
code's randomised k-medoids has the same guarantee and no exact step). The cut points live in a
networkx graph, one node per (network, cut) and CKA on the edges, which the DP reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from zooforge.errors import ZooforgeError

__all__ = ["Partition", "partition", "block_graph"]


@dataclass
class Partition:
    cuts: dict[str, list[int]]          # model -> [0, c_1, ..., c_{K-1}, n]
    similarity: float                   # mean CKA between corresponding cut points, over pairs and cuts
    stage_similarity: list[float]       # mean CKA at each interior cut (stage k's output)
    iterations: int

    @property
    def stages(self) -> int:
        return len(next(iter(self.cuts.values()))) - 1

    def blocks(self, model: str, stage: int) -> range:
        c = self.cuts[model]
        return range(c[stage], c[stage + 1])


def block_graph(reps: dict[str, list], cka: np.ndarray | None = None) -> nx.Graph:
    """Nodes (model, c) for c = 1..n-1 (interior cut points); edges between models carry CKA."""
    from zooforge.reassembly.similarity import cka_matrix

    nodes = [(m, c + 1) for m, rs in reps.items() for c in range(len(rs) - 1)]
    flat = [reps[m][c - 1] for m, c in nodes]
    sim = cka_matrix(flat) if cka is None else cka
    g = nx.Graph()
    g.add_nodes_from(nodes)
    for i, u in enumerate(nodes):
        for j in range(i + 1, len(nodes)):
            v = nodes[j]
            if u[0] != v[0]:
                g.add_edge(u, v, weight=float(sim[i, j]))
    return g


def _best_cuts(graph: nx.Graph, model: str, n: int, k: int, fixed: dict[str, list[int]]) -> tuple[list[int], float]:
    """Exact DP: cuts 0 < c_1 < ... < c_{k-1} < n of ``model`` maximising the summed edge weight to
    the other models' cut at the same index."""
    gain = np.zeros((k, n + 1))             # gain[j, c]: weight of placing cut j at block position c
    for j in range(1, k):
        for c in range(1, n):
            gain[j, c] = sum(graph.edges[(model, c), (other, cuts[j])]["weight"]
                             for other, cuts in fixed.items() if other != model)
    neg = -np.inf
    best = np.full((k, n + 1), neg)
    back = np.zeros((k, n + 1), dtype=int)
    best[0, 0] = 0.0
    for j in range(1, k):
        for c in range(j, n - (k - 1 - j)):
            prev = best[j - 1, :c]
            p = int(np.argmax(prev))
            best[j, c] = prev[p] + gain[j, c]
            back[j, c] = p
    last = int(np.argmax(best[k - 1, :n])) if k > 1 else 0
    cuts, c = [n], last
    for j in range(k - 1, 0, -1):
        cuts.append(c)
        c = back[j, c]
    cuts.append(0)
    return [int(c) for c in cuts[::-1]], float(best[k - 1, last]) if k > 1 else 0.0


def partition(reps: dict[str, list], stages: int, *, max_iter: int = 50, graph: nx.Graph | None = None) -> Partition:
    """Cut each model (``reps[m]``: representations after blocks 1..n_m) into ``stages`` stages."""
    if stages < 1:
        raise ValueError(f"`stages` must be at least 1; got {stages}.")
    short = {m: len(r) for m, r in reps.items() if len(r) < stages}
    if short:
        raise ZooforgeError(f"models with fewer blocks than the {stages} stages asked for: {short}; "
                            "ask for fewer stages or leave them out.")
    graph = graph or block_graph(reps)
    sizes = {m: len(r) for m, r in reps.items()}
    cuts = {m: [round(j * n / stages) for j in range(stages + 1)] for m, n in sizes.items()}
    for m, n in sizes.items():                 # even spacing may collide on short networks
        c = cuts[m]
        for j in range(1, stages):
            c[j] = min(max(c[j], c[j - 1] + 1), n - (stages - j))
    iterations = 0
    for iterations in range(1, max_iter + 1):
        changed = False
        for m, n in sizes.items():
            new, _ = _best_cuts(graph, m, n, stages, cuts)
            if new != cuts[m]:
                cuts[m], changed = new, True
        if not changed:
            break
    per_cut = []
    models = list(sizes)
    for j in range(1, stages):
        w = [graph.edges[(a, cuts[a][j]), (b, cuts[b][j])]["weight"]
             for i, a in enumerate(models) for b in models[i + 1:]]
        per_cut.append(float(np.mean(w)) if w else 1.0)
    return Partition(cuts, float(np.mean(per_cut)) if per_cut else 1.0, per_cut, iterations)
