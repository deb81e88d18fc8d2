"""The node memory in shared host memory: one table per machine that all its ranks map.

**Why.** With the row-passing backend every rank keeps a whole replica of the memory and
every MEM_WRITE's rows travel to every peer: W tables per machine and W - 1 messages per
batch. Ranks on one machine can share one table instead: a write is a copy into memory that
every rank sees, and no rows travel.

**What it holds.** A file in ``/dev/shm`` (a temporary folder where there is none) that
every local rank maps: the table (``mem``, ``mem_ts``, ``mail``, ``mail_ts``, as
`MemoryStore`), the version, a ring of `depth` undo slots (each: the batch it holds, the
nodes that batch wrote and the rows they held before), and one *low-water mark* per rank:
the oldest version that rank may still read (its `prune`). Rank 0 removes the file's name as
soon as every rank has it open (`open_run_file`), so nothing is left behind, whatever way
the run ends.

**Semantics** are `MemoryStore`'s, read for read: writes are applied in batch order (a write
waits until the store is at its batch), and a read of an older version walks the undo slots
back (`tgpipe.executor.memory.restore`). A write also waits until the undo slot it reuses is
older than every rank's mark, so no rank loses a version it still reads (back-pressure).
Changes happen under a lock that is both a file lock (between processes) and a thread lock
(between a rank's lanes); waits poll the version, with short sleeps, and give up when the
rank aborts; a write or a mark of this process, or a token from the rank that wrote
(`tgpipe.executor.runtime`), wakes them at once.

**Limits.** Ranks on one machine only (`tgpipe run --memory shared`; ``auto`` picks it there).
A write waits for the earlier batches' writes (the replica takes them early), so a lane that
put a MEM_WRITE before an op that an earlier batch's write needs would wait forever: no
family does, and the wait ends with an error after the run's timeout. The ring holds
`ring_depth` slots, enough for the families' lane orders; a write that waits for a slot that
long says so. At most `max_rows` nodes per write (a batch of B events has at most 2B). The
table is in host memory: on GPUs every read and write crosses PCIe (as MEM_FETCH and
MEM_WRITE do anyway). A checkpoint holds a copy of the table per rank. POSIX only (``fcntl``).

Examples
--------
>>> import torch
>>> store = SharedStore.create(n_nodes=3, dim=2, mail_dim=4, depth=2, max_rows=2, readers=[0])
>>> rows = store.read([1], 0)
>>> store.write(0, [1], rows._replace(mem=torch.ones(1, 2)))
>>> store.version, store.read([1], 1).mem.tolist(), store.read([1], 0).mem.tolist()
(1, [[1.0, 1.0]], [[0.0, 0.0]])
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from tgpipe.dag.semantics import Semantics
from tgpipe.errors import InputError
from tgpipe.executor.memory import Aborted, MemoryRows, MemoryStore, _nodes, overwrite, restore

__all__ = ["SharedStore", "open_run_file", "poll", "reserve", "ring_depth", "shared_folder"]

# header words (int64)
_VERSION, _EPOCH, _BATCH, _WORDS = 0, 1, 2, 8
_NEVER = -1  #: an empty undo slot's batch; a (epoch, batch) position before any


def ring_depth(semantics: Semantics, n_ranks: int) -> int:
    """Undo slots enough for the families: a write of batch b waits for reads of versions
    down to about b - 2 (s_mem + 1) g - W (the memory chain of b, then the batches whose
    support reads a rank may still have pending), doubled where it is cheap to."""
    return 2 * ((semantics.s_mem + 1) * semantics.g + n_ranks) + 2


def shared_folder() -> str:
    """Where the store's file goes: ``/dev/shm`` (memory, not disk) where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def open_run_file(kv, rank: int, barrier: Callable[[], None], what: str = "memory") -> int:
    """A descriptor of the run's shared file for `what` (the store's ``memory``, or
    ``weights``), in every rank that calls it (all do): rank 0 makes the file and tells the
    others its name through `kv` (the run's key-value store); once every rank has it open
    (`barrier`), rank 0 removes the name, so that nothing is left behind however the run
    ends. The first `SharedStore` (or `SharedSlots`) on it sizes it."""
    key = f"tgpipe/shared-{what}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}"
    if rank == 0:
        fd, path = tempfile.mkstemp(prefix=f"tgpipe-{what}-", dir=shared_folder())
        kv.set(key, path)
    else:
        path = kv.get(key).decode()
        fd = os.open(path, os.O_RDWR)
    try:
        barrier()
    finally:
        if rank == 0:
            os.unlink(path)
    return fd


def poll(
    ready: Callable[[], bool],
    abort,
    timeout: float | None,
    why: Callable[[], str],
    wake: threading.Condition | None = None,
) -> None:
    """Wait until `ready()`, looking again after pauses that grow to 2 ms, or at once when
    `wake` is notified; `Aborted` when `abort` is set, RuntimeError(why()) after `timeout`
    seconds (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 1e-4
    while not ready():
        if abort is not None and abort.is_set():
            raise Aborted()
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(why())
        if wake is None:
            time.sleep(pause)
        else:
            with wake:  # ready() again under it: a notify cannot slip in between
                if not ready():
                    wake.wait(pause)
        pause = min(2 * pause, 2e-3)


def reserve(fd: int, size: int, what: str) -> None:
    """Size the empty shared file `fd` to `size` bytes, reserved now: a full /dev/shm
    refuses here, in one line, not with a SIGBUS mid-run."""
    grow = getattr(os, "posix_fallocate", lambda fd, _, n: os.ftruncate(fd, n))
    try:
        grow(fd, 0, size)
    except OSError as exc:
        os.ftruncate(fd, 0)
        raise InputError(
            f"no room for {what} ({size / 2**20:.0f} MiB) in {shared_folder()} "
            f"({exc.strerror}): free some or run with --memory rows"
        ) from None


def _layout(n: int, dim: int, mail_dim: int, depth: int, rows: int, world: int) -> dict:
    """Name -> (dtype, shape, byte offset) of every array in the file, and its size."""
    arrays = {
        "header": (torch.int64, (_WORDS,)),
        "slot_batch": (torch.int64, (depth,)),
        "slot_count": (torch.int64, (depth,)),
        "marks": (torch.int64, (world,)),
        "mem": (torch.float32, (n, dim)),
        "mem_ts": (torch.float64, (n,)),
        "mail": (torch.float32, (n, mail_dim)),
        "mail_ts": (torch.float64, (n,)),
        "slot_nodes": (torch.int64, (depth, rows)),
        "slot_mem": (torch.float32, (depth, rows, dim)),
        "slot_mem_ts": (torch.float64, (depth, rows)),
        "slot_mail": (torch.float32, (depth, rows, mail_dim)),
        "slot_mail_ts": (torch.float64, (depth, rows)),
    }
    layout, at = {}, 0
    for name, (dtype, shape) in arrays.items():
        layout[name] = (dtype, shape, at)
        at += -(-math.prod(shape) * dtype.itemsize // 64) * 64  # 64-byte aligned
    return {"arrays": layout, "size": max(at, 64)}


class SharedStore:
    """The memory of every node in a shared file (see the module doc); `MemoryStore`'s
    interface as the runtime uses it."""

    shared = True  #: every local rank sees every write (no rows travel)

    def __init__(
        self,
        fd: int,
        n_nodes: int,
        dim: int,
        mail_dim: int,
        *,
        depth: int,
        max_rows: int,
        readers: Sequence[int],
        rank: int = 0,
        world: int | None = None,
        timeout: float = 300.0,
    ):
        """Map the store in the open file `fd` (the first to map an empty file sizes it; the
        store keeps `fd`). `readers`: the ranks whose marks hold back writes; `rank`: the
        mark this process's `prune` moves; `timeout`: how long a write waits."""
        self.n_nodes, self.dim, self.mail_dim = n_nodes, dim, mail_dim
        self.depth, self.max_rows, self.rank = depth, max_rows, rank
        self.readers = sorted(set(readers))
        self.world = world if world is not None else max(self.readers, default=0) + 1
        self.timeout, self.device = timeout, torch.device("cpu")
        self.abort: threading.Event | None = None  #: set: waits give up (`Aborted`)
        plan = _layout(n_nodes, dim, mail_dim, depth, max_rows, self.world)
        self._fd = fd
        self._thread_lock = threading.Lock()
        self._wake = threading.Condition()  #: notified when the store may have moved
        with self._locked():
            if os.fstat(self._fd).st_size == 0:
                reserve(self._fd, plan["size"], "the shared memory store")
                fresh = True
            elif os.fstat(self._fd).st_size != plan["size"]:
                raise RuntimeError("the shared memory file is not a store of this run's shape")
            else:
                fresh = False
            self._map = mmap.mmap(self._fd, plan["size"])
            a = {
                name: torch.frombuffer(
                    self._map, dtype=dtype, count=math.prod(shape), offset=at
                ).view(shape)
                for name, (dtype, shape, at) in plan["arrays"].items()
            }
            self._header, self._marks = a["header"], a["marks"]
            self._slot_batch, self._slot_count = a["slot_batch"], a["slot_count"]
            self._slot_nodes = a["slot_nodes"]
            self.table = MemoryRows(a["mem"], a["mem_ts"], a["mail"], a["mail_ts"])
            self._slots = MemoryRows(
                a["slot_mem"], a["slot_mem_ts"], a["slot_mail"], a["slot_mail_ts"]
            )
            if fresh:
                self._header[_EPOCH] = self._header[_BATCH] = _NEVER
                self._clear(0)

    @classmethod
    def create(cls, n_nodes: int, dim: int, mail_dim: int, **kwargs) -> SharedStore:
        """A store of this process alone, in a nameless file (tests, examples)."""
        fd, path = tempfile.mkstemp(prefix="tgpipe-memory-", dir=shared_folder())
        os.unlink(path)
        return cls(fd, n_nodes, dim, mail_dim, **kwargs)

    # ---- the lock and the waits --------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _poll(self, ready: Callable[[], bool], abort, timeout, why: Callable[[], str]) -> None:
        poll(ready, abort, timeout, why, self._wake)

    def poke(self) -> None:
        """Wake this process's waits to look again: a write or a mark moved (here, or on
        another rank, which sends a token: `tgpipe.executor.runtime`)."""
        with self._wake:
            self._wake.notify_all()

    @property
    def version(self) -> int:
        """Batch writes applied so far (one aligned word: read without the lock)."""
        return int(self._header[_VERSION])

    def wait_version(self, version: int, abort: threading.Event | None = None) -> None:
        """Wait until the store holds `version` (no limit: a lost peer is the watchdog's)."""
        self._poll(lambda: self.version >= version, abort, None, str)

    def _writable(self, batch: int) -> bool:
        """At `batch`, and the slot it reuses holds a version no rank reads any more."""
        marks = self._marks[self.readers]
        return self.version == batch and (not len(marks) or int(marks.min()) > batch - self.depth)

    def wait_writable(self, batch: int, abort=None, timeout: float | None = None) -> None:
        """Wait until `batch` may write: the earlier batches' writes are in and its undo slot
        is free (see the module doc); RuntimeError after `timeout` seconds, saying which."""

        def why() -> str:
            version, marks = self.version, self._marks[self.readers].tolist()
            if version != batch:
                return (
                    f"batch {batch}'s memory write waited {timeout:.0f} s for batch {version}'s "
                    "(a lane runs a memory write before what an earlier write needs?)"
                )
            late = {r: m for r, m in zip(self.readers, marks, strict=True)}
            return (
                f"batch {batch}'s memory write waited {timeout:.0f} s for an undo slot of the "
                f"shared store ({self.depth} slots; oldest version each rank reads: {late}): "
                "run with --memory rows"
            )

        if batch < self.version:
            raise RuntimeError(f"batch {batch} wrote the memory twice")
        self._poll(lambda: self._writable(batch), abort, timeout, why)

    # ---- MemoryStore's interface -----------------------------------------------------------
    def read(self, nodes, version: int, timeout: float | None = None) -> MemoryRows:
        """The rows of `nodes` as they were at `version` (see `MemoryStore.read`)."""
        index = _nodes(nodes)
        if version > self.version:
            if timeout is None:
                raise RuntimeError(f"memory version {version} is not there yet")
            self._poll(
                lambda: self.version >= version,
                self.abort,
                timeout,
                lambda: f"memory version {version} is not there yet (store at {self.version})",
            )
        with self._locked():
            now = self.version
            records = range(now - 1, version - 1, -1)  # newest first: oldest wins
            lost = [b for b in records if int(self._slot_batch[b % self.depth]) != b]
            if lost:
                raise RuntimeError(
                    f"memory version {version} was pruned (the undo of batch {lost[-1]} is gone)"
                )
            rows = self.table.take(index)
            query = index.numpy()
            for batch in records:
                restore(rows, query, *self._record(batch % self.depth))
        return rows

    def _record(self, slot: int) -> tuple[np.ndarray, MemoryRows]:
        k = int(self._slot_count[slot])
        return self._slot_nodes[slot, :k].numpy(), MemoryRows(*(t[slot, :k] for t in self._slots))

    def write(self, batch: int, nodes, rows: MemoryRows) -> None:
        """Write batch `batch`'s rows of `nodes` (unique ids), waiting (up to `timeout`) until
        the store is at `batch` and the undo slot is free."""
        index = _nodes(nodes)
        if len(np.unique(index.numpy())) != len(index):
            raise InputError(f"batch {batch} writes some node twice: write unique nodes")
        if len(index) > self.max_rows:
            raise RuntimeError(
                f"batch {batch} writes {len(index)} rows, the shared store takes {self.max_rows}"
            )
        self.wait_writable(batch, self.abort, self.timeout)
        with self._locked():
            slot, k = batch % self.depth, len(index)
            index, old = overwrite(self.table, index, rows.to("cpu"))
            self._slot_nodes[slot, :k] = index
            for column, saved in zip(self._slots, old, strict=True):
                column[slot, :k] = saved
            self._slot_count[slot], self._slot_batch[slot] = k, batch
            self._header[_VERSION] = batch + 1
        self.poke()

    def prune(self, version: int) -> None:
        """This rank reads no version older than `version` any more (its mark moves up)."""
        if self.rank in self.readers:
            with self._locked():
                self._marks[self.rank] = max(int(self._marks[self.rank]), version)
            self.poke()

    def reset(self) -> None:
        """All zeros, version 0, no undo records, every mark at 0."""
        with self._locked():
            self._clear(0)

    def _clear(self, oldest: int) -> None:
        for column in self.table:
            column.zero_()
        self._header[_VERSION] = 0
        self._slot_batch.fill_(_NEVER)
        self._slot_count.zero_()
        self._marks.fill_(oldest)

    def begin(self, position: tuple[int, int], state: dict | None = None, oldest: int = 0):
        """Start a segment at `position` (epoch, batch): reset (no `state`) or load a
        `state_dict`, once for all ranks (the first to come; every rank calls it between
        the barriers of a segment's start), with every mark at `oldest`, the oldest version
        a batch from there reads. Every rank adds the undo records of its `state` that the
        store lacks (a replica's may lack some that another rank's holds)."""
        with self._locked():
            if (int(self._header[_EPOCH]), int(self._header[_BATCH])) < tuple(position):
                self._clear(oldest)
                if state is not None:
                    for column, saved in zip(self.table, state["table"], strict=True):
                        column.copy_(saved)
                    self._header[_VERSION] = state["version"]
                self._header[_EPOCH], self._header[_BATCH] = position
            if state is not None:
                for batch, (nodes, saved) in state["undo"].items():
                    slot, k = batch % self.depth, len(nodes)
                    if oldest <= batch < self.version and int(self._slot_batch[slot]) != batch:
                        self._slot_nodes[slot, :k] = torch.as_tensor(nodes)
                        for column, old in zip(self._slots, saved, strict=True):
                            column[slot, :k] = old
                        self._slot_count[slot], self._slot_batch[slot] = k, batch

    def copy(self) -> MemoryStore:
        """A plain `MemoryStore` at version 0 holding the current rows (for evaluation)."""
        other = MemoryStore(self.n_nodes, self.dim, self.mail_dim, self.device)
        with self._locked():
            other.table = MemoryRows(*(t.clone() for t in self.table))
        return other

    def state_dict(self) -> dict:
        """As `MemoryStore.state_dict` (a checkpoint loads into either store): the table,
        the version, and the undo records that the ranks may still read."""
        with self._locked():
            now = self.version
            oldest = min((int(self._marks[r]) for r in self.readers), default=now)
            undo = {}
            for batch in range(max(oldest, now - self.depth, 0), now):
                slot = batch % self.depth
                if int(self._slot_batch[slot]) == batch:
                    nodes, old = self._record(slot)
                    undo[batch] = (torch.from_numpy(nodes.copy()), tuple(t.clone() for t in old))
            return {
                "table": tuple(t.clone() for t in self.table),
                "version": now,
                "oldest": min(oldest, now),
                "undo": undo,
                "pending": {},
            }

    @property
    def undo_records(self) -> int:
        """How many undo slots hold a record."""
        return int((self._slot_batch != _NEVER).sum())
