"""The metrics of a run, defined once for simulated and measured traces alike.

- **makespan**: end of the last action minus start of the first;
- **steady-state window**: from the completion of the batch at 20 % of the run to the one at
  about 80 % (batches ordered by when they complete), so that warm-up and drain are left out.
  The window spans a whole number of the schedule's *units* (``trace.unit``: the batches after
  which placement and groups repeat, lcm(g, W) for the families), so that it starts and ends
  at the same point of the pattern; runs of fewer than 5 batches use the whole run;
- **period**: the window's length over the batches completed inside it (after its start, up
  to and including its end), exact also where a group of batches completes at once;
- **throughput**: events per second = batch size / period;
- **GPU bubble ratio**: for each rank, the time inside the window when its GPU is idle (no
  action on its ``gpu`` lane, nor on ``gpu2``, a second worker of the same GPU) over the
  window's length;
- **gap**: period / lower bound - 1.

Examples
--------
>>> from tgpipe.trace import Trace, TraceRow
>>> rows = [TraceRow(0, "gpu", "FWD", b, b * 1.0, b * 1.0 + 0.5) for b in range(10)]
>>> m = metrics(Trace(rows, {"batch_size": 600}))
>>> m.period, m.bubble
(1.0, 0.5)
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple

from tgpipe.trace import Trace

__all__ = [
    "GPU_LANES",
    "Metrics",
    "gpu_busy",
    "gpu_idle",
    "gpu_spans",
    "metrics",
    "steady_window",
]

WARMUP, DRAIN = 0.2, 0.8


class Metrics(NamedTuple):
    makespan: float  #: seconds
    period: float  #: seconds per batch in the steady-state window
    throughput: float  #: events per second
    bubbles: tuple[float, ...]  #: per-rank GPU bubble ratio in the window
    window: tuple[float, float]  #: the steady-state window (start, end), seconds
    gap: float | None  #: period / bound - 1, when a bound was given

    @property
    def bubble(self) -> float:
        """Mean GPU bubble ratio over the ranks."""
        return sum(self.bubbles) / len(self.bubbles) if self.bubbles else 0.0


def steady_window(trace: Trace) -> tuple[float, float, int]:
    """(start, end, batches completed in (start, end]) of the steady-state window."""
    done: dict[int, float] = {}
    for r in trace.rows:
        done[r.batch] = max(done.get(r.batch, r.end), r.end)
    ends = sorted(done.values())
    n = len(ends)
    if n == 0:
        return 0.0, 0.0, 0
    if n < 5:
        return min(r.start for r in trace.rows), ends[-1], n
    a, b = math.floor(WARMUP * (n - 1)), math.ceil(DRAIN * (n - 1))
    unit = trace.unit
    b = a + max(1, (b - a) // unit) * unit if b - a >= unit else b
    start, end = ends[a], ends[b]
    # count completions in (start, end]: exact when batches complete in bursts (groups)
    return start, end, bisect.bisect_right(ends, end) - bisect.bisect_right(ends, start)


GPU_LANES = ("gpu", "gpu2")  #: the lanes that compute on a rank's GPU


def gpu_spans(trace: Trace, rank: int) -> list[tuple[float, float]]:
    """(start, end) of every action on the rank's GPU lanes, sorted."""
    return sorted((r.start, r.end) for r in trace.rows if r.rank == rank and r.lane in GPU_LANES)


def gpu_busy(trace: Trace, rank: int, start: float, end: float) -> float:
    """Seconds that the rank's GPU is busy inside [start, end] (overlaps merged)."""
    spans = gpu_spans(trace, rank)
    busy, cursor = 0.0, start
    for s, e in spans:
        s, e = max(s, cursor), min(e, end)
        if e > s:
            busy += e - s
            cursor = e
    return busy


def metrics(trace: Trace, bound: float | None = None) -> Metrics:
    """All metrics of a trace; `bound` (seconds per batch, else the trace's ``meta["bound"]``)
    gives the gap."""
    bound = bound if bound is not None else trace.meta.get("bound")
    if not trace.rows:
        raise ValueError("an empty trace has no metrics")
    makespan = max(r.end for r in trace.rows) - min(r.start for r in trace.rows)
    start, end, batches = steady_window(trace)
    period = (end - start) / batches if batches else 0.0
    span = end - start
    bubbles = tuple(
        1.0 - gpu_busy(trace, rank, start, end) / span if span > 0 else 0.0
        for rank in range(trace.n_ranks)
    )
    batch_size = trace.meta.get("batch_size", 600)
    throughput = batch_size / period if period > 0 else math.inf
    gap = period / bound - 1.0 if bound else None
    return Metrics(makespan, period, throughput, bubbles, (start, end), gap)


def gpu_idle(trace: Trace) -> float:
    """The GPU bubble ratio of a whole run (first start to last end), the mean over ranks:
    for a run that has no steady state, one snapshot epoch ending in an all-reduce."""
    if not trace.rows:
        return 0.0
    start = min(r.start for r in trace.rows)
    end = max(r.end for r in trace.rows)
    ranks = range(max(trace.n_ranks, 1 + max(r.rank for r in trace.rows)))
    busy = sum(gpu_busy(trace, rank, start, end) for rank in ranks)
    return 1 - busy / ((end - start) * len(ranks)) if end > start else 0.0
