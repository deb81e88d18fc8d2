"""The shared memory store: what `MemoryStore` gives, read for read, across processes.

Two processes (each a rank) map one store; each writes its batches, which arrive out of
order, and reads stale versions; every read and the final table must be what a
`MemoryStore` gives for the same writes and reads in one process. The undo ring holds back a
writer until every rank has moved past the version it would drop; a wait gives up when the
rank aborts.
"""

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tgpipe.executor.memory import Aborted, MemoryRows, MemoryStore
from tgpipe.executor.shared_store import SharedStore

N, D, M = 40, 3, 5  #: nodes, memory and mail dims
BATCHES, LAG, DEPTH = 24, 3, 4  #: batch b reads version b - LAG (stale), ring of DEPTH slots


def _shape(**kwargs):
    return dict(depth=DEPTH, max_rows=N, readers=[0, 1], world=2, timeout=20.0) | kwargs


def _nodes(batch: int) -> np.ndarray:
    return np.sort(np.random.default_rng(batch).choice(N, size=12, replace=False))


def _step(store, batch: int) -> torch.Tensor:
    """Batch `batch`: read its (stale) version, write rows that depend on what it read."""
    nodes = _nodes(batch)
    rows = store.read(nodes, max(0, batch - LAG), timeout=20.0)
    new = MemoryRows(
        rows.mem + batch + 1,
        rows.mem_ts + batch,
        rows.mail * 2 + batch,
        rows.mail_ts + 0.5,
    )
    store.write(batch, nodes, new)
    return rows.mem


def _rank(path: str, rank: int, out) -> None:
    """One rank: batches b = rank mod 2, the even ones slowed down so that writes arrive out
    of order and wait; the mark moves past what the rank will not read again."""
    torch.set_num_threads(1)
    store = SharedStore(os.open(path, os.O_RDWR), N, D, M, rank=rank, **_shape())
    seen = {}
    for batch in range(rank, BATCHES, 2):
        if rank == 0:
            time.sleep(0.01)
        seen[batch] = _step(store, batch).numpy()  # numpy: the queue pickles it whole
        store.prune(max(0, batch + 2 - LAG))  # what its next batch reads
    store.prune(BATCHES)
    store.wait_version(BATCHES)
    out.put((rank, seen, tuple(t.numpy().copy() for t in store.table) if rank == 0 else None))


def test_two_processes_read_and_write_as_one_memory_store(tmp_path, monkeypatch):
    # the children import this module as tests.test_shared_store: from the checkout's root
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    path = tmp_path / "store"
    path.touch()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(str(path), r, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = dict((r, (seen, table)) for r, seen, table in (out.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    ref = MemoryStore(N, D, M)
    for batch in range(BATCHES):
        expected = _step(ref, batch)
        assert np.array_equal(got[batch % 2][0][batch], expected.numpy()), batch
    for mine, theirs in zip(got[0][1], ref.table, strict=True):
        assert np.array_equal(mine, theirs.numpy())


def _store(tmp_path, rank: int, depth: int = 2) -> SharedStore:
    """Rank `rank`'s view of the one store of `tmp_path` (a file descriptor of its own)."""
    path = tmp_path / "store"
    path.touch()
    return SharedStore(os.open(path, os.O_RDWR), N, D, M, rank=rank, **_shape(depth=depth))


def _rows(value: float, n: int = 2) -> MemoryRows:
    return MemoryRows(
        torch.full((n, D), float(value)),
        torch.zeros(n, dtype=torch.float64),
        torch.zeros(n, M),
        torch.zeros(n, dtype=torch.float64),
    )


def test_a_write_waits_for_the_undo_slot_that_a_rank_still_reads(tmp_path):
    mine, other = _store(tmp_path, 0), _store(tmp_path, 1)
    mine.prune(5)
    for batch in (0, 1):
        mine.write(batch, [1, 2], _rows(batch + 1))
    mine.timeout = 0.2  # rank 1 may still read version 0: batch 2 would drop its undo
    with pytest.raises(RuntimeError, match="undo slot"):
        mine.write(2, [1, 2], _rows(3))
    assert other.read([1], 0).mem[0, 0] == 0  # still there
    mine.timeout = 20.0
    writer = threading.Thread(target=mine.write, args=(2, [1, 2], _rows(3)))
    writer.start()
    time.sleep(0.1)
    assert mine.version == 2  # held back
    other.prune(1)  # rank 1 is done with version 0
    writer.join(5)
    assert mine.version == 3
    assert other.read([1], 1).mem[0, 0] == 1
    with pytest.raises(RuntimeError, match="pruned"):
        other.read([1], 0)


def test_waits_give_up_when_the_rank_aborts(tmp_path):
    store, abort = _store(tmp_path, 0), threading.Event()
    failed = []

    def wait(fn, *args):
        try:
            fn(*args)
        except Aborted:
            failed.append(fn.__name__)

    store.abort = abort
    threads = [
        threading.Thread(target=wait, args=(store.wait_version, 3, abort)),
        threading.Thread(target=wait, args=(store.write, 2, [1], _rows(1, 1))),
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    abort.set()
    for t in threads:
        t.join(2)
    assert sorted(failed) == ["wait_version", "write"] and store.version == 0


def test_a_checkpoint_loads_once_and_merges_the_replicas_undo(tmp_path):
    """The first rank to start a segment loads it; every rank adds the undo records its
    replica holds that the store lacks (replicas forget what their own reads no longer
    need)."""
    replicas = [MemoryStore(N, D, M) for _ in (0, 1)]
    for replica in replicas:
        for batch in range(6):
            replica.write(batch, _nodes(batch), _rows(batch + 1, 12))
    replicas[0].prune(4)  # rank 0 reads version 4 and up, rank 1 version 3 and up
    replicas[1].prune(3)
    store = [_store(tmp_path, rank, DEPTH) for rank in (0, 1)]
    store[0].begin((0, 6), replicas[0].state_dict(), oldest=3)
    with pytest.raises(RuntimeError, match="pruned"):
        store[1].read(np.arange(N), 3)  # rank 0's replica had forgotten batch 3's undo
    store[1].begin((0, 0))  # an older position: nothing happens
    store[1].begin((0, 6), replicas[1].state_dict(), oldest=3)
    for version in (3, 4, 6):
        assert torch.equal(
            store[1].read(np.arange(N), version).mem, replicas[1].read(np.arange(N), version).mem
        )
    back = MemoryStore(N, D, M)
    back.load_state_dict(store[0].state_dict())  # and a shared checkpoint loads in a replica
    assert torch.equal(back.read(np.arange(N), 3).mem, replicas[1].read(np.arange(N), 3).mem)
    store[0].begin((1, 0))  # a new epoch: zero
    assert store[1].version == 0 and not store[1].table.mem.any()
