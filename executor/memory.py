"""The node memory store, versioned so that a stale read sees exactly the version it names.

Per node the store keeps four things (TGL's memory and mailbox):

- ``mem`` [N, d]: the memory vector;
- ``mem_ts`` [N]: the time of the last mail applied to it;
- ``mail`` [N, d_mail]: the one pending mail (the node's latest event, not yet applied);
- ``mail_ts`` [N]: that event's time.

**Versions.** Batch writes are applied in batch order: after the writes of batches 0..v-1 the
store is at *version v*. Under a schedule with stale memory, or a synchronous group, a batch
reads a version older than the store already holds: each applied write keeps an undo record
(the rows it overwrote), and `read` walks the records back to rebuild the version asked for.
A write that arrives early (batch 5 before batch 4) waits until the gap is filled, so callers
may write in any order. `prune` drops undo records that no reader needs any more.

Examples
--------
>>> import torch
>>> store = MemoryStore(n_nodes=3, dim=2, mail_dim=4)
>>> rows = store.read([1], 0)
>>> store.write(0, [1], rows._replace(mem=torch.ones(1, 2)))
>>> store.version, store.read([1], 1).mem.tolist(), store.read([1], 0).mem.tolist()
(1, [[1.0, 1.0]], [[0.0, 0.0]])
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import torch

from tgpipe.errors import InputError
from tgpipe.executor.lane_clock import settle

__all__ = ["POLL", "Aborted", "MemoryRows", "MemoryStore", "overwrite", "restore"]

POLL = 0.2  #: seconds between looks at an abort flag while a thread waits


class Aborted(RuntimeError):
    """Another thread of this rank failed; a wait gives up and this thread stops."""


class MemoryRows(NamedTuple):
    """Rows of the store for some nodes (or the whole table): what reads return, writes take."""

    mem: torch.Tensor  #: float32 [n, d]
    mem_ts: torch.Tensor  #: float64 [n]
    mail: torch.Tensor  #: float32 [n, d_mail]
    mail_ts: torch.Tensor  #: float64 [n]

    def to(self, device: torch.device | str) -> MemoryRows:
        return MemoryRows(*(t.to(device) for t in self))

    def take(self, index: torch.Tensor) -> MemoryRows:
        """Rows ``index`` of these rows."""
        return MemoryRows(*(t[index] for t in self))

    def clone(self) -> MemoryRows:
        return MemoryRows(*(t.clone() for t in self))


def _nodes(nodes) -> torch.Tensor:
    if isinstance(nodes, torch.Tensor):
        return nodes.to(torch.int64).cpu()
    return torch.as_tensor(np.asarray(nodes, dtype=np.int64))


class MemoryStore:
    """Memory and mailbox of every node, with versioned reads (see the module doc)."""

    def __init__(self, n_nodes: int, dim: int, mail_dim: int, device: torch.device | str = "cpu"):
        self.n_nodes, self.dim, self.mail_dim = n_nodes, dim, mail_dim
        self.device = torch.device(device)
        self._cond = threading.Condition()
        self.reset()

    def reset(self) -> None:
        """All zeros, version 0, no undo records (the start of an epoch)."""
        with self._cond:
            n, dev = self.n_nodes, self.device
            self.table = MemoryRows(
                torch.zeros(n, self.dim, device=dev),
                torch.zeros(n, dtype=torch.float64, device=dev),
                torch.zeros(n, self.mail_dim, device=dev),
                torch.zeros(n, dtype=torch.float64, device=dev),
            )
            self.version = 0
            self.oldest = 0  #: the oldest version that `read` can still rebuild
            self._undo: dict[int, tuple[torch.Tensor, MemoryRows]] = {}
            self._pending: dict[int, tuple[torch.Tensor, MemoryRows]] = {}

    def copy(self) -> MemoryStore:
        """A new store at version 0 that holds this store's current rows (for evaluation)."""
        other = MemoryStore(self.n_nodes, self.dim, self.mail_dim, self.device)
        with self._cond:
            other.table = self.table.clone()
        return other

    def state_dict(self) -> dict:
        """The store as plain tensors (a checkpoint): table, version, undo records, early
        writes."""
        with self._cond:
            return {
                "table": tuple(t.cpu().clone() for t in self.table),
                "version": self.version,
                "oldest": self.oldest,
                "undo": {
                    b: (torch.as_tensor(i), tuple(t.cpu() for t in r))
                    for b, (i, r) in self._undo.items()
                },
                "pending": {
                    b: (i, tuple(t.cpu() for t in r)) for b, (i, r) in self._pending.items()
                },
            }

    def load_state_dict(self, state: dict) -> None:
        """Become the store that `state_dict` described."""
        dev = self.device
        with self._cond:
            self.table = MemoryRows(*state["table"]).to(dev)
            self.version, self.oldest = state["version"], state["oldest"]
            self._undo = {
                b: (i.numpy(), MemoryRows(*r).to(dev)) for b, (i, r) in state["undo"].items()
            }
            self._pending = {
                b: (i, MemoryRows(*r).to(dev)) for b, (i, r) in state["pending"].items()
            }
            self._cond.notify_all()

    def wait_version(self, version: int, abort: threading.Event | None = None) -> None:
        """Wait until the store holds `version`; `Aborted` once `abort` is set (another
        thread of the rank failed), looked at every `POLL` seconds."""
        with self._cond:
            while not self._cond.wait_for(lambda: self.version >= version, timeout=POLL):
                if abort is not None and abort.is_set():
                    raise Aborted()

    def read(self, nodes, version: int, timeout: float | None = None) -> MemoryRows:
        """The rows of `nodes` as they were at `version` (after the writes of batches before it).

        A read of a version not reached yet waits up to `timeout` seconds for the writes it
        needs (None: fail at once); one older than `oldest` fails, its undo records are gone.
        """
        index = _nodes(nodes)
        with self._cond:
            if version > self.version and (
                timeout is None
                or not self._cond.wait_for(lambda: self.version >= version, timeout=timeout)
            ):
                raise RuntimeError(
                    f"memory version {version} is not there yet (store at {self.version}, "
                    f"early writes waiting: {sorted(self._pending)})"
                )
            if version < self.oldest:
                raise RuntimeError(
                    f"memory version {version} was pruned (oldest kept: {self.oldest})"
                )
            rows = self.table.take(index.to(self.device))
            if version < self.version:
                query = index.numpy()
                for batch in range(self.version - 1, version - 1, -1):  # newest first: oldest wins
                    restore(rows, query, *self._undo[batch])
            settle(self.device)  # read before a write on another GPU stream overwrites
            return rows

    def write(self, batch: int, nodes, rows: MemoryRows) -> None:
        """Write batch `batch`'s rows of `nodes` (unique ids); applied in batch order."""
        index = _nodes(nodes)
        if len(np.unique(index.numpy())) != len(index):
            raise InputError(f"batch {batch} writes some node twice: write unique nodes")
        rows = rows.to(self.device)
        with self._cond:
            if batch < self.version or batch in self._pending:
                raise RuntimeError(f"batch {batch} wrote the memory twice")
            self._pending[batch] = (index, rows)
            applied = []  # kept until their copies ran (another GPU stream may have made them)
            while self.version in self._pending:
                applied.append(self._pending.pop(self.version))
                self._apply(*applied[-1])
            settle(self.device)  # written before a read on another GPU stream sees the version
            self._cond.notify_all()

    def _apply(self, index: torch.Tensor, rows: MemoryRows) -> None:
        index, old = overwrite(self.table, index, rows)
        self._undo[self.version] = (index.numpy(), old)
        self.version += 1

    def prune(self, version: int) -> None:
        """Forget what only reads of versions older than `version` would need."""
        with self._cond:
            version = min(version, self.version)
            for batch in range(self.oldest, version):
                self._undo.pop(batch, None)
            self.oldest = max(self.oldest, version)

    @property
    def undo_records(self) -> int:
        """How many undo records are held (bounded by the staleness when pruned)."""
        return len(self._undo)


def overwrite(
    table: MemoryRows, index: torch.Tensor, rows: MemoryRows
) -> tuple[torch.Tensor, MemoryRows]:
    """Write `rows` of the unique nodes `index` into `table`; returns the undo record of the
    write: the nodes sorted (for `restore`'s search) and the rows they held before."""
    order = torch.argsort(index)
    index = index[order]
    dev_index = index.to(table.mem.device)
    old = table.take(dev_index)
    for column, new in zip(table, rows.take(order.to(rows.mem.device)), strict=True):
        column[dev_index] = new.to(column.device)
    return index, old


def restore(rows: MemoryRows, query: np.ndarray, written: np.ndarray, old: MemoryRows) -> None:
    """Undo one write in `rows` (the rows of nodes `query`): where a node is among the
    `written` (sorted) of an undo record, put back the row it held before. Applied to the
    records newest first, it rebuilds an older version."""
    if not len(written):
        return
    pos = np.searchsorted(written, query).clip(max=len(written) - 1)
    hit = np.flatnonzero(written[pos] == query)
    if len(hit):
        device = rows.mem.device
        at = torch.as_tensor(hit, device=device)
        src = torch.as_tensor(pos[hit], device=old.mem.device)
        for mine, theirs in zip(rows, old, strict=True):
            mine[at] = theirs[src].to(device)
