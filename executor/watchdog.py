"""Lost ranks: every rank of a run notices a dead peer within seconds and stops, naming it.

A rank blocked in a gloo receive whose sender died can wait for the process group's whole
timeout, and a collective can wait forever where the peer's machine vanished without closing
its sockets. So each rank runs a `Watchdog` thread beside its work: it beats (adds one to
its own counter in the run's key-value store, the TCPStore that the ranks meet through)
every `beat` seconds, and watches its peers' counters. A peer whose counter has not moved
for `lost_after` seconds, or a store that no longer answers (it lives in rank 0, or in
torchrun's agent on the first machine), means a lost rank: the watchdog prints one line
that names it and ends the process at once (`os._exit`), since the threads blocked in
gloo cannot be interrupted. A rank that ends normally says so first (`stop`), so that its
silence is not taken for a loss.

`rendezvous` makes that store the way ``init_process_group("env://")`` would (a client of
torchrun's agent store where torchrun says so, else hosted by rank 0), so that the run and
its watchdog share it.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time

import torch.distributed as dist

__all__ = ["LOST_STATUS", "Watchdog", "rendezvous"]

#: Exit status of a rank that stopped because a peer was lost.
LOST_STATUS = 3


def rendezvous(rank: int, world: int, timeout: float) -> dist.Store:
    """The run's store at MASTER_ADDR:MASTER_PORT (as torchrun or `spawn` set them)."""
    agent = _agent()
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=rank == 0 and not agent,
        timeout=datetime.timedelta(seconds=timeout),
        multi_tenant=not agent,
    )


class Watchdog:
    """Beats for this rank and ends the process when a peer stops beating (module doc)."""

    def __init__(
        self, store: dist.Store, rank: int, world: int, *, beat: float = 1.0, lost_after=10.0
    ):
        self.store = dist.PrefixStore("watchdog", store)
        self.store.set_timeout(datetime.timedelta(seconds=lost_after))
        self.rank, self.world, self.beat, self.lost_after = rank, world, beat, lost_after
        self._threshold = lost_after  # seconds of silence that mean lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rank{rank}-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """This rank ends normally: its peers stop watching it."""
        self._stop.set()
        self._thread.join()
        try:
            self.store.set(f"ended{self.rank}", "1")
        except RuntimeError:  # the store's host ended first: nobody watches any more
            pass

    def _run(self) -> None:
        peers = [p for p in range(self.world) if p != self.rank]
        seen = {p: (-1, time.monotonic()) for p in peers}
        while not self._stop.wait(self.beat):
            try:
                self.store.add(f"beat{self.rank}", 1)
                for p in list(peers):
                    count = self.store.add(f"beat{p}", 0)
                    now = time.monotonic()
                    if count != seen[p][0]:
                        seen[p] = (count, now)
                    elif self.store.check([f"ended{p}"]):
                        peers.remove(p)
                    elif now - seen[p][1] > self._threshold:
                        silent = now - seen[p][1]
                        self._lost(f"rank {p} was lost: no sign of life for {silent:.0f} s")
            except RuntimeError:  # the store is gone: its host was lost
                if self._stop.is_set():
                    return
                host = "torchrun's agent on the first machine" if _agent() else "rank 0"
                self._lost(f"rank 0 was lost: the run's store in {host} stopped answering")

    def explain(self) -> None:
        """This rank's work failed (a reset connection, a timeout): if a lost peer is why,
        name it and end the process (within a few beats), else return to let the error
        speak for itself."""
        if not self._thread.is_alive():
            return
        self._threshold = 3 * self.beat
        self._thread.join(self.lost_after)

    def _lost(self, why: str) -> None:
        print(
            f"tgpipe run: {why} (it died, or its machine is unreachable); rank {self.rank} "
            "stops too. Restart the run (with --resume to continue from the last checkpoint).",
            file=sys.stderr,
            flush=True,
        )
        os._exit(LOST_STATUS)


def _agent() -> bool:
    """True under torchrun, whose agent hosts the store."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
