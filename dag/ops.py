"""The operation catalogs: one definition of every op of every workload.

Each training batch of a memory-based temporal GNN runs the same ten operations (`OPS`); each
snapshot of a discrete-time (snapshot-based) dynamic GNN runs the five of `SNAPSHOT_OPS`, and
its epoch ends with the gradient all-reduce and the step (the same two ops as M-TGNN's). A schedule
places each (op, batch) on a rank and a *lane* (a queue that runs one action at a time); while
it runs, an op holds one or more *resources* (a GPU, a copy engine, CPU cores, the network).
The lane is where an op goes by default; the resources are what it competes for.

Examples
--------
>>> OPS["MEM_WRITE"].lane
'd2h'
>>> [op.name for op in OPS.values() if op.moves_bytes]
['FEAT', 'MEM_FETCH', 'MEM_WRITE', 'GRAD_SYNC', 'STEP']
>>> list(WORKLOADS["snapshot"])
['LOAD', 'AGG', 'DENSE', 'RNN', 'BWD', 'GRAD_SYNC', 'STEP']
"""

from __future__ import annotations

from typing import NamedTuple

from tgpipe.errors import InputError

__all__ = [
    "ALL_OPS",
    "LANES",
    "OPS",
    "SNAPSHOT_OPS",
    "WORKLOADS",
    "Op",
    "action_resources",
    "node_name",
    "op_names",
    "parse_node",
    "require_op",
]

#: The queues of one rank. Lanes of one rank run concurrently (CUDA streams, worker threads).
#: ``gpu2`` is a second worker on the same GPU (BLAD's two worker processes per GPU): its ops
#: share the rank's GPU with those of ``gpu``.
LANES: tuple[str, ...] = ("gpu", "gpu2", "h2d", "d2h", "cpu", "net")


class Op(NamedTuple):
    """One operation of a training batch."""

    name: str
    lane: str  #: default lane
    resources: tuple[str, ...]  #: resource kinds held while it runs
    moves_bytes: bool  #: whether it transfers data (its profile entry gives the bytes)
    doc: str


_CATALOG = (
    Op(
        "SAMPLE",
        "cpu",
        ("cpu",),
        False,
        "temporal neighbour sampling of the batch roots (src, dst, negatives)",
    ),
    Op("FEAT", "h2d", ("cpu", "h2d"), True, "gather node/edge features, copy to device"),
    Op(
        "MEM_FETCH",
        "h2d",
        ("h2d",),
        True,
        "gather memory + mailbox rows of the roots (host store, or receive from the previous rank)",
    ),
    Op("MEM_ROOT", "gpu", ("gpu",), False, "GRU memory update of the roots"),
    Op(
        "MEM_WRITE",
        "d2h",
        ("d2h",),
        True,
        "write the roots' new memory + mails back (host store, or send to the next rank)",
    ),
    Op(
        "MEM_SUPPORT",
        "gpu",
        ("h2d", "gpu"),
        False,
        "fetch + GRU for the other sampled nodes (neighbours, negatives)",
    ),
    Op("FWD", "gpu", ("gpu",), False, "attention embedding, link predictor, loss"),
    Op("BWD", "gpu", ("gpu",), False, "backward"),
    Op("GRAD_SYNC", "net", ("net",), True, "all-reduce of gradients (synchronous groups)"),
    Op(
        "STEP",
        "gpu",
        ("gpu",),
        True,
        "optimizer step (in a ring: receive weights and optimizer state, step, send)",
    ),
)

#: Catalog by name, in the order a batch runs them.
OPS: dict[str, Op] = {op.name: op for op in _CATALOG}

_SNAPSHOT_CATALOG = (
    Op("LOAD", "h2d", ("h2d",), True, "copy the snapshot's edges and vertex ids to the device"),
    Op(
        "AGG",
        "gpu",
        ("gpu",),
        False,
        "normalised sparse aggregation over the snapshot's edges (memory-bound)",
    ),
    Op("DENSE", "gpu", ("gpu",), False, "the GCN's weight GEMM and activation (compute-bound)"),
    Op(
        "RNN",
        "gpu",
        ("gpu",),
        True,
        "GRU over the snapshot's vertices from the previous hidden state; predictor and loss",
    ),
    OPS["BWD"],
    OPS["GRAD_SYNC"],
    OPS["STEP"],
)

#: The snapshot workload's catalog, in the order a snapshot runs them (see
#: `tgpipe.dag.snapshot`); BWD, GRAD_SYNC and STEP are the M-TGNN ops, the same records.
SNAPSHOT_OPS: dict[str, Op] = {op.name: op for op in _SNAPSHOT_CATALOG}

#: Workload name -> its catalog.
WORKLOADS: dict[str, dict[str, Op]] = {"mtgnn": OPS, "snapshot": SNAPSHOT_OPS}

#: Every op of every workload by name (a name means one op, whatever the workload).
ALL_OPS: dict[str, Op] = {name: op for ops in WORKLOADS.values() for name, op in ops.items()}


def op_names() -> tuple[str, ...]:
    """Names of all ops, in catalog order."""
    return tuple(OPS)


def require_op(name: str) -> Op:
    """The catalog entry for `name`; an InputError that lists the valid names otherwise."""
    try:
        return OPS[name]
    except KeyError:
        raise InputError(f"unknown op {name!r}: expected one of {', '.join(OPS)}") from None


def node_name(op: str, batch: int) -> str:
    """Text form of a DAG node or schedule action: ``FWD17``."""
    return f"{op}{batch}"


def parse_node(text: str) -> tuple[str, int]:
    """Inverse of `node_name`; an InputError for text that names no known op and batch."""
    stripped = text.strip()
    head = stripped.rstrip("0123456789")
    digits = stripped[len(head) :]
    if not digits or head not in ALL_OPS:
        raise InputError(f"bad action {text!r}: expected an op name and a batch, like FWD17")
    return head, int(digits)


def action_resources(op: str, lane: str, compute: str = "gpu") -> tuple[str, ...]:
    """Resources an action holds: its op's own on the op's default lane; moved to another
    lane (MEM_WRITE sent over ``net``, say), that lane's resource alone. Where the ranks
    compute on CPUs (``compute="cpu"``, see `tgpipe.dag.profile.COMPUTE`), every op but the
    all-reduce holds the rank's process (its ``gpu``: one op at a time) and one of the
    machine's cores, whatever its lane: the lanes are threads of one process there. The
    second worker lane ``gpu2`` holds the same GPU as ``gpu``."""
    if compute == "cpu" and op != "GRAD_SYNC":
        return ("gpu", "cpu")
    entry = ALL_OPS[op]
    if entry.lane == lane or (lane == "gpu2" and entry.lane == "gpu"):
        return entry.resources
    return ("gpu",) if lane == "gpu2" else (lane,)
