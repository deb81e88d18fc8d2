"""Subcommand `tgpipe simulate`: run schedules on a profile and compare them."""

from __future__ import annotations

import argparse
from pathlib import Path

from tgpipe.cli import (
    add_machine_args,
    add_profile_arg,
    add_workload_args,
    nonnegative_int,
    output_file,
    positive_int,
)
from tgpipe.dag.bounds import MEMORY_BACKENDS
from tgpipe.dag.profile import CostProfile
from tgpipe.errors import InputError
from tgpipe.files import atomic_write_all
from tgpipe.metrics import metrics
from tgpipe.schedules.families import FAMILIES, family
from tgpipe.schedules.ir import Schedule
from tgpipe.simulator.sim import simulate
from tgpipe.trace import Trace

__all__ = ["register", "schedule_from_arg"]


def schedule_from_arg(text: str, profile: CostProfile, args: argparse.Namespace) -> Schedule:
    """A family name (options from the command line) or a schedule file."""
    path = Path(text)
    if path.is_file():
        return Schedule.load(path)
    if text.partition("/")[0] not in FAMILIES and (path.suffix or "/" in text):
        what = f"{text} is a folder, not a schedule file" if path.is_dir() else f"no file {text}"
        raise InputError(
            f"{what}; give a schedule file (saved by --save-schedule or 'tgpipe search -o') "
            f"or a family ({', '.join(FAMILIES)})"
        )
    options = {"gpus_per_machine": args.gpus_per_machine}
    if args.memory and text == "pipetgl":
        options["memory"] = args.memory
    if args.prefetch is not None:
        options["prefetch"] = args.prefetch
    if text.startswith("mspipe"):
        options["k"] = args.mspipe_k
    if text == "sequential":
        return family(text, profile, 1, args.batches, **options)
    return family(text, profile, args.gpus, args.batches, **options)


def pct(x: float) -> str:
    return f"{round(x * 100, 1) + 0.0:.1f}"  # + 0.0: no "-0.0" for float dust


def _row(trace: Trace, schedule: Schedule) -> list[str]:
    m = metrics(trace)
    s = schedule.semantics
    return [
        schedule.name,
        str(schedule.n_ranks),
        f"{m.period * 1e3:.3f}",
        f"{m.throughput:,.0f}",
        pct(m.bubble),
        f"{trace.meta['bound'] * 1e3:.3f}",
        pct(m.gap),
        f"({s.s_mem},{s.s_w},{s.g})",
        f"{m.makespan:.3f}",
    ]


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                c.ljust(w) if k == 0 else c.rjust(w)
                for k, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


HEADER = [
    "schedule",
    "GPUs",
    "period ms",
    "events/s",
    "bubble %",
    "bound ms",
    "gap %",
    "(s_mem,s_w,g)",
    "makespan s",
]


def _simulate(args: argparse.Namespace) -> None:
    from tgpipe.schedules.snapshot_cli import profile_for, simulate_main

    if args.workload == "snapshot":
        simulate_main(args)
        return
    if args.data:
        raise InputError("--data is for --workload snapshot; M-TGNN schedules take --batches")
    args.schedule = args.schedule or "pipetgl"
    profile = profile_for(args)
    names = [args.schedule] + [n for n in (args.compare or "").split(",") if n]
    schedules = [schedule_from_arg(name.strip(), profile, args) for name in names]
    results = []
    for schedule in schedules:
        trace = simulate(schedule, profile)
        results.append((schedule, trace, _row(trace, schedule)))
    print(
        f"profile {profile.name} ({profile.source}), {args.batches} batches of "
        f"{profile.batch_size} events"
    )
    print_table([r for _, _, r in results], HEADER)
    outputs = []  # written at the end, all or none: a failed run leaves no file behind
    if args.trace:
        outputs.append((args.trace, results[0][1].dumps(), "trace"))
    if args.gantt:
        from tgpipe.gantt import gantt_figure, gantt_html  # plotly: only when drawing

        html = gantt_html(gantt_figure([trace for _, trace, _ in results]))
        outputs.append((args.gantt, html, "Gantt chart"))
    if args.save_schedule:
        outputs.append((args.save_schedule, schedules[0].dumps(), "schedule"))
    atomic_write_all([(path, text) for path, text, _ in outputs])
    for path, _, what in outputs:
        print(f"wrote {what} {path}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate schedules on a cost profile and compare them",
        description="Simulate a schedule (a family or a schedule file) on the machine that a "
        "cost profile describes; print period, throughput, GPU bubbles and the gap to the lower "
        "bound, side by side with the schedules given to --compare. With --workload snapshot: "
        "snapshot epochs (families blad, snapshot_partition, vertex_partition; default blad "
        "beside the other two), each epoch's time, GPU idle time and gap to the bound.",
    )
    add_profile_arg(p, default=None)
    p.add_argument(
        "--schedule",
        default=None,
        metavar="FAMILY|FILE",
        help=f"a family ({', '.join(FAMILIES)}, pipetgl/rows; with --workload snapshot: "
        "blad, snapshot_partition, vertex_partition) or a schedule file (default: pipetgl; "
        "blad beside the other two snapshot families)",
    )
    p.add_argument(
        "--compare",
        metavar="A,B,...",
        help="more schedules (families or files) to simulate beside it",
    )
    add_machine_args(p)
    p.add_argument(
        "--batches",
        type=positive_int,
        default=300,
        help="batches to simulate (default: %(default)s)",
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_BACKENDS,
        default=None,
        help="pipetgl's memory backend (default: host)",
    )
    p.add_argument(
        "--prefetch",
        type=nonnegative_int,
        default=None,
        help="batches of SAMPLE/FEAT run ahead (default: each family's own)",
    )
    p.add_argument(
        "--mspipe-k",
        type=positive_int,
        default=2,
        metavar="K",
        help="mspipe's staleness bound (default: %(default)s)",
    )
    p.add_argument(
        "--gantt",
        type=output_file,
        metavar="FILE.html",
        help="write one Gantt chart of every simulated schedule (offline HTML)",
    )
    p.add_argument(
        "--trace", type=output_file, metavar="FILE", help="save the first schedule's trace (JSON)"
    )
    p.add_argument(
        "--save-schedule",
        type=output_file,
        metavar="FILE",
        help="save the first schedule in the editable text format",
    )
    add_workload_args(p, data=True)
    p.set_defaults(func=_simulate)
