"""Speed of the schedules on this machine: sequential, data parallel, MSPipe and the PipeTGL
ring, each trained for real by `tgpipe run` on local gloo ranks, side by side.

    python bench/bench_schedules.py                      # all of wikipedia, 1 epoch, 2 rounds
    python bench/bench_schedules.py --limit-events 30000 --rounds 1
    python bench/bench_schedules.py --memory shared,rows   # both node memory backends

Every schedule runs the same data, batch size, epochs and one torch thread per rank; the
rounds interleave the schedules (round 1: all, round 2: all...) so that the machine's drift
touches them alike, and the table gives the median events/s of the rounds, its ratio to
sequential, and the test AP of the last round (the schedules differ in staleness, so their
accuracy may differ too); a last line gives the PipeTGL ring's speed over data parallel's in
each round, the pair that ran closest in time. ``--memory`` names the node memory backends
to run each schedule with (`tgpipe run --memory`; default: auto, shared host memory on one
machine); with two or more, the rounds interleave them too and the table has a row per
schedule and backend.
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
SCHEDULES = ("sequential", "mspipe", "data_parallel", "pipetgl")  # the last two side by side


def run(schedule: str, memory: str, args: argparse.Namespace, out: Path) -> dict:
    """One `tgpipe run`; its --metrics record."""
    metrics = out / f"{schedule}-{memory}.json"
    cmd = [sys.executable, "-m", "tgpipe", "run", "--schedule", schedule, "--data", args.data]
    cmd += ["--nproc", "2", "--epochs", str(args.epochs), "--threads", "1"]
    cmd += ["--batch-size", str(args.batch_size), "--metrics", str(metrics), "--timeout", "60"]
    cmd += ["--memory", memory]
    if args.limit_events:
        cmd += ["--limit-events", str(args.limit_events)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{schedule} --memory {memory} failed:\n{done.stderr[-3000:]}")
    return json.loads(metrics.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--limit-events", type=int, default=None)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--memory", default="auto", help="backends, comma-separated (default: auto)")
    args = p.parse_args()
    runs = [(s, m) for s in SCHEDULES for m in args.memory.split(",")]
    speeds: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    last: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for key in runs:
                last[key] = run(*key, args, Path(tmp))
                epochs = last[key]["epochs"]
                speeds[key].append(statistics.mean(e["events_per_s"] for e in epochs))
                print(
                    f"round {r + 1}/{args.rounds} {last[key]['schedule']} --memory {key[1]}: "
                    f"{speeds[key][-1]:,.0f} events/s",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"{'schedule':<18}{'memory':>7}{'ranks':>6}{'(s_mem,s_w,g)':>15}{'events/s':>11}"
        f"{'x seq':>7}{'test AP':>9}"
    )
    for s, m in runs:
        rec, speed = last[s, m], statistics.median(speeds[s, m])
        base = statistics.median(speeds["sequential", m])
        sem = "(" + ",".join(map(str, rec["semantics"])) + ")"
        print(
            f"{rec['schedule']:<18}{m:>7}{rec['ranks']:>6}{sem:>15}{speed:>11,.0f}"
            f"{speed / base:>7.2f}{rec['epochs'][-1]['test_ap']:>9.4f}"
        )
    for m in args.memory.split(","):  # neighbours in a round: the drift between them is least
        ring, dp = speeds["pipetgl", m], speeds["data_parallel", m]
        ratios = [a / b for a, b in zip(ring, dp, strict=True)]
        print(
            f"pipetgl / data_parallel --memory {m}, round by round: "
            f"{' '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
