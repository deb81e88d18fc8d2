"""The runtime-analysis DAG: one node per (op, batch), one edge per dependency.

Edges carry a *kind*:

- ``data``: inside a batch (SAMPLE -> FEAT -> FWD, MEM_FETCH -> MEM_ROOT -> MEM_WRITE, ...);
- ``memory``: MEM_WRITE of every batch of groups G-1-2s_mem..G-1-s_mem -> MEM_FETCH and
  MEM_SUPPORT of the batches of group G (with g = 1 and s_mem = 0: MEM_WRITE(i-1) ->
  MEM_FETCH(i)): a read sees every write before its version, and the older of those are not
  ordered before it by any other path;
- ``param``: STEP(i - g(1+s_w)) -> MEM_ROOT(i), MEM_SUPPORT(i) and FWD(i), the ops that
  compute with the weights (the memory GRU is a weight too); and STEP(i-g) -> STEP(i) (steps
  are sequential);
- ``group``: BWD of each batch of a group -> GRAD_SYNC of the others (the all-reduce waits for
  all of its members).

MEM_WRITE depends on MEM_ROOT and FEAT (the batch's edge features go into the mails), never on
the FWD or BWD of its own batch or group: memory is detached, so the write-back may run before
training; that is the main trick of PipeTGL. (With s_w = 0 the GRU of batch i still waits for
the step of batch i-1, through its param edge.)

The memory store is versioned, so a read waits for the writes it must see and never for later
ones (no write-after-read edges): the executor keeps that promise.

Examples
--------
>>> from tgpipe.dag import load_profile, pipetgl
>>> G = build_dag(load_profile("gpu-illustrative"), pipetgl(4), n_batches=8)
>>> G.nodes["FWD5"]["resources"], G.edges["STEP1", "FWD5"]["kind"]
(('gpu',), 'param')
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

from tgpipe.dag.ops import OPS, node_name
from tgpipe.dag.profile import CostProfile
from tgpipe.dag.semantics import Semantics
from tgpipe.errors import InputError
from tgpipe.files import atomic_write

__all__ = [
    "EDGE_KINDS",
    "batch_edges",
    "batch_ops",
    "build_dag",
    "edge_bytes",
    "predecessors",
    "count_by_kind",
    "critical_path",
    "save_dag",
]

EDGE_KINDS = ("data", "memory", "param", "group")

_DATA_EDGES = (
    ("SAMPLE", "FEAT"),
    ("SAMPLE", "MEM_SUPPORT"),
    ("FEAT", "FWD"),
    ("FEAT", "MEM_WRITE"),
    ("MEM_FETCH", "MEM_ROOT"),
    ("MEM_ROOT", "MEM_WRITE"),
    ("MEM_ROOT", "FWD"),
    ("MEM_SUPPORT", "FWD"),
    ("FWD", "BWD"),
)


#: Ops that compute with the model's weights (the memory GRU, the embedding and predictor).
_WEIGHT_READERS = ("MEM_ROOT", "MEM_SUPPORT", "FWD")


def batch_ops(semantics: Semantics) -> tuple[str, ...]:
    """The ops one batch runs: GRAD_SYNC only where a synchronous group shares a step."""
    return tuple(op for op in OPS if op != "GRAD_SYNC" or semantics.g > 1)


def batch_edges(semantics: Semantics, i: int) -> Iterator[tuple[str, int, str, int, str]]:
    """Every edge into batch i's nodes, as (op, batch, op, batch, kind).

    The one definition of the DAG's dependencies. Sources may lie outside 0..n-1 (before the
    first batch, or in the unfinished part of a group): the caller drops them.
    """
    s_mem, s_w, g = semantics
    for a, b in _DATA_EDGES:
        yield a, i, b, i, "data"
    if g > 1:
        yield "BWD", i, "GRAD_SYNC", i, "data"
        yield "GRAD_SYNC", i, "STEP", i, "data"
        first = i - i % g
        for j in range(first, first + g):
            if j != i:
                yield "BWD", j, "GRAD_SYNC", i, "group"
    else:
        yield "BWD", i, "STEP", i, "data"
    # batch i reads the version after the writes of groups 0..G-1-s_mem; those of the groups
    # before G-1-s_mem are ordered before it through their own reads only back to group
    # G-1-2s_mem, so the edges come from each of the s_mem+1 groups G-1-2s_mem..G-1-s_mem
    last = i // g - 1 - s_mem
    for read in range(max(0, last - s_mem), last + 1):
        for j in range(read * g, read * g + g):
            yield "MEM_WRITE", j, "MEM_FETCH", i, "memory"
            yield "MEM_WRITE", j, "MEM_SUPPORT", i, "memory"
    if i - g * (1 + s_w) >= 0:
        for op in _WEIGHT_READERS:
            yield "STEP", i - g * (1 + s_w), op, i, "param"
    if i - g >= 0:
        yield "STEP", i - g, "STEP", i, "param"


def predecessors(
    semantics: Semantics, n_batches: int
) -> dict[tuple[str, int], list[tuple[tuple[str, int], str]]]:
    """(op, batch) -> its predecessors as ((op, batch), kind): the unrolled DAG as plain
    dicts, for code that walks every node and needs no graph object (validation, the
    simulator)."""
    ops = batch_ops(semantics)
    preds: dict[tuple[str, int], list[tuple[tuple[str, int], str]]] = {
        (op, i): [] for i in range(n_batches) for op in ops
    }
    for i in range(n_batches):
        for a, j, b, _, kind in batch_edges(semantics, i):
            if 0 <= j < n_batches:
                preds[b, i].append(((a, j), kind))
    return preds


def edge_bytes(profile: CostProfile, src_op: str, kind: str) -> int:
    """Bytes that cross a link if the edge's ends run on different ranks."""
    if kind in ("memory", "param"):
        return profile.ops[src_op].bytes  # memory rows; weights with optimizer state
    return 0


def build_dag(profile: CostProfile, semantics: Semantics, n_batches: int) -> nx.DiGraph:
    """The unrolled DAG of `n_batches` batches.

    Nodes are named ``OPbatch`` (``FWD17``) with attributes op, batch, lane, resources, cost
    (seconds, one rank) and bytes; edges have kind and bytes. It is checked acyclic.
    """
    semantics.validate()
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise InputError(f"number of batches must be an integer >= 1, got {n_batches!r}")
    ops = batch_ops(semantics)
    attrs = {
        op: {
            "op": op,
            "lane": OPS[op].lane,
            "resources": OPS[op].resources,
            "cost": profile.cost(op),
            "bytes": profile.ops[op].bytes,
        }
        for op in ops
    }
    edge_attrs = {
        (op, kind): {"kind": kind, "bytes": edge_bytes(profile, op, kind)}
        for op in ops
        for kind in EDGE_KINDS
    }
    G = nx.DiGraph(semantics=tuple(semantics), profile=profile.name, n_batches=n_batches)
    G.add_nodes_from(
        (node_name(op, i), {**attrs[op], "batch": i}) for i in range(n_batches) for op in ops
    )
    G.add_edges_from(
        (node_name(a, j), node_name(b, i), edge_attrs[a, kind])
        for i in range(n_batches)
        for a, j, b, _, kind in batch_edges(semantics, i)
        if 0 <= j < n_batches
    )
    if not nx.is_directed_acyclic_graph(G):  # pragma: no cover - guards batch_edges
        raise AssertionError("the runtime-analysis DAG has a cycle")
    return G


def count_by_kind(G: nx.DiGraph) -> tuple[Counter, Counter]:
    """(nodes per op, edges per kind)."""
    return (
        Counter(op for _, op in G.nodes(data="op")),
        Counter(kind for _, _, kind in G.edges(data="kind")),
    )


def critical_path(G: nx.DiGraph) -> tuple[float, list[str]]:
    """Longest path by node cost: the makespan with unlimited resources and free transfers."""
    finish: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for v in nx.topological_sort(G):
        pred = max(G.predecessors(v), key=finish.__getitem__, default=None)
        finish[v] = G.nodes[v]["cost"] + (finish[pred] if pred is not None else 0.0)
        best_pred[v] = pred
    if not finish:
        return 0.0, []
    end = max(finish, key=finish.__getitem__)
    path = [end]
    while best_pred[path[-1]] is not None:
        path.append(best_pred[path[-1]])
    return finish[end], path[::-1]


def save_dag(G: nx.DiGraph, path: str | os.PathLike) -> Path:
    """GraphML (``.graphml``) or node-link JSON (anything else), written atomically."""
    path = Path(path)
    H = G.copy()
    for _, data in H.nodes(data=True):
        data["resources"] = ",".join(data["resources"])
    H.graph["semantics"] = ",".join(map(str, G.graph["semantics"]))
    if path.suffix == ".graphml":
        buffer = io.BytesIO()
        nx.write_graphml(H, buffer)
        return atomic_write(path, buffer.getvalue())
    return atomic_write(path, json.dumps(nx.node_link_data(H, edges="edges"), indent=1) + "\n")
