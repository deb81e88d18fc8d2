"""Packed learners handed between ranks of one machine through shared host memory.

**Why.** A weight ring hands the whole learner (weights and Adam moments: 2.6 MB for the
default TGN) to the next rank at every step. Over gloo that is a TCP transfer on loopback
that costs both ranks' cores about 1.5-2 ms each (measured here with two pinned processes),
time taken from the ops computing there. Ranks of one machine can instead copy the learner
into memory that both map: about 0.3-0.6 ms a side.

**What it holds.** A file in ``/dev/shm`` (`tgpipe.executor.shared_store.open_run_file`)
with `SLOTS` slots per sending rank. A slot holds one packed learner, the key of the
version in it (epoch and version), and one word per rank: the key that rank last finished
reading there. The sender writes the slots of its own region in turn, each once the peers
of the version it held have read it, publishes the key, and the runtime sends each peer a
token over gloo with the slot's number: a thread blocked in a receive wakes at once and
takes no turns on the rank's core while it waits, where one polling the key would. The
receiver copies the learner out and marks the slot read. Each receiver reads one sender's
versions in order (one thread per sender), so a sender waits at most for that copy.

Examples
--------
>>> import torch
>>> slots = SharedSlots.create(size=4, world=2, rank=0)
>>> slot = slots.publish(epoch=0, version=1, packed=torch.arange(4.0), peers=[1])
>>> peer = SharedSlots(slots.fd, size=4, world=2, rank=1)
>>> peer.take(epoch=0, version=1, sender=0, slot=slot).tolist()
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence

import torch

from tgpipe.executor.shared_store import poll, reserve, shared_folder

__all__ = ["SLOTS", "SharedSlots"]

SLOTS = 2  #: slots per sending rank: a sender writes one while a receiver copies the other
_EMPTY = -1  #: the key of a slot nothing was written to
_EPOCH = 1 << 32  #: keys: epoch * _EPOCH + version


class SharedSlots:
    """The machine's learner slots (module doc), mapped by one rank."""

    def __init__(self, fd: int, *, size: int, world: int, rank: int, timeout: float = 300.0):
        """Map the slots in the open file `fd` (the first to map an empty file sizes it);
        `size`: numbers in a packed learner."""
        self.fd, self.rank, self.timeout = fd, rank, timeout
        self.abort: threading.Event | None = None  #: set: waits give up (`Aborted`)
        words = -(-(1 + world) * 8 // 64) * 64 // 8  # 64-byte aligned header
        slot_bytes = words * 8 + -(-size * 4 // 64) * 64
        total = world * SLOTS * slot_bytes
        with self._locked():
            fresh = os.fstat(fd).st_size == 0
            if fresh:
                reserve(fd, total, "the shared learner slots")
            elif os.fstat(fd).st_size != total:
                raise RuntimeError("the shared weights file is not of this run's shape")
            self._map = mmap.mmap(fd, total)
            at = [k * slot_bytes for k in range(world * SLOTS)]
            self._heads = [
                torch.frombuffer(self._map, dtype=torch.int64, count=1 + world, offset=o)
                for o in at
            ]
            self._data = [
                torch.frombuffer(self._map, dtype=torch.float32, count=size, offset=o + words * 8)
                for o in at
            ]
            if fresh:
                for head in self._heads:
                    head.fill_(_EMPTY)
        self._peers: dict[int, list[int]] = {}  #: my slot -> the peers of what it holds
        self._sent = 0  #: learners this rank published: the next goes to slot _sent % SLOTS

    @classmethod
    def create(cls, *, size: int, world: int, rank: int) -> SharedSlots:
        """Slots of this process alone, in a nameless file (tests, examples)."""
        fd, path = tempfile.mkstemp(prefix="tgpipe-weights-", dir=shared_folder())
        os.unlink(path)
        return cls(fd, size=size, world=world, rank=rank)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """A file lock: a slot's bytes and its words, written under it, are all visible to
        the next process that takes it (one slot has one writer and its readers)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def publish(
        self, *, epoch: int, version: int, packed: torch.Tensor, peers: Sequence[int]
    ) -> int:
        """Write this rank's learner of `version` for `peers` into its next slot, once the
        peers of what that slot held have read it; the slot's number, for the token."""
        slot = self._sent % SLOTS
        k, before = self.rank * SLOTS + slot, self._peers.get(self.rank * SLOTS + slot, [])
        head = self._heads[k]
        held = int(head[0])
        poll(
            lambda: held == _EMPTY or all(int(head[1 + p]) == held for p in before),
            self.abort,
            self.timeout,
            lambda: f"weights of version {version}: a peer did not read its slot's last version",
        )
        with self._locked():  # a reader that sees the key takes the lock: the bytes are in
            self._data[k].copy_(packed.reshape(-1))
            head[0] = epoch * _EPOCH + version
        self._peers[k] = list(peers)
        self._sent += 1
        return slot

    def take(self, *, epoch: int, version: int, sender: int, slot: int) -> torch.Tensor:
        """A copy of `sender`'s learner of `version` from its `slot` (the token's number),
        once it is there; marks it read."""
        k, key = sender * SLOTS + slot, epoch * _EPOCH + version
        head = self._heads[k]
        poll(
            lambda: int(head[0]) == key,
            self.abort,
            self.timeout,
            lambda: f"weights of version {version} never arrived",
        )
        with self._locked():  # after the publisher's lock: its bytes are all there
            packed = self._data[k].clone()
            head[1 + self.rank] = key  # a publisher takes the lock before it rewrites them
        return packed
