"""A vertex partition of the snapshot model: part ops and the rows their parts exchange.

With ``parts`` P > 1 (`tgpipe.dag.snapshot`: unit u = t * P + p), part p of position t owns
the snapshot's active vertices v with ``v % P == p`` (the same owner in every snapshot, so a
vertex's hidden row never leaves its part) and computes their rows only:

- LOAD: its rows' ids, the adjacency entries of its rows (their columns may be any part's),
  and the link pairs whose source it owns;
- the op before AGG (LOAD for agg_first, DENSE for dense_first) makes ``pre``, this part's
  rows of what AGG aggregates (X, or X W); the rows other parts' aggregations read are sent
  to them (the DAG's halo edges op -> AGG);
- AGG / DENSE / RNN: the GCN and GRU of its rows; RNN writes its rows of h and sends the
  rows other parts' link pairs read (halo edges RNN -> BWD);
- BWD: the link predictor and loss of its pairs, then backward in three rounds, because
  rows crossed parts: (1) the loss's gradients, among them those of the h rows received,
  which go back to their parts; (2) with the gradients of its own h rows (its loss's plus
  those that came back) through GRU and GCN, which gives those of the ``pre`` rows
  received, sent back too; (3) through its own ``pre`` (the embedding, or X W).

The loss of position t is the reference's, split by pairs: part p's share is the BCE **sum**
of its positives and negatives divided by the position's number of positives, so the shares
add up to the reference's mean-based loss and their gradients to its gradients (up to
rounding). Every part knows every other's rows from the sequence alone (`PartPlan`), so a
message needs no header: its size is known to both ends.

Examples
--------
>>> from tgpipe.executor.snapshot_model import open_snapshot
>>> from tgpipe.executor.snapshots import skewed_sequence
>>> seq = skewed_sequence(4, n_nodes=30, mean_edges=40, seed=0)
>>> plan = PartPlan.of(open_snapshot(seq, 1, group_size=2), parts=2)
>>> [len(own) for own in plan.own] == [int((seq[1].nodes % 2 == p).sum()) for p in (0, 1)]
True
>>> sorted(plan.agg_rows) == [(0, 1), (1, 0)]  # each part reads some of the other's rows
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tgpipe.executor.snapshot_model import Hidden, SnapshotGNN, SnapshotState

__all__ = ["PART_MESSAGES", "PartPlan", "PartState", "part_of"]

#: The messages of a vertex partition, by kind: rows forward (``pre`` before AGG, ``h``
#: before the predictor) and their gradients backward.
PART_MESSAGES = ("pre", "h", "dh", "dpre")


def part_of(nodes: np.ndarray, parts: int) -> np.ndarray:
    """The part that owns each vertex id: the same in every snapshot."""
    return nodes % parts


def _rows_of(owner: np.ndarray, local: np.ndarray, parts: int, p: int) -> dict[int, np.ndarray]:
    """q -> sorted local indices in `local` owned by q != p (the rows p needs from q)."""
    found = {}
    for q in range(parts):
        rows = np.unique(local[owner[local] == q])
        if q != p and len(rows):
            found[q] = rows
    return found


@dataclass(frozen=True)
class PartPlan:
    """Who owns which rows of one position and which rows cross between parts (local
    indices into the snapshot's active vertices)."""

    parts: int
    own: tuple[np.ndarray, ...]  #: per part: its vertices, sorted
    agg_rows: dict[tuple[int, int], np.ndarray]  #: (p, q): q's rows p's AGG reads
    pair_rows: dict[tuple[int, int], np.ndarray]  #: (p, q): q's h rows p's predictor reads
    pairs: tuple[np.ndarray, ...]  #: per part: indices of the positives whose source it owns
    n_pos: int  #: positives of the whole position (the loss's denominator)

    @classmethod
    def of(cls, state: SnapshotState, parts: int) -> PartPlan:
        owner = part_of(state.nodes, parts)
        row, col = state.adj
        u, v = state.pos
        agg_rows, pair_rows, own, pairs = {}, {}, [], []
        for p in range(parts):
            own.append(np.flatnonzero(owner == p))
            for q, rows in _rows_of(owner, col[owner[row] == p], parts, p).items():
                agg_rows[p, q] = rows
            mine = np.flatnonzero(owner[u] == p)
            pairs.append(mine)
            ends = np.concatenate([v[mine], state.neg[mine]])
            for q, rows in _rows_of(owner, ends, parts, p).items():
                pair_rows[p, q] = rows
        return cls(parts, tuple(own), agg_rows, pair_rows, tuple(pairs), u.shape[0])

    def sent(self, kind: str, p: int) -> dict[int, np.ndarray]:
        """q -> positions in part p's own rows of the rows a ``pre`` or ``h`` message from p
        to q carries (in that message's order)."""
        table = self.agg_rows if kind == "pre" else self.pair_rows
        return {
            q: np.searchsorted(self.own[p], rows) for (q, src), rows in table.items() if src == p
        }

    def received(self, kind: str, p: int) -> dict[int, np.ndarray]:
        """q -> local indices of the rows a ``pre`` or ``h`` message from q to p carries."""
        table = self.agg_rows if kind == "pre" else self.pair_rows
        return {q: rows for (dst, q), rows in table.items() if dst == p}

    def messages(self, p: int, pre_grad: bool) -> list[tuple[str, int, int, int]]:
        """Every message part p receives as (kind, from part, to part, rows), in a fixed
        order: forward rows, and when the position trains (it has positives), the gradients
        of the rows p sent (`pre_grad`: only if ``pre`` has a gradient)."""
        found = [(k, q, p, len(r)) for k in ("pre", "h") for q, r in self.received(k, p).items()]
        if self.n_pos:
            found += [("dh", q, p, len(r)) for q, r in self.sent("h", p).items()]
            if pre_grad:
                found += [("dpre", q, p, len(r)) for q, r in self.sent("pre", p).items()]
        return found


def _local_index(n: int, blocks: list[np.ndarray]) -> np.ndarray:
    """Position of each local vertex in the concatenation of `blocks` (-1: absent)."""
    index = np.full(n, -1, dtype=np.int64)
    offset = 0
    for rows in blocks:
        index[rows] = np.arange(offset, offset + len(rows))
        offset += len(rows)
    return index


@dataclass(eq=False)
class PartState:
    """Part p of one position: the whole position's state (`SnapshotState`, shared by its
    parts on one rank, read-only) and what this part's ops fill in."""

    whole: SnapshotState
    plan: PartPlan
    p: int
    ids: torch.Tensor | None = None  #: global ids of its rows
    feat: torch.Tensor | None = None
    adj: torch.Tensor | None = None  #: [2, n]: its rows, columns into [own, received ...]
    weight: torch.Tensor | None = None
    pre: torch.Tensor | None = None  #: its rows of X or X W, with their graph
    pre_leaf: torch.Tensor | None = None  #: the same values, where this part's graph starts
    pre_in: dict[int, torch.Tensor] = field(default_factory=dict)  #: received, as leaves
    ax: torch.Tensor | None = None
    xw: torch.Tensor | None = None
    z: torch.Tensor | None = None
    h: torch.Tensor | None = None  #: its rows of h_t, with their graph
    h_leaf: torch.Tensor | None = None
    h_in: dict[int, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    loss_value: float = 0.0
    grads: list[torch.Tensor] | None = None  #: its share of the position's gradients
    dh: torch.Tensor | None = None  #: gradient of its h rows, summed over parts
    dpre: torch.Tensor | None = None  #: gradient of its ``pre`` rows, summed over parts

    @property
    def order(self) -> str:
        return self.whole.order

    def load(self, node_feat: np.ndarray | None) -> None:
        """LOAD: its rows' ids and features and its adjacency entries to the device."""
        whole, plan, dev = self.whole, self.plan, self.whole.device
        own = plan.own[self.p]
        received = plan.received("pre", self.p)
        index = _local_index(len(whole.nodes), [own, *received.values()])
        row, col = whole.adj
        keep = np.isin(row, own)
        adj = np.stack([index[row[keep]], index[col[keep]]])
        self.ids = torch.from_numpy(whole.nodes[own]).to(dev)
        self.adj = torch.from_numpy(adj).to(dev)
        self.weight = torch.from_numpy(whole.adj_weight[keep]).to(dev)
        if node_feat is not None:
            self.feat = torch.from_numpy(node_feat[whole.nodes[own]]).to(dev)

    def make_pre(self, model: SnapshotGNN) -> dict[int, torch.Tensor]:
        """Its rows of what AGG aggregates (X for agg_first, X W for dense_first); returns
        the rows to send, by part."""
        x = model.inputs(self.ids, self.feat)
        self.pre = x if self.order == "agg_first" else x @ model.weight
        self.pre_leaf = self.pre.detach().requires_grad_(self.pre.requires_grad)
        return {q: self.pre.detach()[pos] for q, pos in self.plan.sent("pre", self.p).items()}

    def agg(self, model: SnapshotGNN, received: dict[int, torch.Tensor]) -> None:
        """AGG over its rows, reading the received rows of the other parts."""
        self.pre_in = {q: x.requires_grad_(self.pre.requires_grad) for q, x in received.items()}
        table = torch.cat([self.pre_leaf, *self.pre_in.values()])
        row, col = self.adj
        out = table.new_zeros(len(self.ids), table.shape[1])
        out = out.index_add(0, row, table[col] * self.weight.unsqueeze(1))
        if self.order == "agg_first":
            self.ax = out
        else:
            self.z = torch.relu(out + model.bias)

    def dense(self, model: SnapshotGNN) -> dict[int, torch.Tensor]:
        """DENSE: the GCN's transform (agg_first), or ``pre`` = X W (dense_first: returns the
        rows to send)."""
        if self.order == "agg_first":
            self.z = torch.relu(torch.addmm(model.bias, self.ax, model.weight))
            return {}
        return self.make_pre(model)

    def rnn(self, model: SnapshotGNN, hidden: Hidden) -> dict[int, torch.Tensor]:
        """RNN: the GRU of its rows (h reset at a group's start), written into `hidden`;
        returns the h rows other parts' link pairs read, by part."""
        if self.whole.reset:
            hidden.reset()
        self.h = model.gru(self.z, hidden.read(self.ids))
        hidden.write(self.ids, self.h)
        return {q: self.h.detach()[pos] for q, pos in self.plan.sent("h", self.p).items()}

    # ---- BWD, in three rounds ------------------------------------------------------------
    def loss_grads(
        self, model: SnapshotGNN, received: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Round 1: the predictor's loss over its pairs and its gradients; returns those of
        the received h rows, by the part they go back to."""
        plan, whole = self.plan, self.whole
        self.grads = [torch.zeros_like(p) for p in model.parameters()]
        self.h_leaf = self.h.detach().requires_grad_()
        self.h_in = {q: h.requires_grad_() for q, h in received.items()}
        rows = plan.received("h", self.p)
        index = _local_index(len(whole.nodes), [plan.own[self.p], *rows.values()])
        table = torch.cat([self.h_leaf, *self.h_in.values()])
        mine = plan.pairs[self.p]
        u, v, w = (
            torch.from_numpy(index[ends]).to(whole.device)
            for ends in (whole.pos[0, mine], whole.pos[1, mine], whole.neg[mine])
        )
        pos = model.link_logits(table[u], table[v])
        neg = model.link_logits(table[u], table[w])
        n = max(plan.n_pos, 1)
        self.loss = (
            F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum")
        ) / n
        self.loss_value = float(self.loss.detach())
        if not plan.n_pos:
            return {}
        found = self._backward(model, self.loss, None, [self.h_leaf, *self.h_in.values()])
        self.dh = found[0]
        return dict(zip(self.h_in, found[1:], strict=True))

    def state_grads(
        self, model: SnapshotGNN, returned: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Round 2: its h rows' gradients (its own loss's plus those returned by the parts
        that read them) through GRU and GCN; returns the received ``pre`` rows' gradients,
        by part, when ``pre`` has one."""
        if not self.plan.n_pos:
            return {}
        for q, pos in self.plan.sent("h", self.p).items():
            self.dh = self.dh.index_add(0, torch.from_numpy(pos).to(self.dh.device), returned[q])
        leaves = [self.pre_leaf, *self.pre_in.values()] if self.pre.requires_grad else []
        found = self._backward(model, self.h, self.dh, leaves)
        if not leaves:
            return {}
        self.dpre = found[0]
        return dict(zip(self.pre_in, found[1:], strict=True))

    def input_grads(self, model: SnapshotGNN, returned: dict[int, torch.Tensor]) -> None:
        """Round 3: its ``pre`` rows' gradients (its own and those returned) into the
        embedding or the GCN weight."""
        if not self.plan.n_pos or not self.pre.requires_grad:
            return
        for q, pos in self.plan.sent("pre", self.p).items():
            self.dpre = self.dpre.index_add(
                0, torch.from_numpy(pos).to(self.dpre.device), returned[q]
            )
        self._backward(model, self.pre, self.dpre, [])

    def _backward(self, model, output, grad, leaves) -> list[torch.Tensor]:
        """Gradients of `output` (weighted by `grad`) added to this part's parameter
        gradients; returns those of `leaves`."""
        params = list(model.parameters())
        found = torch.autograd.grad(
            output, [*params, *leaves], grad_outputs=grad, allow_unused=True
        )
        for total, g in zip(self.grads, found[: len(params)], strict=True):
            if g is not None:
                total.add_(g)
        return [
            torch.zeros_like(x) if g is None else g
            for x, g in zip(leaves, found[len(params) :], strict=True)
        ]
