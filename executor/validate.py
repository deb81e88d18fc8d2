"""Fidelity: the simulator's prediction beside what the same schedule measures for real.

`validate` profiles this machine (``tgpipe profile``), builds each schedule from that
profile, simulates it, runs it (``tgpipe run`` on local ranks, the very schedule file that
was simulated) and compares the period per batch of the two traces, with one definition of
period for both (`tgpipe.metrics`). The runs are subprocesses, as a user would start them,
one after the other so that they do not share the machine.

An error has two sources: the profile (ops cost in a run what they cost when profiled? on a
shared machine whose speed drifts from minute to minute, often not) and the model (given the
right costs, does the simulator place the actions, waits and messages as the run does?). To
tell them apart each run is also *replayed*: simulated again with every action's own measured
seconds (`measured_costs`) instead of the profile's. The replay's error is the model's alone.

Examples
--------
>>> round(Fidelity("pipetgl(2)", 2, (0, 1, 1), predicted=0.020, measured=0.025).error, 3)
-0.2
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tgpipe.dag.profile import CostProfile
from tgpipe.errors import InputError
from tgpipe.metrics import metrics
from tgpipe.progress import Progress
from tgpipe.schedules.ir import Action, Schedule
from tgpipe.simulator.sim import simulate
from tgpipe.trace import Trace

__all__ = [
    "Fidelity",
    "data_args",
    "family_schedules",
    "measured_costs",
    "measure_profile",
    "median_epoch",
    "run_schedule",
    "training_batches",
    "validate",
]


@dataclass(frozen=True)
class Fidelity:
    """Predicted and measured period per batch (seconds) of one schedule."""

    name: str
    ranks: int
    semantics: tuple[int, int, int]
    predicted: float
    measured: float
    predicted_bubble: float = 0.0
    measured_bubble: float = 0.0
    replayed: float | None = None  #: the period of the run replayed with its measured costs

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured

    @property
    def replay_error(self) -> float | None:
        """(replayed - measured) / measured: the model's error, the profile's left out."""
        return None if self.replayed is None else (self.replayed - self.measured) / self.measured


def measured_costs(trace: Trace) -> dict[Action, float]:
    """Each action's seconds in a measured run, without its waits: its dispatch included,
    as the profile counts it (`tgpipe.executor.runtime_timing.op_seconds`; the snapshot
    workload's profile does not: there, each row's length). The members of an all-reduce
    also wait inside it for the last one to arrive: each is given the group's shortest, the
    last arrival's, which is the all-reduce itself."""
    from tgpipe.dag.build import predecessors
    from tgpipe.dag.semantics import Semantics
    from tgpipe.executor.runtime_timing import op_seconds

    one = trace.meta.get("workload") == "snapshot"  # one all-reduce at the epoch's end
    g = 1 if one else trace.meta["semantics"][2]
    if one or not trace.rows:
        costs = {Action(r.op, r.batch): r.end - r.start for r in trace.rows}
    else:
        n = 1 + max(r.batch for r in trace.rows)
        preds = predecessors(Semantics(*trace.meta["semantics"]), n)
        costs = {Action(*a): s for a, s in op_seconds(trace.rows, preds).items()}
    groups: dict[int, list[Action]] = defaultdict(list)
    for act in costs:
        if act.op == "GRAD_SYNC":
            groups[0 if one else act.batch // g].append(act)
    for members in groups.values():
        shortest = min(costs[a] for a in members)
        costs.update(dict.fromkeys(members, shortest))
    return costs


def _tgpipe(args: list[str], what: str) -> None:
    """Run ``python -m tgpipe ARGS``; its failure becomes one line naming `what`."""
    done = subprocess.run([sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True)
    if done.returncode:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise InputError(f"{what} failed: {lines[-1] if lines else 'no message'}")


def data_args(data: str, batch_size: int, limit_events: int | None) -> list[str]:
    """The options that choose the same data and batches in every subprocess."""
    args = ["--data", str(data), "--batch-size", str(batch_size)]
    return args + (["--limit-events", str(limit_events)] if limit_events else [])


def training_batches(data: str, batch_size: int, limit_events: int | None) -> int:
    """The training batches of the data (bad data is refused here, before any work)."""
    from tgpipe.executor.data import load_dataset
    from tgpipe.executor.stream import TRAIN, Stream

    graph = load_dataset(data)
    if limit_events:
        graph = graph.slice(0, min(limit_events, graph.n_events))
    return Stream(graph, batch_size).n_batches(TRAIN)


def family_schedules(
    names: Sequence[str], profile: CostProfile, nproc: int, n_batches: int
) -> list[Schedule]:
    """Each family on `nproc` ranks (sequential on one), built from `profile`."""
    from tgpipe.schedules.families import family

    return [family(f, profile, 1 if f == "sequential" else nproc, n_batches) for f in names]


def measure_profile(data: list[str], nproc: int, repeat: int) -> CostProfile:
    """``tgpipe profile`` on this machine, with `nproc` ranks computing at once, timing
    `repeat` batches (the training batches' count or more: every batch gets its scale)."""
    from tgpipe.dag.profile import load_profile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        _tgpipe(
            ["profile", *data, "--nproc", str(nproc), "--repeat", str(repeat), "-o", str(out)],
            "profiling",
        )
        return load_profile(out)


#: Epochs that a run trains: the first warms up (allocations, first calls); the others are
#: measured, and the one of median period stands for the run. On this shared machine a burst
#: of other work makes one epoch 10-30 % slower than those beside it (pipetgl(2), wikipedia,
#: 30,000 events: epochs of 0.74-1.04 s in one run of 12, one of 1.30 s in another).
RUN_EPOCHS = 4


def run_schedule(
    schedule: Schedule, folder: Path, data: list[str], epochs: int = RUN_EPOCHS
) -> Trace:
    """Train `epochs` epochs with `schedule` (saved to a file first) on its ranks, locally;
    the trace of the measured epoch (`median_epoch`)."""
    nproc = schedule.n_ranks
    safe = "".join(c if c.isalnum() else "_" for c in schedule.name)
    path = folder / f"{safe}.schedule"
    schedule.save(path)
    trace = folder / f"{safe}.trace.json"
    args = ["run", "--schedule", str(path), *data, "--nproc", str(nproc), "--no-evaluate"]
    args += ["--epochs", str(epochs), "--trace-epochs", "all", "--trace", str(trace)]
    _tgpipe([*args, "--timeout", "120"], f"running {schedule.name}")
    return median_epoch(Trace.load(trace), epochs)


def median_epoch(trace: Trace, epochs: int) -> Trace:
    """Of the trace of a run of `epochs` epochs (``tgpipe run --trace-epochs all``: each
    epoch's rows from the end of the epoch before), the epoch of median period among all but
    the first, from its own time 0 (as ``--trace-epochs last`` writes one)."""
    rows = sorted(trace.rows, key=lambda r: r.start)
    size, left = divmod(len(rows), epochs)
    if epochs < 2 or left or not size:
        raise ValueError(f"a trace of {len(rows)} rows is not {epochs} epochs of one schedule")
    measured = []
    for k in range(1, epochs):
        zero = max(r.end for r in rows[: k * size])  # where `tgpipe run` put the epoch
        part = rows[k * size : (k + 1) * size]
        measured.append(
            Trace([r._replace(start=r.start - zero, end=r.end - zero) for r in part], trace.meta)
        )
    measured.sort(key=lambda t: metrics(t).period)
    return measured[(len(measured) - 1) // 2]


def validate(
    schedules: list[Schedule],
    profile: CostProfile,
    data: list[str],
    alone: CostProfile | None = None,
) -> tuple[list[Fidelity], list[Trace]]:
    """Simulate and run each schedule; the fidelity rows and the traces (simulated and
    measured, in pairs). `alone`, if given, is the profile of one rank computing alone, for
    the schedules on one rank: a rank alone on the machine computes faster than beside
    others, which share its cores' caches and memory bandwidth."""
    rows, traces = [], []
    with tempfile.TemporaryDirectory() as tmp, Progress(len(schedules), "validate", "run") as bar:
        for schedule in schedules:
            profile_here = alone if alone is not None and schedule.n_ranks == 1 else profile
            simulated = simulate(schedule, profile_here)
            measured = run_schedule(schedule, Path(tmp), data)
            replayed = simulate(schedule, profile_here, costs=measured_costs(measured))
            p, m = metrics(simulated), metrics(measured)
            rows.append(
                Fidelity(
                    schedule.name,
                    schedule.n_ranks,
                    tuple(schedule.semantics),
                    p.period,
                    m.period,
                    p.bubble,
                    m.bubble,
                    metrics(replayed).period,
                )
            )
            traces += [simulated, measured]
            bar.update(note=schedule.name)
    return rows, traces


# ---- command line ---------------------------------------------------------------------------
FAMILY_NAMES = ("sequential", "data_parallel", "mspipe", "pipetgl")


def _main(args) -> None:
    from tgpipe.dag.profile import load_profile
    from tgpipe.simulator.cli import pct, print_table

    n = training_batches(args.data, args.batch_size, args.limit_events)
    data = data_args(args.data, args.batch_size, args.limit_events)
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    family_schedules(names, load_profile("gpu-illustrative"), 1, 1)  # unknown names: one line
    alone = None
    if args.profile:
        profile = load_profile(args.profile)
    else:
        repeat = args.repeat or max(30, n)
        print(f"profiling this machine on {args.nproc} rank(s)...", file=sys.stderr)
        profile = measure_profile(data, args.nproc, repeat)
        if "sequential" in names and args.nproc > 1:
            print("profiling one rank alone, for sequential...", file=sys.stderr)
            alone = measure_profile(data, 1, repeat)
    schedules = family_schedules(names, profile, args.nproc, n)
    rows, traces = validate(schedules, profile, data, alone)
    print(f"{n} batches of {args.batch_size} events, profile {profile.name} ({profile.device})")
    print_table(
        [
            [
                f.name,
                str(f.ranks),
                "(" + ",".join(map(str, f.semantics)) + ")",
                f"{f.predicted * 1e3:.2f}",
                f"{f.measured * 1e3:.2f}",
                f"{f.error * 100:+.1f}",
                f"{f.replayed * 1e3:.2f}",
                f"{f.replay_error * 100:+.1f}",
                pct(f.predicted_bubble),
                pct(f.measured_bubble),
            ]
            for f in rows
        ],
        [
            "schedule",
            "ranks",
            "(s_mem,s_w,g)",
            "predicted ms",
            "measured ms",
            "error %",
            "replay ms",
            "replay err %",
            "sim bubble %",
            "run bubble %",
        ],
    )
    print("replay: each run simulated again with its own measured op costs (the model's error)")
    if args.gantt:
        from tgpipe.gantt import write_gantt

        write_gantt(traces, args.gantt, title="simulated and measured, on one time axis")
        print(f"wrote Gantt chart {args.gantt}")


def register(sub) -> None:
    from tgpipe.cli import add_data_args, output_file, positive_int

    p = sub.add_parser(
        "validate",
        help="simulate and run each family here; predicted vs measured period per batch",
        description="Profile this machine, then for each family: simulate it from that "
        "profile, run the same schedule for real on local ranks (four epochs; the last "
        "three are measured, and the one of median period counts), and print the "
        "predicted and measured period per batch with the error, and one Gantt chart with "
        "the simulated and measured traces on one time axis.",
    )
    add_data_args(p)
    p.add_argument("--nproc", type=positive_int, default=2, help="ranks (default: %(default)s)")
    p.add_argument(
        "--families",
        default=",".join(FAMILY_NAMES),
        help="comma-separated families (default: %(default)s)",
    )
    p.add_argument("--profile", metavar="FILE", help="use this profile instead of measuring one")
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=None,
        help="batches each rank times per op when profiling (default: every training "
        "batch once, at least 30)",
    )
    p.add_argument("--gantt", type=output_file, metavar="FILE.html", help="Gantt chart")
    p.set_defaults(func=_main)
