"""What the lane threads of both runtimes share: a mailbox to wait on, and how a failure in
one thread stops the others.

Each rank runs its lanes as threads (`tgpipe.executor.rank` for TGN batches,
`tgpipe.executor.snapshot_runtime` for snapshot epochs), plus a sender (the rank's port) and
a receiver per incoming stream of messages. A thread waits for what other threads or ranks
produce: an event, or an item in a `Mailbox` (packed weights by version; hidden-state rows
by unit). Every wait looks at the run's abort flag every `POLL` seconds, and `LaneThreads`
runs each thread under a guard that hands its exception to the main thread and raises the
flag, so that one failure ends every wait instead of leaving the rank hanging.

Examples
--------
>>> import threading
>>> box = Mailbox("weights of version")
>>> box.put(3, "theta3")
>>> box.get(3, threading.Event(), timeout=1.0)
'theta3'
>>> box.prune(below=4); box.state()
{}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tgpipe.executor.memory import POLL, Aborted

__all__ = ["LaneThreads", "Mailbox"]


class Mailbox:
    """Items by key, put by one thread and waited for by others."""

    def __init__(self, what: str):
        self.what = what  #: names an item in the error when it never arrives
        self._cond = threading.Condition()
        self._items: dict[int, object] = {}

    def put(self, key: int, item) -> None:
        with self._cond:
            self._items[key] = item
            self._cond.notify_all()

    def get(self, key: int, abort: threading.Event, timeout: float, *, take: bool = False):
        """The item of `key` once it is there (`take`: and forget it); `Aborted` once
        `abort` is set; RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._items:
                if abort.is_set():
                    raise Aborted()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.what} {key} never arrived")
                self._cond.wait(POLL)
            return self._items.pop(key) if take else self._items[key]

    def prune(self, below: int) -> None:
        """Forget the items whose key is below `below`."""
        with self._cond:
            for key in [k for k in self._items if k < below]:
                del self._items[key]

    def state(self) -> dict:
        """A copy of every item by key (what a checkpoint saves)."""
        with self._cond:
            return dict(self._items)


class LaneThreads:
    """A rank's threads run under one abort flag (a mixin: the runner sets `rank`, and
    `abort` and `errors` before each run)."""

    rank: int
    abort: threading.Event
    errors: list[BaseException]

    def _guard(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.errors.append(exc)
            self.abort.set()

    def _wait(self, event: threading.Event) -> None:
        while not event.wait(POLL):
            if self.abort.is_set():
                raise Aborted()

    def _threads(self, workers: list[tuple[Callable, tuple, str]]) -> list[threading.Thread]:
        """One guarded daemon thread per (function, arguments, name), not started."""
        return [
            threading.Thread(
                target=self._guard, args=(fn, *args), name=f"rank{self.rank}-{name}", daemon=True
            )
            for fn, args, name in workers
        ]
