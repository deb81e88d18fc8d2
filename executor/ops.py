"""The training step of one batch, cut into the DAG's ops: one function per catalog op.

The reference trainer, the distributed runtime and the profiler all call these functions,
so that what is measured, simulated and checked is one computation. Each op reads and fills
fields of a per-batch `BatchState`; the long-lived things an op touches are passed
explicitly: the `Stream` (graph, sampler, negatives), the `MemoryStore`, the model whose
weights compute (MEM_ROOT, MEM_SUPPORT, FWD, BWD) and the `Learner` that steps.

What each op needs from earlier ops of its batch is exactly the DAG's data edges
(`tgpipe.dag.build`): MEM_FETCH needs only `open_batch`; MEM_WRITE needs MEM_ROOT and FEAT;
FWD needs FEAT, MEM_ROOT and MEM_SUPPORT. Roots are the ends of the batch's events; the
support nodes are the sampled neighbours and the negatives that are not roots. Each distinct
root or negative is embedded once, at the batch's time (its first event's): its neighbours
are those before the batch, and its memory is the one before the batch too. A root that
takes part in several events gets one memory (the update depends on its stored rows only)
and the mail of its last event (in event order, and src before dst inside an event).

`OP_FUNCS` maps each op name to a function ``(state, worker)`` for a runtime that walks a
schedule; a `Worker` bundles what one rank owns.

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> from tgpipe.executor.memory import MemoryStore
>>> from tgpipe.executor.model import TGNConfig, build_model
>>> g = TemporalGraph(np.arange(40) % 5, 5 + np.arange(40) % 3, np.arange(40.0))
>>> stream = Stream(g, batch_size=8)
>>> model = build_model(TGNConfig(memory_dim=8, time_dim=4, embed_dim=8))
>>> worker = Worker(stream, MemoryStore(g.n_nodes, 8, model.mail_dim), Learner(model))
>>> state = open_batch(stream, 0)
>>> for op in ("SAMPLE", "FEAT", "MEM_FETCH", "MEM_ROOT", "MEM_WRITE", "MEM_SUPPORT",
...            "FWD", "BWD", "STEP"):
...     OP_FUNCS[op](state, worker)
>>> state.roots.tolist(), worker.store.version, worker.learner.steps
([0, 1, 2, 3, 4, 5, 6, 7], 1, 1)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tgpipe.dag.semantics import Semantics
from tgpipe.executor.learner import Learner
from tgpipe.executor.memory import MemoryRows, MemoryStore
from tgpipe.executor.model import TGN
from tgpipe.executor.sampler import Neighbours
from tgpipe.executor.stream import TRAIN, Stream
from tgpipe.executor.versions import memory_version

__all__ = [
    "OP_FUNCS",
    "BatchState",
    "Worker",
    "all_reduce_sum",
    "average_grads",
    "bwd",
    "feat",
    "fwd",
    "grad_sync",
    "mem_fetch",
    "mem_root",
    "mem_support",
    "mem_write",
    "open_batch",
    "sample",
    "step",
]


@dataclass(eq=False)
class BatchState:
    """What flows between the ops of one batch; each op fills the fields it names."""

    # open_batch: the batch, its events and its roots (all numpy unless said)
    phase: int
    epoch: int
    batch: int
    start: int
    stop: int
    mem_version: int  #: the store version its memory reads see
    device: torch.device
    src: np.ndarray
    dst: np.ndarray
    ts: np.ndarray
    roots: np.ndarray  #: [R] distinct ends of the batch's events, sorted
    mail_event: torch.Tensor  #: [R] (device) the batch event whose mail each root keeps
    mail_other: torch.Tensor  #: [R] (device) row in `roots` of that event's other end
    # SAMPLE
    neg: np.ndarray | None = None  #: [B] negative destinations
    queries: np.ndarray | None = None  #: [Q] the nodes to embed: roots and negatives, sorted
    nbrs: Neighbours | None = None  #: of the queries ([Q, k])
    support: np.ndarray | None = None  #: [S] sorted non-root nodes the batch reads
    query_row: np.ndarray | None = None  #: [Q] row of each query in roots ++ support
    nbr_row: np.ndarray | None = None  #: [Q, k] row of each neighbour (0 where padded)
    pair_query: np.ndarray | None = None  #: [3B] query of each src, then dst, then negative
    # FEAT (device tensors)
    x_query: torch.Tensor | None = None
    x_nbr: torch.Tensor | None = None
    x_mask: torch.Tensor | None = None
    x_slots: torch.Tensor | None = None  #: [V] flat indices of the real neighbours
    x_dt: torch.Tensor | None = None  #: [V] batch time - event time
    x_edge: torch.Tensor | None = None  #: [V, d_e] or None
    x_pair: torch.Tensor | None = None
    x_event_edge: torch.Tensor | None = None  #: [B, d_e] the batch's own events, or None
    x_node: torch.Tensor | None = None  #: [R + S, d_n] or None
    # MEM_FETCH, MEM_ROOT, MEM_SUPPORT
    root_rows: MemoryRows | None = None
    root_mem: torch.Tensor | None = None  #: [R, d] with grad
    support_mem: torch.Tensor | None = None  #: [S, d] with grad
    # FWD, BWD
    pos_logit: torch.Tensor | None = None
    neg_logit: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_value: float | None = None
    grads: list[torch.Tensor] | None = None

    @property
    def size(self) -> int:
        return self.stop - self.start


def open_batch(
    stream: Stream,
    batch: int,
    *,
    phase: int = TRAIN,
    epoch: int = 0,
    semantics: Semantics | None = None,
) -> BatchState:
    """The state of a batch before any op: its events, roots and the memory version it reads.

    Evaluation batches, and batches opened without semantics, read sequentially
    (version = batch).
    """
    start, stop = stream.events(phase, batch)
    graph, device = stream.graph, stream.device
    src, dst, ts = graph.src[start:stop], graph.dst[start:stop], graph.ts[start:stop]
    ends = np.stack([src, dst], axis=1).ravel()  # event order, src before dst
    other = np.stack([dst, src], axis=1).ravel()
    roots, first_from_end = np.unique(ends[::-1], return_index=True)
    last = len(ends) - 1 - first_from_end
    train = phase == TRAIN and semantics is not None
    version = memory_version(semantics, batch) if train else batch
    return BatchState(
        phase,
        epoch,
        batch,
        start,
        stop,
        version,
        device,
        src,
        dst,
        ts,
        roots,
        torch.from_numpy(last // 2).to(device),
        torch.from_numpy(np.searchsorted(roots, other[last])).to(device),
    )


def _rows_of(roots: np.ndarray, support: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Row of each node in the table roots ++ support (both sorted; nodes in one of them)."""
    at = np.searchsorted(roots, nodes).clip(max=len(roots) - 1)
    in_roots = roots[at] == nodes
    return np.where(in_roots, at, len(roots) + np.searchsorted(support, nodes))


def sample(state: BatchState, stream: Stream) -> None:
    """SAMPLE: negatives, the neighbours of roots and negatives, the support nodes."""
    neg = stream.negatives(state.phase, state.epoch, state.batch, state.size)
    queries = np.union1d(state.roots, neg)
    nbrs = stream.sampler.sample(state.start, queries)
    seen = np.union1d(nbrs.nodes[nbrs.mask], neg)
    support = np.setdiff1d(seen, state.roots, assume_unique=True)
    state.neg, state.queries, state.nbrs, state.support = neg, queries, nbrs, support
    state.query_row = _rows_of(state.roots, support, queries)
    state.nbr_row = np.where(nbrs.mask, _rows_of(state.roots, support, nbrs.nodes), 0)
    state.pair_query = np.searchsorted(queries, np.concatenate([state.src, state.dst, neg]))


def feat(state: BatchState, stream: Stream) -> None:
    """FEAT: indices, time differences and edge/node features of the batch, on the device."""
    dev, nbrs, graph = state.device, state.nbrs, stream.graph
    state.x_query = torch.from_numpy(state.query_row).to(dev)
    state.x_nbr = torch.from_numpy(state.nbr_row).to(dev)
    state.x_mask = torch.from_numpy(nbrs.mask).to(dev)
    state.x_pair = torch.from_numpy(state.pair_query).to(dev)
    slots = np.flatnonzero(nbrs.mask)
    state.x_slots = torch.from_numpy(slots).to(dev)
    dt = (state.ts[0] - nbrs.ts.reshape(-1)[slots]).astype(np.float32)
    state.x_dt = torch.from_numpy(dt).to(dev)
    if graph.edge_feat is not None:
        events = nbrs.events.reshape(-1)[slots]
        state.x_edge = torch.from_numpy(graph.edge_feat[events]).to(dev)
        state.x_event_edge = torch.from_numpy(graph.edge_feat[state.start : state.stop]).to(dev)
    if graph.node_feat is not None:
        table = np.concatenate([state.roots, state.support])
        state.x_node = torch.from_numpy(graph.node_feat[table]).to(dev)


def mem_fetch(state: BatchState, store: MemoryStore, timeout: float | None = None) -> None:
    """MEM_FETCH: the roots' memory and mailbox rows at the batch's version, on the device."""
    state.root_rows = store.read(state.roots, state.mem_version, timeout).to(state.device)


def mem_root(state: BatchState, model: TGN) -> None:
    """MEM_ROOT: the roots' memory after their pending mails (keeps the graph for BWD)."""
    state.root_mem = model.update_memory(state.root_rows)


def mem_write(state: BatchState, store: MemoryStore) -> None:
    """MEM_WRITE: the roots' new memory (detached) and the mail of their last event."""
    mem = state.root_mem.detach()
    parts = [mem, mem[state.mail_other]]
    if state.x_event_edge is not None:
        parts.append(state.x_event_edge[state.mail_event])
    mail_ts = torch.from_numpy(state.ts).to(state.device)[state.mail_event]
    rows = MemoryRows(mem, state.root_rows.mail_ts, torch.cat(parts, dim=1), mail_ts)
    store.write(state.batch, state.roots, rows)


def mem_support(
    state: BatchState, store: MemoryStore, model: TGN, timeout: float | None = None
) -> None:
    """MEM_SUPPORT: read the support nodes' rows at the batch's version and update them."""
    rows = store.read(state.support, state.mem_version, timeout).to(state.device)
    state.support_mem = model.update_memory(rows)


def fwd(state: BatchState, model: TGN) -> None:
    """FWD: embeddings of the roots and negatives, link logits, and the loss."""
    memory = torch.cat([state.root_mem, state.support_mem])
    z = model.embed(
        memory,
        state.x_query,
        state.x_nbr,
        state.x_mask,
        state.x_slots,
        state.x_dt,
        state.x_edge,
        state.x_node,
    )
    pos, neg = model.link_logits(*z[state.x_pair].split(state.size))
    state.pos_logit, state.neg_logit = pos, neg
    state.loss = F.binary_cross_entropy_with_logits(
        pos, torch.ones_like(pos)
    ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


def bwd(state: BatchState, model: TGN) -> None:
    """BWD: the loss's gradients with respect to `model`'s parameters, into `state.grads`."""
    params = list(model.parameters())
    grads = torch.autograd.grad(state.loss, params, allow_unused=True)
    state.grads = [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
    ]
    state.loss_value = float(state.loss.detach())


def average_grads(grads: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The mean of several batches' gradient lists (a synchronous group's update)."""
    return [torch.stack(column).sum(0) / len(grads) for column in zip(*grads, strict=True)]


def all_reduce_sum(grads: list[torch.Tensor], group: Any = None) -> list[torch.Tensor]:
    """The SUM of a gradient list over a torch.distributed group, as one flat all-reduce
    (also on a group of one: the profiler times that as the op's local overhead); `grads`
    itself when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return grads
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)  # SUM, the default
    return [
        c.view_as(g) for c, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)
    ]


def grad_sync(state: BatchState, group: Any = None) -> None:
    """GRAD_SYNC: replace `state.grads` by their mean over a torch.distributed group.

    The same mean as `average_grads` (a sum, then a division by the group's size); a no-op
    when torch.distributed is not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    n = dist.get_world_size(group)
    state.grads = [g / n for g in all_reduce_sum(state.grads, group)]


def compute_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """What a rank's lanes hold while they compute: on a CPU a lock, so that the rank runs
    one op at a time whatever its lanes (they are threads of one process; two of them
    computing at once only share the rank's core and Python's lock, each slower, which is
    how the simulator models a CPU rank: `tgpipe.dag.ops.action_resources`); on a GPU
    nothing: the lanes' ops may then run at once, each lane on a CUDA stream of its own
    (`tgpipe.executor.lane_clock`). The all-reduce waits for its peers
    outside it. Measured here, the lock costs no throughput: two ranks on two cores had no
    core to spare for a second thread (pipetgl(2) 18.6k vs 18.7k events/s without it)."""
    return threading.Lock() if torch.device(device).type == "cpu" else contextlib.nullcontext()


def step(learner: Learner, grads: list[torch.Tensor]) -> None:
    """STEP: one optimizer step of `learner` with these gradients."""
    learner.step(grads)


@dataclass(eq=False)
class Worker:
    """What one rank owns: its stream, memory store, learner, and the weights it computes
    with (`model`; the learner's own model unless the weights are stale)."""

    stream: Stream
    store: MemoryStore
    learner: Learner
    model: TGN | None = None
    group: Any = None  #: the torch.distributed group of GRAD_SYNC
    timeout: float | None = None  #: how long a memory read may wait for its version

    @property
    def compute(self) -> TGN:
        return self.learner.model if self.model is None else self.model


#: Op name -> ``fn(state, worker)``, for a runtime that walks a schedule.
OP_FUNCS: dict[str, Callable[[BatchState, Worker], None]] = {
    "SAMPLE": lambda s, w: sample(s, w.stream),
    "FEAT": lambda s, w: feat(s, w.stream),
    "MEM_FETCH": lambda s, w: mem_fetch(s, w.store, w.timeout),
    "MEM_ROOT": lambda s, w: mem_root(s, w.compute),
    "MEM_WRITE": lambda s, w: mem_write(s, w.store),
    "MEM_SUPPORT": lambda s, w: mem_support(s, w.store, w.compute, w.timeout),
    "FWD": lambda s, w: fwd(s, w.compute),
    "BWD": lambda s, w: bwd(s, w.compute),
    "GRAD_SYNC": lambda s, w: grad_sync(s, w.group),
    "STEP": lambda s, w: step(w.learner, s.grads),
}
