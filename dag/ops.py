"""The operation catalog of M-TGNN training: one definition of every op.

Each training batch of a memory-based temporal GNN runs the same ten operations. A schedule
places each (op, batch) on a rank and a *lane* (a queue that runs one action at a time); while
it runs, an op holds one or more *resources* (a GPU, a copy engine, CPU cores, the network).
The lane is where an op goes by default; the resources are what it competes for.

Examples
--------
>>> OPS["MEM_WRITE"].lane
'd2h'
>>> [op.name for op in OPS.values() if op.moves_bytes]
['FEAT', 'MEM_FETCH', 'MEM_WRITE', 'GRAD_SYNC', 'STEP']
"""

from __future__ import annotations

from typing import NamedTuple

from tgpipe.errors import InputError

__all__ = [
    "LANES",
    "OPS",
    "Op",
    "action_resources",
    "node_name",
    "op_names",
    "parse_node",
    "require_op",
]

#: The queues of one rank. Lanes of one rank run concurrently (CUDA streams, worker threads).
LANES: tuple[str, ...] = ("gpu", "h2d", "d2h", "cpu", "net")


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
    if not digits or head not in OPS:
        raise InputError(f"bad action {text!r}: expected an op name and a batch, like FWD17")
    return head, int(digits)


def action_resources(op: str, lane: str, compute: str = "gpu") -> tuple[str, ...]:
    """Resources an action holds: its op's own on the op's default lane; moved to another
    lane (MEM_WRITE sent over ``net``, say), that lane's resource alone. Where the ranks
    compute on CPUs (``compute="cpu"``, see `tgpipe.dag.profile.COMPUTE`), every op but the
    all-reduce holds the rank's process (its ``gpu``: one op at a time) and one of the
    machine's cores, whatever its lane: the lanes are threads of one process there."""
    if compute == "cpu" and op != "GRAD_SYNC":
        return ("gpu", "cpu")
    return OPS[op].resources if OPS[op].lane == lane else (lane,)
