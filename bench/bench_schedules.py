"""Speed of the schedules on this machine: sequential, data parallel, MSPipe and the PipeTGL
ring, each trained for real by `tgpipe run` on local gloo ranks, side by side.

    python bench/bench_schedules.py                      # all of wikipedia, 1 epoch, 2 rounds
    python bench/bench_schedules.py --limit-events 30000 --rounds 1

Every schedule runs the same data, batch size, epochs and one torch thread per rank; the
rounds interleave the schedules (round 1: all, round 2: all...) so that the machine's drift
touches them alike, and the table gives the median events/s of the rounds, its ratio to
sequential, and the test AP of the last round (the schedules differ in staleness, so their
accuracy may differ too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia.csv"
SCHEDULES = ("sequential", "data_parallel", "mspipe", "pipetgl")


def run(schedule: str, args: argparse.Namespace, out: Path) -> dict:
    """One `tgpipe run`; its --metrics record."""
    metrics = out / f"{schedule}.json"
    cmd = [sys.executable, "-m", "tgpipe", "run", "--schedule", schedule, "--data", args.data]
    cmd += ["--nproc", "2", "--epochs", str(args.epochs), "--threads", "1"]
    cmd += ["--batch-size", str(args.batch_size), "--metrics", str(metrics), "--timeout", "60"]
    if args.limit_events:
        cmd += ["--limit-events", str(args.limit_events)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{schedule} failed:\n{done.stderr[-3000:]}")
    return json.loads(metrics.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--limit-events", type=int, default=None)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    speeds: dict[str, list[float]] = {s: [] for s in SCHEDULES}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for s in SCHEDULES:
                last[s] = run(s, args, Path(tmp))
                epochs = last[s]["epochs"]
                speeds[s].append(statistics.mean(e["events_per_s"] for e in epochs))
                print(
                    f"round {r + 1}/{args.rounds} {last[s]['schedule']}: "
                    f"{speeds[s][-1]:,.0f} events/s",
                    file=sys.stderr,
                    flush=True,
                )
    base = statistics.median(speeds["sequential"])
    print(
        f"{'schedule':<18}{'ranks':>6}{'(s_mem,s_w,g)':>15}{'events/s':>11}{'x seq':>7}"
        f"{'test AP':>9}"
    )
    for s in SCHEDULES:
        rec, speed = last[s], statistics.median(speeds[s])
        sem = "(" + ",".join(map(str, rec["semantics"])) + ")"
        print(
            f"{rec['schedule']:<18}{rec['ranks']:>6}{sem:>15}{speed:>11,.0f}"
            f"{speed / base:>7.2f}{rec['epochs'][-1]['test_ap']:>9.4f}"
        )


if __name__ == "__main__":
    main()
