"""Snapshot workloads: BLAD against snapshot and vertex partition, simulated and run.

    python bench/bench_snapshot.py                  # skewed snapshots growing over time
    python bench/bench_snapshot.py --data ../shared/data/wikipedia.csv

Part 1 simulates one epoch on 2 GPUs of the built-in ``snapshot-gpu-illustrative`` profile:
snapshot partition (ESDG: equal counts), BLAD with one worker per GPU (balancing alone),
BLAD with two workers (balancing and the overlap of a memory-bound op with a compute-bound
one) and vertex partition (every rank half of every snapshot, rows exchanged in every
position); the ratios (to snapshot partition) say what each gains, and ``--gantt`` draws
them (the second worker's lane ``gpu2`` beside ``gpu``). Part 2 does it on this machine:
profiles the snapshot ops here (``tgpipe profile --workload snapshot``), builds the same
schedules from that profile,
simulates them, runs each for real on 2 local gloo ranks (``tgpipe run --workload snapshot``)
and prints predicted and measured epoch time (the median epoch after the first) with the
simulator's error, and the replay's (the last epoch simulated again with its own op costs:
the model's error alone). A CPU rank runs
one op at a time, so the two workers cannot overlap here: only the balancing shows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tgpipe.dag.profile import load_profile
from tgpipe.executor.snapshot_model import snapshot_workload
from tgpipe.executor.snapshots import load_sequence
from tgpipe.executor.validate import measured_costs
from tgpipe.schedules.snapshot import blad, snapshot_partition, vertex_partition
from tgpipe.simulator.sim import simulate
from tgpipe.trace import Trace

CHOICES = (
    ("snapshot_partition", lambda p, w: snapshot_partition(p, w, 2)),
    ("blad, 1 worker", lambda p, w: blad(p, w, 2, workers=1)),
    ("blad, 2 workers", lambda p, w: blad(p, w, 2)),
    ("vertex_partition", lambda p, w: vertex_partition(p, w, 2)),
)


def epoch(trace: Trace) -> float:
    return max(r.end for r in trace.rows) - min(r.start for r in trace.rows)


def tgpipe(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"tgpipe {args[0]} failed: {done.stderr.strip().splitlines()[-1]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="growing:64")
    p.add_argument("--period", type=float, default=86400.0)
    p.add_argument("--group", type=int, default=4)
    p.add_argument(
        "--epochs", type=int, default=6, help="epochs of each run; the median after the first"
    )
    p.add_argument("--gantt", metavar="FILE.html", help="chart of part 1's schedules")
    args = p.parse_args()
    data = ["--data", args.data, "--period", str(args.period), "--group", str(args.group)]
    seq = load_sequence(args.data, args.period)
    w = snapshot_workload(seq, args.group)
    edges = sorted(e for _, e in w.sizes)
    print(
        f"{args.data}: {w.n_positions} training snapshots of {edges[0]:,}-{edges[-1]:,} edges "
        f"(median {edges[len(edges) // 2]:,}), groups of {args.group}, 2 ranks\n"
    )

    gpu = load_profile("snapshot-gpu-illustrative")
    traces = [simulate(build(gpu, w), gpu) for _, build in CHOICES]
    base = epoch(traces[0])
    print("1. simulated, snapshot-gpu-illustrative (2 GPUs)")
    print(f"{'schedule':<20}{'epoch ms':>10}{'speed-up':>10}")
    for (name, _), t in zip(CHOICES, traces, strict=True):
        print(f"{name:<20}{epoch(t) * 1e3:>10.3f}{base / epoch(t):>9.2f}x")
    if args.gantt:
        from tgpipe.gantt import write_gantt

        write_gantt(traces, args.gantt, title="snapshot partition and BLAD, simulated")

    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp) / "profile.json"
        tgpipe("profile", "--workload", "snapshot", *data, "--nproc", "2", "-o", str(here))
        cpu = load_profile(here)
        rows = []
        for k, (name, build) in enumerate(CHOICES):
            schedule = build(cpu, w)
            path, trace = Path(tmp) / f"{k}.schedule", Path(tmp) / f"{k}.json"
            schedule.save(path)
            run = ["run", "--workload", "snapshot", "--schedule", str(path), *data]
            run += ["--nproc", "2", "--epochs", str(args.epochs), "--no-evaluate"]
            tgpipe(*run, "--trace", str(trace), "--metrics", str(Path(tmp) / "m.json"))
            times = [e["seconds"] for e in json.loads((Path(tmp) / "m.json").read_text())["epochs"]]
            measured = Trace.load(trace)  # the last epoch, replayed against itself
            replay = epoch(simulate(schedule, cpu, costs=measured_costs(measured)))
            replay_error = replay / epoch(measured) - 1
            predicted = epoch(simulate(schedule, cpu))
            rows.append((name, predicted, statistics.median(times[1:]), replay_error))
    print(f"\n2. this machine ({cpu.device}, 2 gloo ranks): predicted from its profile, and run")
    head = ("schedule", "predicted ms", "measured ms", "error %", "replay err %", "speed-up")
    print(f"{head[0]:<20}" + "".join(f"{h:>14}" for h in head[1:]))
    for name, predicted, measured, replay_error in rows:
        print(
            f"{name:<20}{predicted * 1e3:>14.2f}{measured * 1e3:>14.2f}"
            f"{(predicted - measured) / measured * 100:>+14.1f}"
            f"{replay_error * 100:>+14.1f}{rows[0][2] / measured:>13.2f}x"
        )


if __name__ == "__main__":
    main()
