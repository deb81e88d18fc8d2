"""The versioned memory store against full snapshot copies taken after every write."""

import threading

import numpy as np
import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.memory import MemoryRows, MemoryStore

torch.set_num_threads(1)

N, D, M = 30, 3, 5


def random_rows(rng, n):
    return MemoryRows(
        torch.from_numpy(rng.normal(size=(n, D)).astype(np.float32)),
        torch.from_numpy(rng.uniform(0, 100, n)),
        torch.from_numpy(rng.normal(size=(n, M)).astype(np.float32)),
        torch.from_numpy(rng.uniform(0, 100, n)),
    )


def random_writes(n_batches, seed=0):
    rng = np.random.default_rng(seed)
    writes = []
    for _ in range(n_batches):
        nodes = rng.choice(N, size=rng.integers(1, 12), replace=False)
        writes.append((nodes, random_rows(rng, len(nodes))))
    return writes


def snapshots_of(writes):
    """The whole table after each prefix of the writes, by plain copying."""
    table = MemoryStore(N, D, M).table.clone()
    snaps = [table.clone()]
    for nodes, rows in writes:
        for column, new in zip(table, rows, strict=True):
            column[torch.from_numpy(nodes)] = new
        snaps.append(table.clone())
    return snaps


def assert_rows_equal(got, want):
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_every_version_reads_like_its_snapshot():
    writes = random_writes(12)
    snaps = snapshots_of(writes)
    store = MemoryStore(N, D, M)
    for batch, (nodes, rows) in enumerate(writes):
        store.write(batch, nodes, rows)
    assert store.version == 12 and store.undo_records == 12
    rng = np.random.default_rng(1)
    for version in range(13):
        query = rng.integers(0, N, 40)  # duplicates included
        assert_rows_equal(store.read(query, version), snaps[version].take(torch.from_numpy(query)))


def test_reads_return_copies():
    store = MemoryStore(N, D, M)
    rows = store.read([1, 2], 0)
    rows.mem.fill_(7.0)
    assert store.table.mem.abs().sum() == 0


def test_early_writes_wait_for_the_gap():
    writes = random_writes(4, seed=2)
    in_order, shuffled = MemoryStore(N, D, M), MemoryStore(N, D, M)
    for batch, (nodes, rows) in enumerate(writes):
        in_order.write(batch, nodes, rows)
    for batch in (2, 1, 3):
        shuffled.write(batch, *writes[batch])
        assert shuffled.version == 0
    shuffled.write(0, *writes[0])
    assert shuffled.version == 4
    everyone = np.arange(N)
    for version in range(5):
        assert_rows_equal(shuffled.read(everyone, version), in_order.read(everyone, version))


def test_prune_forgets_old_versions_only():
    writes = random_writes(6, seed=3)
    snaps = snapshots_of(writes)
    store = MemoryStore(N, D, M)
    for batch, (nodes, rows) in enumerate(writes):
        store.write(batch, nodes, rows)
    store.prune(4)
    assert store.undo_records == 2 and store.oldest == 4
    everyone = np.arange(N)
    for version in (4, 5, 6):
        assert_rows_equal(store.read(everyone, version), snaps[version])
    with pytest.raises(RuntimeError, match="pruned"):
        store.read(everyone, 3)


def test_future_reads_fail_at_once_or_wait():
    store = MemoryStore(N, D, M)
    with pytest.raises(RuntimeError, match="not there yet"):
        store.read([0], 1)
    ((nodes, rows),) = random_writes(1, seed=4)
    timer = threading.Timer(0.05, store.write, (0, nodes, rows))
    timer.start()
    got = store.read(nodes, 1, timeout=10)
    timer.join()
    assert_rows_equal(got, rows)


def test_bad_writes():
    store = MemoryStore(N, D, M)
    ((nodes, rows),) = random_writes(1, seed=5)
    store.write(0, nodes, rows)
    with pytest.raises(RuntimeError, match="twice"):
        store.write(0, nodes, rows)
    with pytest.raises(InputError, match="twice"):
        store.write(1, [3, 3], random_rows(np.random.default_rng(0), 2))


def test_copy_and_reset():
    store = MemoryStore(N, D, M)
    ((nodes, rows),) = random_writes(1, seed=6)
    store.write(0, nodes, rows)
    other = store.copy()
    assert other.version == 0 and torch.equal(other.table.mem, store.table.mem)
    other.write(0, [0], random_rows(np.random.default_rng(1), 1))
    assert not torch.equal(other.table.mem, store.table.mem)
    store.reset()
    assert store.version == 0 and store.table.mem.abs().sum() == 0 and store.undo_records == 0
