"""One GPU that runs two ops at once, each slowed only where the two compete.

Think of a kitchen with one cooker and one sink, and two cooks. A cook who mostly fries and a
cook who mostly washes up hardly get in each other's way; two cooks who both want every ring
of the cooker each take twice as long. A `SharedDevice` is that kitchen: up to `capacity` ops
run at once (more wait in line, first come first served, like a ``simpy.Resource``), and each
op says, with a `Usage`, what fraction of the device's compute throughput and of its memory
bandwidth it uses when it runs alone.

The model, a fluid (processor-sharing) one: at each instant, with the set A of running ops,
the slowdown is

    s = max(1, sum of compute over A, sum of memory over A)

and every running op progresses at rate 1/s (seconds of alone-time per second). A
compute-bound op next to a memory-bound one runs at full speed while both sums stay <= 1;
two compute-bound ops share the compute, each at half speed. The rates change only when an op
starts or ends; then every running op's remaining work is re-timed. Since all running ops
progress at the same rate, one virtual clock V (dV/dt = 1/s) does it: an op that starts at
virtual time V0 with `work` seconds ends when V reaches V0 + work, so a change costs one
timeout for the next end and no op's remaining work is rounded again and again.

Limits: no cache or L2 interference, no kernel-launch granularity or scheduler time slices,
rates are linear in the sums (a real GPU degrades before a resource is 100% used), and an op
is one steady phase (its compute and memory shares do not change while it runs). One op alone
runs at exactly its profiled time.

Examples
--------
>>> import simpy
>>> env = simpy.Environment()
>>> gpu = SharedDevice(env)
>>> times = {}
>>> def op(name, work, usage):
...     times[name] = yield from gpu.run(work, usage)
>>> _ = env.process(op("matmul", 2.0, Usage(compute=0.8, memory=0.2)))  # compute-bound
>>> _ = env.process(op("gather", 1.0, Usage(compute=0.2, memory=0.8)))  # memory-bound
>>> env.run()
>>> times["matmul"], times["gather"]  # they fit side by side: both at full speed
((0.0, 2.0), (0.0, 1.0))
>>> _ = env.process(op("fwd", 1.0, Usage(compute=1.0, memory=0.3)))
>>> _ = env.process(op("bwd", 1.0, Usage(compute=1.0, memory=0.3)))
>>> env.run()
>>> times["fwd"], times["bwd"]  # both want all the compute: each takes twice as long
((2.0, 4.0), (2.0, 4.0))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import simpy

from tgpipe.errors import InputError

__all__ = ["SharedDevice", "Usage", "slowdown"]


def _fraction(name: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not 0.0 < x <= 1.0:
        raise InputError(f"usage {name} must be a fraction in (0, 1], got {value!r}")
    return x


@dataclass(frozen=True)
class Usage:
    """The fractions of compute throughput and memory bandwidth an op uses alone, in (0, 1]."""

    compute: float
    memory: float

    def __post_init__(self):
        object.__setattr__(self, "compute", _fraction("compute", self.compute))
        object.__setattr__(self, "memory", _fraction("memory", self.memory))


def slowdown(usages: Iterable[Usage]) -> float:
    """max(1, sum of compute, sum of memory): how much slower each op of a set runs together.

    >>> slowdown([Usage(0.9, 0.2), Usage(0.2, 0.9)]), slowdown([Usage(1.0, 0.2)] * 2)
    (1.1, 2.0)
    """
    compute = memory = 0.0
    for u in usages:
        compute += u.compute
        memory += u.memory
    return max(1.0, compute, memory)


class SharedDevice:
    """A device that runs up to `capacity` ops at once; see the module docstring for the model."""

    def __init__(self, env: simpy.Environment, capacity: int = 2):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InputError(f"device capacity must be a whole number >= 1, got {capacity!r}")
        self.env = env
        self.capacity = capacity
        self._slots = simpy.Resource(env, capacity)
        self._ids = itertools.count()
        self._running: dict[int, tuple[float, Usage, simpy.Event]] = {}  # id -> (end V, ...)
        self._virtual = 0.0  # V at time self._since
        self._since = env.now
        self._slowdown = 1.0
        self._armed = 0  # generation of the one live timer; older timers do nothing

    @property
    def slowdown(self) -> float:
        """The current slowdown s (1.0 when idle)."""
        return self._slowdown

    @property
    def running(self) -> int:
        """How many ops run now."""
        return len(self._running)

    def run(self, work: float, usage: Usage) -> Generator[simpy.Event, object, tuple[float, float]]:
        """Run an op of `work` seconds alone-time; ``yield from`` it; returns (start, end)."""
        try:
            w = float(work)
        except (TypeError, ValueError):
            w = math.nan
        if isinstance(work, bool) or not (math.isfinite(w) and w >= 0.0):
            raise InputError(f"op work must be a finite number of seconds >= 0, got {work!r}")
        if not isinstance(usage, Usage):
            raise InputError(f"op usage must be a Usage(compute, memory), got {usage!r}")
        return self._run(w, usage)  # checked now, at the call, not at the first step

    def _run(self, w: float, usage: Usage) -> Generator[simpy.Event, object, tuple[float, float]]:
        with self._slots.request() as req:
            yield req
            start = self.env.now
            done = self.env.event()
            self._advance()
            self._running[next(self._ids)] = (self._virtual + w, usage, done)
            self._rearm()
            yield done
        return float(start), float(self.env.now)

    def _advance(self) -> None:
        now = self.env.now
        self._virtual += (now - self._since) / self._slowdown
        self._since = now

    def _rearm(self) -> None:
        """New rates for the running set; one timeout for the op that will end first.

        A superseded timeout stays in SimPy's queue (it cannot be cancelled) and does nothing
        when it fires. It never fires after the device's last end (up to rounding): it was set for
        the op with the least end V under the load of its moment, every op then running outlives
        that op, and more ops only raise s, so that op really ends no earlier than the timeout.
        """
        self._slowdown = slowdown(u for _, u, _ in self._running.values())
        self._armed += 1
        if not self._running:
            return
        key = min(self._running, key=lambda k: self._running[k][0])
        delay = max(0.0, (self._running[key][0] - self._virtual) * self._slowdown)
        generation = self._armed
        self.env.timeout(delay).callbacks.append(lambda _: self._end(generation, key))

    def _end(self, generation: int, key: int) -> None:
        if generation != self._armed:
            return
        end, _, done = self._running.pop(key)
        self._virtual, self._since = end, self.env.now  # exact: V reached `end` now
        done.succeed()
        self._rearm()
