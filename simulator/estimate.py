"""Long runs from short ones: the makespan of an epoch too long to simulate action by action.

A periodic schedule settles into a steady state after a warm-up: its makespan grows linearly
with the number of batches, makespan(n) = offset + n x period. Two simulated windows (n1 and
n2 = 2 n1 batches) give both constants, and the estimate for n batches follows. Where the
pattern has not settled within n1 batches the estimate is off: `bench/bench_simulator.py`
measures that error against full runs.

Examples
--------
>>> from tgpipe.dag import load_profile
>>> from tgpipe.schedules import family
>>> p = load_profile("gpu-illustrative")
>>> e = estimate(lambda n: family("pipetgl", p, 4, n), p, 318_000, window=400)
>>> round(e.period * 1e3, 2), e.simulated_batches
(3.42, 1200)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tgpipe.dag.profile import CostProfile
from tgpipe.metrics import metrics
from tgpipe.schedules.ir import Schedule
from tgpipe.simulator.sim import simulate

__all__ = ["Estimate", "estimate"]


class Estimate(NamedTuple):
    makespan: float  #: seconds for all n batches
    period: float  #: seconds per batch in steady state
    bubbles: tuple[float, ...]  #: per-rank GPU bubble ratio of the longer window
    simulated_batches: int  #: batches actually simulated (both windows)


def estimate(
    make: Callable[[int], Schedule], profile: CostProfile, n_batches: int, window: int = 2000
) -> Estimate:
    """Estimate the run of ``make(n_batches)`` from runs of ``make(window)`` and
    ``make(2 window)``; a run no longer than 2 windows is simulated whole."""
    if n_batches <= 2 * window:
        m = metrics(simulate(make(n_batches), profile))
        return Estimate(m.makespan, m.period, m.bubbles, n_batches)
    short = metrics(simulate(make(window), profile))
    long = metrics(simulate(make(2 * window), profile))
    period = (long.makespan - short.makespan) / window
    offset = short.makespan - window * period
    return Estimate(offset + n_batches * period, period, long.bubbles, 3 * window)
