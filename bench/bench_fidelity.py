"""Fidelity of the simulator on this machine: each family's predicted period per batch
beside the period the same schedule measures when it trains for real, side by side.

    python bench/bench_fidelity.py                       # wikipedia, first 30,000 events
    python bench/bench_fidelity.py --limit-events 0      # all of it

It is what `tgpipe validate` does (profile this machine with all ranks computing, simulate
each family from that profile, run the same schedule file on local gloo ranks), with the
verdict: the largest error, and whether every family is within 10 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tgpipe.executor.validate import (
    FAMILY_NAMES,
    data_args,
    family_schedules,
    measure_profile,
    training_batches,
    validate,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--limit-events", type=int, default=30000)
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--nproc", type=int, default=2)
    args = p.parse_args()
    limit = args.limit_events or None
    n = training_batches(args.data, args.batch_size, limit)
    data = data_args(args.data, args.batch_size, limit)
    profile = measure_profile(data, args.nproc, 30)
    schedules = family_schedules(FAMILY_NAMES, profile, args.nproc, n)
    rows, _ = validate(schedules, profile, data)
    print(f"{n} batches of {args.batch_size} events, {profile.device}, {args.nproc} ranks")
    print(f"{'schedule':<18}{'predicted ms':>13}{'measured ms':>13}{'error %':>9}")
    for f in rows:
        print(
            f"{f.name:<18}{f.predicted * 1e3:>13.2f}{f.measured * 1e3:>13.2f}{f.error * 100:>+9.1f}"
        )
    worst = max(rows, key=lambda f: abs(f.error))
    verdict = "within" if abs(worst.error) <= 0.10 else "NOT within"
    print(
        f"largest |error|: {abs(worst.error) * 100:.1f} % ({worst.name}); "
        f"every family {verdict} 10 %"
    )


if __name__ == "__main__":
    main()
