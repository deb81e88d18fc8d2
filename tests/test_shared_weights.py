"""Learner slots in shared memory: what a sender writes is what each peer reads, in order,
and a slot is not overwritten before its peers have read it."""

import errno
import os
import threading

import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.memory import Aborted
from tgpipe.executor.shared_weights import SLOTS, SharedSlots


def _pair(size=5, world=3):
    sender = SharedSlots.create(size=size, world=world, rank=0)
    peers = [SharedSlots(sender.fd, size=size, world=world, rank=r) for r in (1, 2)]
    return sender, peers


def test_every_peer_reads_every_version_in_order_across_epochs():
    sender, peers = _pair()
    got = {1: [], 2: []}

    def read(slots):
        for epoch in range(2):
            for v in range(1, 7):
                packed = slots.take(
                    epoch=epoch, version=v, sender=0, slot=(6 * epoch + v - 1) % SLOTS
                )
                got[slots.rank].append(packed.tolist())

    readers = [threading.Thread(target=read, args=(p,)) for p in peers]
    for t in readers:
        t.start()
    for epoch in range(2):
        for v in range(1, 7):
            sender.publish(
                epoch=epoch, version=v, packed=torch.full((5,), 10.0 * epoch + v), peers=[1, 2]
            )
    for t in readers:
        t.join(timeout=10)
    want = [[10.0 * e + v] * 5 for e in range(2) for v in range(1, 7)]
    assert got == {1: want, 2: want}


def test_a_slot_waits_for_its_peers_before_it_is_written_again():
    sender, (one, two) = _pair()
    assert sender.publish(epoch=0, version=1, packed=torch.ones(5), peers=[1, 2]) == 0
    for v in range(2, SLOTS + 1):  # the other slots, read at once
        slot = sender.publish(epoch=0, version=v, packed=torch.ones(5), peers=[1])
        one.take(epoch=0, version=v, sender=0, slot=slot)
    later = SLOTS + 1  # slot 0 again
    writer = threading.Thread(
        target=sender.publish,
        kwargs={"epoch": 0, "version": later, "packed": torch.zeros(5), "peers": [1]},
    )
    writer.start()
    one.take(epoch=0, version=1, sender=0, slot=0)
    writer.join(timeout=0.3)
    assert writer.is_alive()  # rank 2 has not read version 1 yet
    assert two.take(epoch=0, version=1, sender=0, slot=0).tolist() == [1.0] * 5
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert one.take(epoch=0, version=later, sender=0, slot=0).tolist() == [0.0] * 5


def test_two_senders_of_one_version_keep_their_own_slots():
    first, (second, reader) = _pair()
    a = first.publish(epoch=0, version=3, packed=torch.full((5,), 1.0), peers=[2])
    b = second.publish(epoch=0, version=3, packed=torch.full((5,), 2.0), peers=[2])
    assert reader.take(epoch=0, version=3, sender=0, slot=a).tolist() == [1.0] * 5
    assert reader.take(epoch=0, version=3, sender=1, slot=b).tolist() == [2.0] * 5


def test_a_wait_gives_up_on_abort_and_after_the_timeout():
    sender, (one, _) = _pair()
    one.abort = threading.Event()
    one.abort.set()
    with pytest.raises(Aborted):
        one.take(epoch=0, version=1, sender=0, slot=0)
    one.abort, one.timeout = None, 0.05
    with pytest.raises(RuntimeError, match="version 1 never arrived"):
        one.take(epoch=0, version=1, sender=0, slot=0)
    with pytest.raises(RuntimeError, match="not of this run's shape"):
        SharedSlots(sender.fd, size=100, world=3, rank=1)


def test_a_full_shared_folder_is_refused_in_one_line(monkeypatch):
    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(InputError, match="no room for the shared learner slots .* --memory rows"):
        SharedSlots.create(size=1000, world=2, rank=0)
