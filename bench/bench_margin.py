"""Why the search wants a margin (`tgpipe.schedules.search.MARGIN`): two close schedules,
each predicted and run side by side, from one profile per pair.

    python bench/bench_margin.py                 # wikipedia, first 30,000 events, 4 pairs
    python bench/bench_margin.py --pairs 2

The pair is pipetgl(2) and the pipeline that `tgpipe search --margin 0` found in some rounds
of the fidelity bench on this machine: semantics (0,1,2), its STEP one batch late so that the
all-reduce overlaps the next batch's ops. Their predictions are within a few per cent of each
other. Each pair profiles the ranks, then simulates and runs both (in turns, first one then
the other first); the table gives the pipeline's period over pipetgl's, predicted, measured
and replayed (simulated with each run's own op costs). Where the measured ratio lies on the
other side of 1 from the predicted one, the simulator ranked the two wrongly.
"""

from __future__ import annotations

import argparse
import statistics

from bench_fidelity import add_slice_args, slice_of  # this folder: run as a script

from tgpipe.dag.semantics import Semantics
from tgpipe.executor.validate import family_schedules, measure_profile, validate
from tgpipe.schedules.search import Candidate

#: The lagging pipeline, as the search names it: pipeline(W=2,s=(0,1,2),host,p=3,late,
#: support,lag=1).
LAGGING = Candidate(
    2, Semantics(0, 1, 2), "host", prefetch=3, fetch_first=False, support_first=True, step_lag=1
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_slice_args(p)
    p.add_argument("--pairs", type=int, default=4, help="profile-and-two-runs rounds")
    args = p.parse_args()
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    n, data = slice_of(args)
    ratios = []  # (predicted, measured, replayed) per pair
    for k in range(args.pairs):
        profile = measure_profile(data, 2, max(30, n))
        ring = family_schedules(["pipetgl"], profile, 2, n)[0]
        lagging = LAGGING.build(profile, n, None)
        order = [ring, lagging] if k % 2 == 0 else [lagging, ring]
        rows, _ = validate(order, profile, data)
        by = {r.name: r for r in rows}
        lag, pipetgl = by[lagging.name], by[ring.name]
        ratios.append(
            (
                lag.predicted / pipetgl.predicted,
                lag.measured / pipetgl.measured,
                lag.replayed / pipetgl.replayed,
            )
        )
    print(f"{lagging.name} over pipetgl(2), period per batch ({n} batches of {args.batch_size})")
    print(f"{'pair':<8}{'predicted':>12}{'measured':>12}{'replayed':>12}")
    for k, (pred, meas, rep) in enumerate(ratios):
        wrong = "  ranked wrongly" if (pred < 1) != (meas < 1) else ""
        print(f"{k + 1:<8}{pred:>12.3f}{meas:>12.3f}{rep:>12.3f}{wrong}")
    med = [statistics.median(r[i] for r in ratios) for i in range(3)]
    print(f"{'median':<8}{med[0]:>12.3f}{med[1]:>12.3f}{med[2]:>12.3f}")


if __name__ == "__main__":
    main()
