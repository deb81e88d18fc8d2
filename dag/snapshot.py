"""The runtime-analysis DAG of a snapshot-based (discrete-time) dynamic GNN epoch.

A discrete-time model (a GCN layer over each graph snapshot, a GRU across snapshots) trains
on a sequence of snapshots whose sizes differ a lot. One training *position* t runs five ops
(`tgpipe.dag.ops.SNAPSHOT_OPS`): LOAD (its edges to the device), the GCN's AGG (sparse,
memory-bound) and DENSE (GEMM, compute-bound) in the order the model is written in, RNN
(GRU from the previous hidden state, predictor, loss) and BWD. The positions are cut into
*groups* of `group` consecutive positions; the hidden state starts from zero at each group
and flows t-1 -> t inside it (detached: each position's backward covers its own ops), so
groups have no data dependency on each other. Every position computes with the weights of
the epoch's start; the epoch ends with one all-reduce of the summed gradients and one step
on every rank. That is what `tgpipe.executor.snapshot_reference` trains, exactly.

A node is (op, unit). A unit is a position, or with a vertex partition into `parts` parts,
one part of a position: unit u = t * parts + p. GRAD_SYNC r and STEP r are rank r's share
of the epoch's all-reduce and its step. Edges, with the kinds of `tgpipe.dag.build`:

- ``data``: LOAD -> first GCN op -> second -> RNN -> BWD of a unit; GRAD_SYNC r -> STEP r;
- ``hidden``: RNN(t-1, p) -> RNN(t, p) inside a group: the hidden-state rows travel;
- ``halo`` (parts > 1): the op before AGG on every other part of the same position ->
  AGG(t, p): a vertex partition exchanges its neighbours' rows every layer; and RNN(t, q)
  -> BWD(t, p): the link predictor's pairs span parts, so its loss and backward need the
  other parts' new hidden rows. The gradients of those rows go back to their parts inside
  BWD (`tgpipe.executor.snapshot_parts`); that exchange among the BWDs of one position
  would be a cycle here, so the DAG leaves it out (and with it its cost);
- ``group``: every BWD -> every GRAD_SYNC: the all-reduce waits for all gradients.

Costs follow the sizes: an op on a unit of V vertices and E edges costs
``OpCost.seconds(V, E)`` of the profile (a part: V / parts, E / parts).

Examples
--------
>>> from tgpipe.dag import load_profile
>>> w = SnapshotWorkload(((100, 400), (50, 90), (300, 2000)), n_nodes=500, group=2)
>>> preds = w.predecessors(n_ranks=1)
>>> sorted(p for p, _ in preds["RNN", 1])
[('DENSE', 1), ('RNN', 0)]
>>> preds["RNN", 2]  # a group starts: no hidden edge
[(('DENSE', 2), 'data')]
>>> round(w.cost(load_profile("snapshot-gpu-illustrative"), "AGG", 2) * 1e3, 3)  # ms
0.326
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import networkx as nx

from tgpipe.dag.ops import SNAPSHOT_OPS, node_name
from tgpipe.dag.profile import CostProfile
from tgpipe.errors import InputError

__all__ = [
    "ORDERS",
    "OP_ORDER",
    "SNAPSHOT_EDGE_KINDS",
    "SnapshotWorkload",
    "snapshot_bound",
]

#: The two ways to write the GCN layer: aggregate then transform, or transform then aggregate
#: (equal in exact arithmetic; different costs, different rounding).
ORDERS = ("agg_first", "dense_first")
#: The forward ops of one position, in data order, for each GCN order.
OP_ORDER = {
    "agg_first": ("LOAD", "AGG", "DENSE", "RNN"),
    "dense_first": ("LOAD", "DENSE", "AGG", "RNN"),
}
SNAPSHOT_EDGE_KINDS = ("data", "hidden", "halo", "group")
#: Ops that run once per unit (GRAD_SYNC and STEP run once per rank).
UNIT_OPS = ("LOAD", "AGG", "DENSE", "RNN", "BWD")
#: Ops that compute on the GPU: the ones two workers of one GPU run at once.
GPU_OPS = ("AGG", "DENSE", "RNN", "BWD", "STEP")


Preds = dict[tuple[str, int], list[tuple[tuple[str, int], str]]]


@dataclass(frozen=True)
class SnapshotWorkload:
    """One epoch of snapshot training: the sizes of its positions and how they are cut.

    `sizes`: (vertices, edges) of each training position's snapshot; `group`: positions per
    group; `orders`: the GCN order of each group (one entry: every group); `parts`: vertex
    partition parts per position (1: whole snapshots); `state_bytes`: the hidden state
    (what a hidden edge carries between ranks); `row_bytes`: one vertex's feature row (a
    halo exchange carries some of them).
    """

    sizes: tuple[tuple[int, int], ...]
    n_nodes: int
    group: int = 1
    orders: tuple[str, ...] = ("agg_first",)
    parts: int = 1
    state_bytes: int = 0
    row_bytes: int = 0

    def __post_init__(self):
        if not self.sizes:
            raise InputError("a snapshot workload needs at least one training position")
        for name in ("n_nodes", "group", "parts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"snapshot workload: {name} must be an integer >= 1, got {value}")
        for v, e in self.sizes:
            if v < 0 or e < 0:
                raise InputError(f"snapshot workload: sizes must be >= 0, got ({v}, {e})")
        bad = [o for o in self.orders if o not in ORDERS]
        if bad or len(self.orders) not in (1, self.n_groups):
            raise InputError(
                f"snapshot workload: orders must be one of {', '.join(ORDERS)}, one for all "
                f"groups or one per group ({self.n_groups}), got {', '.join(self.orders)}"
            )

    # ---- shape ------------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        return len(self.sizes)

    @property
    def n_units(self) -> int:
        return self.n_positions * self.parts

    @property
    def n_groups(self) -> int:
        return math.ceil(self.n_positions / self.group)

    def position(self, unit: int) -> int:
        return unit // self.parts

    def group_of(self, unit: int) -> int:
        return self.position(unit) // self.group

    def group_units(self, group: int) -> range:
        """The units of a group, in order (a group is whole positions, all their parts)."""
        first = group * self.group * self.parts
        return range(first, min(first + self.group * self.parts, self.n_units))

    def order(self, unit: int) -> str:
        return self.orders[self.group_of(unit) % len(self.orders)]

    def size(self, unit: int) -> tuple[float, float]:
        """(vertices, edges) that one unit works on."""
        v, e = self.sizes[self.position(unit)]
        return v / self.parts, e / self.parts

    # ---- the DAG ------------------------------------------------------------------------------
    def edges(self, n_ranks: int) -> Iterator[tuple[str, int, str, int, str]]:
        """Every edge as (op, unit, op, unit, kind): the one definition of the dependencies."""
        P = self.parts
        for u in range(self.n_units):
            chain = (*OP_ORDER[self.order(u)], "BWD")
            for a, b in zip(chain, chain[1:], strict=False):
                yield a, u, b, u, "data"
            t, p = divmod(u, P)
            if t % self.group:
                yield "RNN", u - P, "RNN", u, "hidden"
            if P > 1:
                before = chain[chain.index("AGG") - 1]
                for q in range(P):
                    if q != p:
                        yield before, t * P + q, "AGG", u, "halo"
                        yield "RNN", t * P + q, "BWD", u, "halo"
            for r in range(n_ranks):
                yield "BWD", u, "GRAD_SYNC", r, "group"
        for r in range(n_ranks):
            yield "GRAD_SYNC", r, "STEP", r, "data"

    def predecessors(self, n_ranks: int) -> Preds:
        """(op, unit) -> [((op, unit), kind)]: the unrolled DAG as plain dicts, like
        `tgpipe.dag.build.predecessors` for M-TGNN batches."""
        preds: Preds = {(op, u): [] for u in range(self.n_units) for op in UNIT_OPS}
        preds.update({(op, r): [] for r in range(n_ranks) for op in ("GRAD_SYNC", "STEP")})
        for a, j, b, i, kind in self.edges(n_ranks):
            preds[b, i].append(((a, j), kind))
        return preds

    # ---- costs -----------------------------------------------------------------------------
    def cost(
        self, profile: CostProfile, op: str, unit: int, n_ranks: int = 1, inter: bool = False
    ) -> float:
        """Seconds of (op, unit) run alone: GRAD_SYNC and STEP (unit = rank) cost what the
        profile says for the epoch's gradients (`inter`: across machines), the others what
        their unit's size says."""
        _require_snapshot_profile(profile)
        if op in ("GRAD_SYNC", "STEP"):
            return profile.cost(op, n_ranks, inter)
        return profile.ops[op].seconds(*self.size(unit))

    def edge_bytes(self, profile: CostProfile, src: tuple[str, int], kind: str) -> int:
        """Bytes an edge moves when its ends run on different ranks."""
        if kind == "hidden":
            return self.state_bytes
        if kind == "halo":  # rows of one other part's vertices adjacent to this part
            edges = self.sizes[self.position(src[1])][1]
            hidden = src[0] in ("RNN", "DENSE")  # h, or X W (DENSE before AGG)
            width = self.state_bytes / self.n_nodes if hidden else self.row_bytes
            return int(width * 2 * edges / self.parts**2)
        return 0

    def dag(self, profile: CostProfile, n_ranks: int = 1) -> nx.DiGraph:
        """The epoch as a networkx DAG: nodes ``OPunit`` with op, unit, lane, cost; edges
        with kind and bytes (as `tgpipe.dag.build.build_dag` for batches)."""
        G = nx.DiGraph(workload="snapshot", profile=profile.name, n_units=self.n_units)
        for op, u in self.predecessors(n_ranks):
            G.add_node(
                node_name(op, u),
                op=op,
                batch=u,
                lane=SNAPSHOT_OPS[op].lane,
                resources=SNAPSHOT_OPS[op].resources,
                cost=self.cost(profile, op, u, n_ranks),
            )
        for a, j, b, i, kind in self.edges(n_ranks):
            nbytes = self.edge_bytes(profile, (a, j), kind)
            G.add_edge(node_name(a, j), node_name(b, i), kind=kind, bytes=nbytes)
        return G


def _require_snapshot_profile(profile: CostProfile) -> None:
    if profile.workload != "snapshot":
        raise InputError(
            f"profile {profile.name!r} is for the {profile.workload} workload; a snapshot "
            "workload needs a snapshot profile (e.g. snapshot-gpu-illustrative)"
        )


class SnapshotBound(NamedTuple):
    """A lower bound on the epoch's time on W GPUs and what sets it."""

    seconds: float
    binding: str  #: "critical path", "compute", "memory" or "workers"
    parts: dict[str, float]


def snapshot_bound(
    workload: SnapshotWorkload, profile: CostProfile, n_ranks: int, workers: int = 2
) -> SnapshotBound:
    """No schedule on `n_ranks` GPUs with `workers` lanes each, whole snapshots or a vertex
    partition into n_ranks parts, ends the epoch sooner than the lesser, over those two
    partitionings, of:

    - the critical path (every op at full speed, transfers free);
    - the GPUs' compute: an op of `work` seconds alone uses compute share c of a GPU for
      that long, so all of them need sum(c * work) GPU-seconds of compute over n_ranks GPUs
      (and the same for memory bandwidth, with its shares);
    - the workers: each op runs at most at full speed on one of n_ranks * workers lanes.

    The all-reduce and step at the end are in the critical path.
    """
    cuts = {1, n_ranks}
    bounds = [
        _bound(dataclasses.replace(workload, parts=p), profile, n_ranks, workers) for p in cuts
    ]
    return min(bounds, key=lambda b: b.seconds)


def _bound(
    workload: SnapshotWorkload, profile: CostProfile, n_ranks: int, workers: int
) -> SnapshotBound:
    from tgpipe.dag.build import critical_path

    G = workload.dag(profile, n_ranks)
    path, _ = critical_path(G)
    compute = memory = work = 0.0
    for _, data in G.nodes(data=True):
        if data["op"] in GPU_OPS and data["op"] != "STEP":
            c = profile.ops[data["op"]]
            compute += c.compute * data["cost"]
            memory += c.memory * data["cost"]
            work += data["cost"]
    parts = {
        "critical path": path,
        "compute": compute / n_ranks,
        "memory": memory / n_ranks,
        "workers": work / (n_ranks * workers),
    }
    binding = max(parts, key=parts.__getitem__)
    return SnapshotBound(parts[binding], binding, parts)
