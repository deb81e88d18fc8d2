"""Lower bounds on the period per batch of any periodic schedule.

No schedule beats ``max(cycle bound, resource bound)``:

- the **cycle bound** is the maximum cycle ratio of the batch-periodic graph: the graph of one
  *unit* of U batches (U = lcm(g, W), so that ranks and groups repeat), whose edges are labelled
  with how many units back their source lies. A cycle's ratio is the time on it (op costs plus
  transfer delays where consecutive ops run on different ranks) over the units it spans. The
  memory chain MEM_WRITE -> MEM_FETCH -> MEM_ROOT -> MEM_WRITE spans s_mem+1 groups; the step
  chain spans one group.
- the **resource bound** is, for each resource kind, the work per batch over how many of it
  there are (GPU work over W GPUs, ...).

The periodic graph has at most 10 U nodes whatever the number of batches, so the bound costs
milliseconds for a GDELT epoch as for a toy one. Batch b runs on rank b mod W.

Examples
--------
>>> from tgpipe.dag import load_profile, sequential
>>> b = lower_bound(load_profile("gpu-illustrative"), sequential())
>>> b.binding
'resource gpu'
"""

from __future__ import annotations

import math
from typing import NamedTuple

import networkx as nx
import numpy as np

from tgpipe.dag.build import batch_edges, batch_ops, edge_bytes
from tgpipe.dag.cluster import Cluster
from tgpipe.dag.ops import OPS, action_resources, node_name, parse_node
from tgpipe.dag.profile import CostProfile
from tgpipe.dag.semantics import Semantics
from tgpipe.errors import InputError

__all__ = [
    "MEMORY_BACKENDS",
    "Bound",
    "lower_bound",
    "max_cycle_ratio",
    "periodic_graph",
    "resource_bound",
]

#: How node memory moves between ranks: through shared host memory, or as rows rank to rank.
MEMORY_BACKENDS = ("host", "rows")


class Bound(NamedTuple):
    """The lower bound per batch and what sets it."""

    per_batch: float  #: seconds per batch: max(cycle, max(resources))
    cycle: float  #: cycle bound per batch
    cycle_path: tuple[str, ...]  #: the binding cycle, nodes named OPposition within a unit
    cycle_batches: int  #: batches that the binding cycle spans
    resources: dict[str, float]  #: resource kind -> work per batch over its count

    @property
    def binding(self) -> str:
        """``cycle`` or ``resource KIND``: whichever sets the bound."""
        kind, value = max(self.resources.items(), key=lambda kv: kv[1])
        return "cycle" if self.cycle >= value else f"resource {kind}"

    def describe(self) -> str:
        """One line for people: the bound and its reason."""
        if self.binding == "cycle":
            ops, batches = _one_turn(self.cycle_path, self.cycle_batches)
            return (
                f"{self.per_batch * 1e3:.3f} ms/batch, set by the chain "
                f"{' -> '.join(ops)} repeating every {batches} batch(es)"
            )
        kind = self.binding.split()[1]
        return f"{self.per_batch * 1e3:.3f} ms/batch, set by {kind} work spread over the cluster"


def _one_turn(path: tuple[str, ...], batches: int) -> tuple[list[str], int]:
    """The shortest op pattern that repeats around a cycle, started at its first op in catalog
    order, and the batches one repetition spans."""
    ops = [parse_node(v)[0] for v in path]
    n = len(ops)
    k = next(k for k in range(1, n + 1) if n % k == 0 and ops == ops[k:] + ops[:k])
    turn = ops[:k]
    start = min(range(k), key=lambda j: list(OPS).index(turn[j]))
    return turn[start:] + turn[:start], batches * k // n


def _unit(semantics: Semantics, cluster: Cluster) -> int:
    return math.lcm(semantics.g, cluster.n_ranks)


def periodic_graph(
    profile: CostProfile, semantics: Semantics, cluster: Cluster = Cluster(), memory: str = "host"
) -> nx.MultiDiGraph:
    """One unit of U batches; edge attributes ``offset`` (units back) and ``weight`` (cost of
    the source op plus the transfer delay of the edge), node attribute ``cost``."""
    if memory not in MEMORY_BACKENDS:
        raise InputError(
            f"unknown memory backend {memory!r}: use one of {', '.join(MEMORY_BACKENDS)}"
        )
    semantics.validate()
    cluster.validate()
    U = _unit(semantics, cluster)
    W = cluster.n_ranks
    inter = cluster.machines > 1
    cost = {op: profile.cost(op, W, inter=inter) for op in batch_ops(semantics)}
    reach = semantics.g * (2 + max(semantics.s_mem, semantics.s_w))
    base = U * (reach // U + 1)  # a unit whose predecessors all exist
    H = nx.MultiDiGraph(unit=U)
    for p in range(U):
        for op in batch_ops(semantics):
            H.add_node(node_name(op, p), op=op, cost=cost[op])
    for p in range(U):
        i = base + p
        for a, j, b, _, kind in batch_edges(semantics, i):
            nbytes = edge_bytes(profile, a, kind)
            ra, rb = j % W, i % W
            same_machine = cluster.same_machine(ra, rb)
            delay = profile.edge_delay(
                kind, nbytes, ra == rb, same_machine, memory, cluster.machines
            )
            H.add_edge(
                node_name(a, j % U),
                node_name(b, p),
                kind=kind,
                offset=i // U - j // U,
                weight=cost[a] + delay,
            )
    return H


def _relax(n: int, src: np.ndarray, dst: np.ndarray, val: np.ndarray) -> list[int] | None:
    """Bellman-Ford for longest paths from a virtual source; the edges of a positive cycle,
    or None when there is none."""
    order = np.argsort(dst, kind="stable")
    src_s, dst_s, val_s = src[order], dst[order], val[order]
    starts = np.flatnonzero(np.r_[True, dst_s[1:] != dst_s[:-1]])
    heads = dst_s[starts]
    idx = np.arange(len(order))
    dist = np.zeros(n)
    pred = np.full(n, -1)
    eps = 1e-12 * (1.0 + np.abs(val).sum())
    for _ in range(n + 1):
        cand = dist[src_s] + val_s
        best = np.maximum.reduceat(cand, starts)
        better = best > dist[heads] + eps
        if not better.any():
            return None
        hit = np.where(cand >= np.repeat(best, np.diff(np.r_[starts, len(cand)])), idx, len(cand))
        first = np.minimum.reduceat(hit, starts)
        dist[heads[better]] = best[better]
        pred[heads[better]] = order[first[better]]
    v = int(heads[better][0])
    for _ in range(n):  # walk back into the cycle
        v = int(src[pred[v]])
    cycle, u = [], v
    while True:
        e = int(pred[u])
        cycle.append(e)
        u = int(src[e])
        if u == v:
            return cycle[::-1]


def max_cycle_ratio(H: nx.MultiDiGraph) -> tuple[float, list[tuple[str, str, int]]]:
    """Maximum over cycles of sum(weight) / sum(offset), and one cycle that attains it.

    Dinkelbach's iteration: find any cycle whose ratio beats the best so far, move the best
    to its ratio, repeat until none does. Every cycle spans at least one unit (edges with
    offset 0 form a DAG), so each step strictly improves and the loop ends. (0, []) for a
    graph without cycles.
    """
    nodes = list(H.nodes)
    index = {v: k for k, v in enumerate(nodes)}
    edges = list(H.edges(keys=True, data=True))
    if not edges:
        return 0.0, []
    src = np.array([index[u] for u, _, _, _ in edges])
    dst = np.array([index[v] for _, v, _, _ in edges])
    w = np.array([d["weight"] for *_, d in edges], dtype=float)
    t = np.array([d["offset"] for *_, d in edges], dtype=float)
    ratio, best = 0.0, []
    while (cycle := _relax(len(nodes), src, dst, w - ratio * t)) is not None:
        span = t[cycle].sum()
        if span <= 0:  # pragma: no cover - build_dag guarantees acyclic units
            raise AssertionError("a cycle inside one unit of the periodic graph")
        new = w[cycle].sum() / span
        if new <= ratio:
            break
        ratio, best = new, cycle
    return ratio, [edges[e][:3] for e in best]


def resource_bound(
    profile: CostProfile, semantics: Semantics, cluster: Cluster = Cluster()
) -> dict[str, float]:
    """Resource kind -> seconds of its work per batch over how many of it the cluster has."""
    inter = cluster.machines > 1
    work: dict[str, float] = {}
    for op in batch_ops(semantics):
        for kind in action_resources(op, OPS[op].lane, profile.compute):
            work[kind] = work.get(kind, 0.0) + profile.cost(op, cluster.n_ranks, inter=inter)
    return {kind: w / cluster.resource_count(kind, profile) for kind, w in work.items()}


def lower_bound(
    profile: CostProfile,
    semantics: Semantics,
    n_ranks: int = 1,
    *,
    gpus_per_machine: int | None = None,
    memory: str = "host",
) -> Bound:
    """max(cycle bound, resource bound) per batch on `n_ranks` ranks (see module doc).

    A profile whose batches differ (`CostProfile.batch_scale`) is bounded as if every batch
    cost what its cheapest does (where that is less than the typical batch): a bound, if a
    loose one, whichever batches a run's window holds."""
    cluster = Cluster(n_ranks, gpus_per_machine).validate()
    H = periodic_graph(profile, semantics, cluster, memory)
    U = H.graph["unit"]
    ratio, cycle = max_cycle_ratio(H)
    span = sum(H.edges[e]["offset"] for e in cycle) * U
    path = tuple(u for u, _, _ in cycle)
    cheapest = min((1.0, *profile.batch_scale))
    resources = {k: v * cheapest for k, v in resource_bound(profile, semantics, cluster).items()}
    cycle_per_batch = ratio / U * cheapest
    per_batch = max(cycle_per_batch, max(resources.values()))
    return Bound(per_batch, cycle_per_batch, path, span, resources)
