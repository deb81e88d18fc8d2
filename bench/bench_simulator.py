"""How fast the simulator is, and how good its long-run estimate is.

    python bench/bench_simulator.py

Prints, for each family on 8 ranks: simulated actions per second and the time to simulate
one REDDIT epoch (1,121 batches; target under 0.5 s, validation included). Then one GDELT
epoch (318,000 batches) by the steady-state estimate, with the estimate's error measured
against a full simulation of 8,000 batches predicted from windows of 1,000 and 2,000.
"""

from __future__ import annotations

import time

from tgpipe.dag import load_profile
from tgpipe.metrics import metrics
from tgpipe.schedules import family
from tgpipe.simulator import simulate
from tgpipe.simulator.estimate import estimate

REDDIT, GDELT, CHECK = 1_121, 318_000, 8_000
FAMILIES = ["sequential", "data_parallel", "pipetgl", "pipetgl/rows", "mspipe"]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = load_profile("gpu-illustrative")
    print(f"profile {p.name}; 8 ranks; REDDIT epoch = {REDDIT:,} batches")
    print(f"{'family':<16} {'actions':>8} {'simulate':>9} {'actions/s':>10} {'period ms':>10}")
    for name in FAMILIES:
        ranks = 1 if name == "sequential" else 8
        s = family(name, p, ranks, REDDIT)
        trace, seconds = min(
            (timed(lambda s=s: simulate(s, p)) for _ in range(3)), key=lambda run: run[1]
        )  # best of 3, validation included
        n = len(trace.rows)
        print(
            f"{s.name:<16} {n:>8,} {seconds:>7.3f} s {n / seconds:>10,.0f} "
            f"{metrics(trace).period * 1e3:>10.3f}"
        )

    print(f"\nGDELT epoch ({GDELT:,} batches) by steady-state estimate, 8 ranks")
    print(
        f"{'family':<16} {'est. error @8k':>15} {'est. epoch s':>13} {'est. time':>10} "
        f"{'full-run time (extrapolated)':>29}"
    )
    for name in ("pipetgl", "data_parallel", "mspipe"):

        def make(n, name=name):
            return family(name, p, 8, n)

        full, full_s = timed(lambda make=make: metrics(simulate(make(CHECK), p)))
        guess = estimate(make, p, CHECK, window=1_000)
        error = abs(guess.makespan - full.makespan) / full.makespan
        epoch, est_s = timed(lambda make=make: estimate(make, p, GDELT, window=2_000))
        print(
            f"{make(1).name:<16} {error * 100:>14.3f}% {epoch.makespan:>13.1f} "
            f"{est_s:>8.2f} s {full_s * GDELT / CHECK:>27.0f} s"
        )


if __name__ == "__main__":
    main()
