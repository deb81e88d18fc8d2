"""A discrete-time dynamic GNN (GCN + GRU over snapshots), cut into separately callable ops.

The second workload next to TGN: T-GCN / EvolveGCN-style training on a `SnapshotSequence`.
As in `tgpipe.executor.ops`, every op is one function over a small per-snapshot record
(`SnapshotState`), so that the runtime, the profiler and the one-process reference
(`tgpipe.executor.snapshot_reference`) run the very same code:

- LOAD: the snapshot's index tensors (normalised adjacency, positives, negatives) and node
  features to the device;
- AGG: the sparse aggregation A_hat @ H (index_add; memory-bound);
- DENSE: the GCN weight GEMM (and the activation when it comes last; compute-bound);
- RNN: h_t[nodes] = GRUCell(Z_t, h_{t-1}[nodes]), the link predictor and the loss;
- BWD: the gradients of the snapshot's loss, summed into an epoch's gradient list;
- GRAD_SYNC: all-reduce (SUM) of that list over a torch.distributed group;
- STEP: one Adam step (`Learner`).

Model: inputs X are a learned nn.Embedding(n_nodes, in_dim) or given node features. Per
snapshot t, over its active vertices only, Z_t = relu(A_hat X W + b) with
A_hat = D^-1/2 (A + I) D^-1/2 (A undirected, D its degrees counting the self loop); then the
GRU; other vertices keep h_{t-1}. The GCN order is a choice a run claims: ``agg_first``
computes (A_hat X) W, ``dense_first`` A_hat (X W): equal in exact arithmetic, different in
cost and rounding. The loss of snapshot t is link prediction of snapshot t+1's edges whose
two ends are both active in t (so both have an h_t), scored by an MLP on [h_u, h_v], with
one negative (u, w) per positive (u, v), w uniform over t's active vertices, drawn from
(seed, phase, epoch, t): BCE over positives plus BCE over negatives.

Training semantics (the definition every run is checked against):

- the positions t whose loss trains are those whose target t+1 is a training snapshot
  (`phase_steps`); groups are the runs [kG, (k+1)G) of `group_size` G positions;
- the hidden state h is zero at the start of each group and detached between snapshots
  (truncated BPTT of length 1: a snapshot's backward covers its own GCN, GRU and predictor
  only), so groups share no data and may run on any rank, in any order;
- an epoch runs every training position once; all of them compute with the weights of the
  epoch's start; their gradients are SUMMED, in position order, and one Adam step is taken
  at the epoch's end. A distributed run sums per rank, in position order, then all-reduces;
  it equals the reference up to rounding (compare with tolerance 1e-5).

Examples
--------
>>> from tgpipe.executor.learner import Learner
>>> from tgpipe.executor.snapshots import skewed_sequence
>>> seq = skewed_sequence(6, n_nodes=50, mean_edges=40, seed=0)
>>> model = build_snapshot_model(seq.n_nodes, SnapshotConfig(in_dim=8, hidden_dim=8))
>>> hidden, grads = Hidden(seq.n_nodes, 8), zero_grads(model)
>>> for t in range(3):
...     state = open_snapshot(seq, t, group_size=2)
...     for op in OP_ORDER["agg_first"]:
...         OP_FUNCS[op](state, model, hidden, seq)
...     _ = bwd(state, model, grads)
>>> learner = Learner(model, lr=1e-3)
>>> step(learner, grad_sync(grads))
>>> [open_snapshot(seq, t, group_size=2).reset for t in range(3)], learner.steps
([True, False, True], 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tgpipe.dag.snapshot import OP_ORDER, ORDERS, SnapshotWorkload
from tgpipe.errors import InputError
from tgpipe.executor.ops import all_reduce_sum as grad_sync  # GRAD_SYNC: the SUM
from tgpipe.executor.ops import step  # STEP: one Adam step, with the epoch's sum
from tgpipe.executor.snapshots import SnapshotSequence
from tgpipe.executor.stream import TRAIN

__all__ = [
    "OP_FUNCS",
    "OP_ORDER",
    "ORDERS",
    "Hidden",
    "SnapshotConfig",
    "SnapshotGNN",
    "SnapshotState",
    "agg",
    "build_snapshot_model",
    "bwd",
    "dense",
    "forward",
    "grad_sync",
    "load",
    "open_snapshot",
    "phase_steps",
    "rnn",
    "snapshot_groups",
    "snapshot_workload",
    "step",
    "zero_grads",
]


@dataclass(frozen=True)
class SnapshotConfig:
    """Model and optimizer sizes."""

    in_dim: int = 64  #: width of the learned node embedding (unused with node features)
    hidden_dim: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("in_dim", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model {name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be > 0, got {self.lr!r}")


class SnapshotGNN(nn.Module):
    """Embedding (or features), one GCN layer, a GRUCell and an MLP link predictor."""

    def __init__(self, n_nodes: int, config: SnapshotConfig, node_dim: int = 0):
        super().__init__()
        self.config, self.node_dim = config, node_dim
        width, hidden = node_dim or config.in_dim, config.hidden_dim
        self.embedding = None if node_dim else nn.Embedding(n_nodes, config.in_dim)
        bound = math.sqrt(6.0 / (width + hidden))  # Glorot, as PyG's GCNConv
        self.weight = nn.Parameter(torch.empty(width, hidden).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.gru = nn.GRUCell(hidden, hidden)
        self.pred_hidden = nn.Linear(2 * hidden, hidden)
        self.pred_out = nn.Linear(hidden, 1)

    def inputs(self, ids: torch.Tensor, feat: torch.Tensor | None) -> torch.Tensor:
        """X of the snapshot's vertices: their features, or their learned embeddings."""
        return feat if self.embedding is None else self.embedding(ids)

    def link_logits(self, h_u: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        return self.pred_out(torch.relu(self.pred_hidden(torch.cat([h_u, h_v], 1)))).squeeze(-1)


def build_snapshot_model(
    n_nodes: int, config: SnapshotConfig | None = None, node_dim: int = 0, seed: int = 0
) -> SnapshotGNN:
    """A model whose initial weights depend on `seed` only (not on the global RNG's state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SnapshotGNN(n_nodes, config or SnapshotConfig(), node_dim)


class Hidden:
    """h, the hidden state of every vertex on one device: what RNN reads and writes."""

    def __init__(self, n_nodes: int, dim: int, device: torch.device | str = "cpu"):
        self.table = torch.zeros(n_nodes, dim, device=device)

    def reset(self) -> None:
        self.table.zero_()

    def read(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.table[nodes]

    def write(self, nodes: torch.Tensor, values: torch.Tensor) -> None:
        self.table[nodes] = values.detach()


def phase_steps(seq: SnapshotSequence) -> tuple[range, range, range]:
    """The positions t whose loss (or score) belongs to train, val and test: those whose
    target t+1 is a snapshot of that part of `seq.split()`."""
    train, val, test = seq.split()
    return tuple(range(max(p.start - 1, 0), max(p.stop - 1, 0)) for p in (train, val, test))


def snapshot_groups(steps: range, group_size: int) -> list[range]:
    """The groups of `steps`: its positions cut at multiples of `group_size`."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InputError(f"group size must be an integer >= 1, got {group_size!r}")
    firsts = range(steps.start - steps.start % group_size, steps.stop, group_size)
    return [range(max(f, steps.start), min(f + group_size, steps.stop)) for f in firsts]


def snapshot_workload(
    seq: SnapshotSequence,
    group_size: int,
    config: SnapshotConfig | None = None,
    orders: tuple[str, ...] = ("agg_first",),
) -> SnapshotWorkload:
    """The DAG's view of one training epoch of `seq` (`tgpipe.dag.snapshot`): unit t is
    training position t, sized by its snapshot's active vertices and edges; a hidden edge
    carries the whole hidden state, a halo row is one input row."""
    config = config or SnapshotConfig()
    train = phase_steps(seq)[0]
    return SnapshotWorkload(
        tuple((seq[t].n_vertices, seq[t].n_edges) for t in train),
        n_nodes=seq.n_nodes,
        group=group_size,
        orders=orders,
        state_bytes=seq.n_nodes * config.hidden_dim * 4,
        row_bytes=(seq.node_dim or config.in_dim) * 4,
    )


@dataclass(eq=False)
class SnapshotState:
    """What flows between the ops of one snapshot; each op fills the fields it names."""

    # open_snapshot (numpy unless said)
    t: int
    epoch: int
    phase: int
    order: str
    reset: bool  #: first position of its group: h starts from zeros
    device: torch.device
    nodes: np.ndarray  #: [V] global ids of the active vertices
    adj: np.ndarray  #: int64 [2, 2E + V] (row, col) of A + I, both directions, local
    adj_weight: np.ndarray  #: float32 [2E + V] entries of A_hat
    pos: np.ndarray  #: int64 [2, P] local (u, v) of t+1's edges with both ends active in t
    neg: np.ndarray  #: int64 [P] local negative destination of each positive
    # LOAD (device tensors)
    x_nodes: torch.Tensor | None = None
    x_feat: torch.Tensor | None = None
    x_adj: torch.Tensor | None = None
    x_weight: torch.Tensor | None = None
    x_pos: torch.Tensor | None = None
    x_neg: torch.Tensor | None = None
    # AGG, DENSE
    ax: torch.Tensor | None = None  #: A_hat X (agg_first)
    xw: torch.Tensor | None = None  #: X W (dense_first)
    z: torch.Tensor | None = None  #: the GCN's output [V, hidden]
    # RNN, BWD
    h: torch.Tensor | None = None  #: h_t of the active vertices (with grad)
    pos_logit: torch.Tensor | None = None
    neg_logit: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_value: float | None = None
    grads: list[torch.Tensor] | None = None


def open_snapshot(
    seq: SnapshotSequence,
    t: int,
    *,
    group_size: int,
    epoch: int = 0,
    phase: int = TRAIN,
    seed: int = 0,
    order: str = "agg_first",
    device: torch.device | str = "cpu",
) -> SnapshotState:
    """The state of position t before any op: its normalised adjacency and link targets."""
    if order not in ORDERS:
        raise InputError(f"GCN order must be one of {', '.join(ORDERS)}, got {order!r}")
    if not 0 <= t < len(seq):
        raise InputError(f"snapshot {t} is out of range: the sequence has {len(seq)}")
    snap = seq[t]
    n = snap.n_vertices
    loops = np.arange(n, dtype=np.int64)
    row = np.concatenate([snap.edge_index[0], snap.edge_index[1], loops])
    col = np.concatenate([snap.edge_index[1], snap.edge_index[0], loops])
    inv_sqrt = 1.0 / np.sqrt(np.bincount(row, minlength=n).astype(np.float64))
    weight = (inv_sqrt[row] * inv_sqrt[col]).astype(np.float32)
    pos = _targets(seq, t)
    rng = np.random.default_rng([seed, phase, epoch, t])
    neg = rng.integers(0, n, pos.shape[1], dtype=np.int64)
    reset = t % group_size == 0
    return SnapshotState(
        t,
        epoch,
        phase,
        order,
        reset,
        torch.device(device),
        snap.nodes,
        np.stack([row, col]),
        weight,
        pos,
        neg,
    )


def _targets(seq: SnapshotSequence, t: int) -> np.ndarray:
    """Local (u, v) in snapshot t of snapshot t+1's edges whose ends are both active in t."""
    if t + 1 >= len(seq):
        return np.zeros((2, 0), dtype=np.int64)
    nodes, nxt = seq[t].nodes, seq[t + 1]
    ends = nxt.nodes[nxt.edge_index]
    local = np.searchsorted(nodes, ends).clip(max=len(nodes) - 1)
    both = (nodes[local] == ends).all(axis=0)
    return local[:, both]


def load(state: SnapshotState, node_feat: np.ndarray | None = None) -> None:
    """LOAD: the snapshot's ids, adjacency, targets and (given) node features to the device."""
    dev = state.device
    state.x_nodes = torch.from_numpy(state.nodes).to(dev)
    state.x_adj = torch.from_numpy(state.adj).to(dev)
    state.x_weight = torch.from_numpy(state.adj_weight).to(dev)
    state.x_pos = torch.from_numpy(state.pos).to(dev)
    state.x_neg = torch.from_numpy(state.neg).to(dev)
    if node_feat is not None:
        state.x_feat = torch.from_numpy(node_feat[state.nodes]).to(dev)


def _propagate(state: SnapshotState, h: torch.Tensor) -> torch.Tensor:
    """A_hat @ h over the snapshot's vertices: out[row] += weight * h[col]."""
    row, col = state.x_adj
    messages = h[col] * state.x_weight.unsqueeze(1)
    return h.new_zeros(h.shape).index_add(0, row, messages)


def agg(state: SnapshotState, model: SnapshotGNN) -> None:
    """AGG: A_hat @ X (agg_first), or relu(A_hat @ (X W) + b) (dense_first)."""
    if state.order == "agg_first":
        state.ax = _propagate(state, model.inputs(state.x_nodes, state.x_feat))
    else:
        state.z = torch.relu(_propagate(state, state.xw) + model.bias)


def dense(state: SnapshotState, model: SnapshotGNN) -> None:
    """DENSE: relu((A_hat X) W + b) (agg_first), or X W (dense_first)."""
    if state.order == "agg_first":
        state.z = torch.relu(torch.addmm(model.bias, state.ax, model.weight))
    else:
        state.xw = model.inputs(state.x_nodes, state.x_feat) @ model.weight


def rnn(state: SnapshotState, model: SnapshotGNN, hidden: Hidden) -> None:
    """RNN: h_t of the active vertices (zeros before at a group's start), written detached
    into `hidden`; logits of the positives and negatives; the loss (0 with no positives)."""
    if state.reset:
        hidden.reset()
    h = model.gru(state.z, hidden.read(state.x_nodes))
    hidden.write(state.x_nodes, h)
    state.h = h
    u, v = state.x_pos
    if len(u) == 0:
        state.pos_logit = state.neg_logit = h.new_zeros(0)
        state.loss = h.new_zeros(())
        return
    pos = model.link_logits(h[u], h[v])
    neg = model.link_logits(h[u], h[state.x_neg])
    state.pos_logit, state.neg_logit = pos, neg
    state.loss = F.binary_cross_entropy_with_logits(
        pos, torch.ones_like(pos)
    ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


def zero_grads(model: nn.Module) -> list[torch.Tensor]:
    """A zero gradient per parameter, in ``model.parameters()`` order: an epoch's sum."""
    return [torch.zeros_like(p) for p in model.parameters()]


def bwd(
    state: SnapshotState, model: SnapshotGNN, into: list[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """BWD: the loss's gradients (``model.parameters()`` order) into `state.grads`; added in
    place to `into` when given (call in position order) and that list returned."""
    params = list(model.parameters())
    if state.loss.requires_grad:
        found = torch.autograd.grad(state.loss, params, allow_unused=True)
    else:  # no positives: nothing to learn from this snapshot
        found = [None] * len(params)
    state.grads = [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)
    ]
    state.loss_value = float(state.loss.detach())
    if into is None:
        return state.grads
    for total, g in zip(into, state.grads, strict=True):
        total.add_(g)
    return into


#: Forward op name -> ``fn(state, model, hidden, seq)``, for a runtime or profiler that walks
#: `OP_ORDER`; BWD, GRAD_SYNC and STEP take their own arguments.
OP_FUNCS: dict[str, Callable[[SnapshotState, SnapshotGNN, Hidden, SnapshotSequence], None]] = {
    "LOAD": lambda s, m, h, seq: load(s, seq.node_feat),
    "AGG": lambda s, m, h, seq: agg(s, m),
    "DENSE": lambda s, m, h, seq: dense(s, m),
    "RNN": lambda s, m, h, seq: rnn(s, m, h),
}


def forward(
    state: SnapshotState, model: SnapshotGNN, hidden: Hidden, seq: SnapshotSequence
) -> None:
    """A snapshot's forward ops, in its order, one after the other (training goes on with
    BWD; evaluation reads the logits)."""
    for op in OP_ORDER[state.order]:
        OP_FUNCS[op](state, model, hidden, seq)
