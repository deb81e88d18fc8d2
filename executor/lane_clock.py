"""Where a rank's lanes run their ops, and how an op is timed.

On a CPU a lane is a thread, and an op's start and end are read from the host clock.

On a GPU each lane also gets a CUDA stream of its own, so that two lanes' kernels can run at
once (the overlap that a pipeline schedule is made of), and an op is timed by CUDA events
recorded on its lane's stream. Kernels run after the call that queued them returns, so:

- an op's lane waits for its stream at the op's end (`CudaClock.time`): the op's successors,
  on any lane or rank, then read what it wrote. It naps while it waits, rather than spin as
  a plain synchronize may (the rank's waiting lanes would take the core from the lane that
  launches kernels), and gives up once another thread of the rank failed (an all-reduce
  whose peer never comes never ends on the GPU);
- the tensors an op uses that another lane's stream made are marked as in use on this lane's
  stream (`record_stream`), so that the caching allocator does not give their memory to a
  new tensor while this lane's kernels still read them (an op that replaces a batch's
  gradients frees the old ones while its own kernels are queued);
- a thread that hands a device tensor to another thread before its op ends (a memory write,
  a packed learner filed under its version) first waits for its stream (`settle`).

Written without a GPU at hand: no session has had one to run it on yet.

Examples
--------
>>> clock = lane_clock(torch.device("cpu"))
>>> clock.start()
>>> with clock.lane("compute"):
...     start, end = clock.time(lambda: sum(range(1000)), uses=())
>>> 0 <= start <= end
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import torch

__all__ = ["NAP", "CudaClock", "HostClock", "lane_clock", "settle", "tensors"]


#: Seconds a GPU lane sleeps between two looks at its op's end.
NAP = 50e-6


def settle(device: torch.device) -> None:
    """Wait until the kernels this thread queued on `device` have run (on a CPU: nothing)."""
    if device.type == "cuda":
        done = torch.cuda.Event(blocking=True)  # its wait sleeps rather than spins
        done.record(torch.cuda.current_stream(device))
        done.synchronize()


def tensors(obj) -> Iterator[torch.Tensor]:
    """Every tensor in `obj`: itself, or in its dataclass fields, tuples, lists and dicts
    (a `BatchState` with its `MemoryRows`, `Neighbours` and gradients)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensors(getattr(obj, f.name))
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors(item)


class HostClock:
    """A CPU rank's lanes: threads, timed by the host clock."""

    def start(self) -> None:
        """Time zero of an epoch's rows."""
        self.t0 = time.perf_counter()

    def lane(self, name: str) -> contextlib.AbstractContextManager:
        """What a lane's thread runs its steps in (on a CPU: nothing)."""
        return contextlib.nullcontext()

    def time(
        self, fn: Callable[[], object], uses, abort: threading.Event | None = None
    ) -> tuple[float, float]:
        """Run `fn` (an op; `uses`: what it reads that other lanes made) and return its
        start and end in seconds from `start`; `Aborted` once `abort` is set while it
        waits for the GPU."""
        start = time.perf_counter()
        fn()
        return start - self.t0, time.perf_counter() - self.t0


class CudaClock(HostClock):
    """A GPU rank's lanes: a CUDA stream each, timed by CUDA events (see the module doc)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._streams: dict[str, torch.cuda.Stream] = {}

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record(torch.cuda.current_stream(self.device))
        self.origin.synchronize()

    @contextlib.contextmanager
    def lane(self, name: str):
        """The lane's stream, current in its thread (and the rank's GPU: a new thread's
        current device is GPU 0 whatever the rank's)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = torch.cuda.Stream(self.device)
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            yield

    def time(
        self, fn: Callable[[], object], uses, abort: threading.Event | None = None
    ) -> tuple[float, float]:
        from tgpipe.executor.memory import Aborted  # here: memory imports this module

        stream = torch.cuda.current_stream(self.device)
        for t in tensors(uses):
            if t.is_cuda:
                t.record_stream(stream)
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record(stream)
        fn()
        end.record(stream)
        while not end.query():
            if abort is not None and abort.is_set():
                raise Aborted()
            time.sleep(NAP)
        return self.origin.elapsed_time(begin) / 1e3, self.origin.elapsed_time(end) / 1e3


def lane_clock(device: torch.device) -> HostClock:
    """The clock of a rank whose ops run on `device`."""
    return CudaClock(device) if device.type == "cuda" else HostClock()
