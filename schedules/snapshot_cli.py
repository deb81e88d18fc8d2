"""`tgpipe simulate` and `tgpipe search` with ``--workload snapshot``: snapshot epochs.

The same commands as for M-TGNN schedules, on a snapshot sequence (a data file cut into
snapshots, or the synthetic skewed sequence): `simulate` runs families or schedule files on a
snapshot profile and prints each epoch's time, GPU bubbles and gap to the bound;
`search` simulates every family and BLAD choice (`tgpipe.schedules.snapshot.snapshot_search`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tgpipe.dag.profile import CostProfile, load_profile
from tgpipe.dag.snapshot import SnapshotWorkload
from tgpipe.errors import InputError
from tgpipe.files import atomic_write_all
from tgpipe.metrics import gpu_idle
from tgpipe.schedules.ir import Schedule
from tgpipe.schedules.snapshot import SNAPSHOT_FAMILIES, snapshot_family, snapshot_search
from tgpipe.simulator.sim import simulate
from tgpipe.trace import Trace

__all__ = ["profile_for", "search_main", "simulate_main", "snapshot_inputs"]

DEFAULT_PROFILE = {"mtgnn": "gpu-illustrative", "snapshot": "snapshot-gpu-illustrative"}


def profile_for(args: argparse.Namespace) -> CostProfile:
    """--profile, or the workload's built-in profile; one of the wrong workload is refused."""
    profile = load_profile(args.profile or DEFAULT_PROFILE[args.workload])
    if profile.workload != args.workload:
        raise InputError(
            f"profile {profile.name!r} is for the {profile.workload} workload, not "
            f"{args.workload}: give a {args.workload} profile "
            f"(e.g. {DEFAULT_PROFILE[args.workload]})"
        )
    return profile


#: Options of simulate and search that only M-TGNN schedules read.
_MTGNN_ONLY = (
    "batches",
    "memory",
    "prefetch",
    "mspipe_k",
    "gpus_per_machine",
    "machines",
    "max_memory_staleness",
    "max_weight_staleness",
)


def _refuse_mtgnn_options(args: argparse.Namespace) -> None:
    """One line for an M-TGNN option given with --workload snapshot (rather than ignore it)."""
    from tgpipe.cli import build_parser

    defaults = build_parser().parse_args([args.command])
    for name in _MTGNN_ONLY:
        if getattr(args, name, None) != getattr(defaults, name, None):
            raise InputError(
                f"--{name.replace('_', '-')} is for --workload mtgnn; a snapshot epoch is set by "
                "--data, --period and --group: leave it out"
            )


def snapshot_inputs(args: argparse.Namespace) -> tuple[CostProfile, SnapshotWorkload, str]:
    """The profile, the training epoch of the snapshot data, and a line that names them."""
    _refuse_mtgnn_options(args)
    from tgpipe.executor.snapshot_model import snapshot_workload
    from tgpipe.executor.snapshots import check_length, load_sequence

    profile = profile_for(args)
    data = args.data or "skewed:32"
    seq = load_sequence(data, args.period)
    check_length(seq)
    workload = snapshot_workload(seq, args.group)
    edges = sorted(e for _, e in workload.sizes)
    what = (
        f"profile {profile.name} ({profile.source}); {data}: {workload.n_positions} training "
        f"snapshots, {edges[0]:,}-{edges[-1]:,} edges (median {edges[len(edges) // 2]:,}), "
        f"groups of {workload.group}"
    )
    return profile, workload, what


def _schedule(text: str, profile, workload, args) -> Schedule:
    path = Path(text)
    if path.is_file():
        schedule = Schedule.load(path)
        if schedule.workload is None:
            raise InputError(f"{text} is an M-TGNN schedule; drop --workload snapshot")
        if schedule.workload.sizes != workload.sizes:
            raise InputError(
                f"{text} is a schedule for other snapshots ({schedule.workload.n_positions} "
                f"positions) than the data's ({workload.n_positions}): make it for this data"
            )
        return schedule
    if text not in SNAPSHOT_FAMILIES:
        raise InputError(
            f"no file {text}; give a snapshot schedule file or a family "
            f"({', '.join(SNAPSHOT_FAMILIES)})"
        )
    return snapshot_family(text, profile, workload, args.gpus)


def epoch_row(trace: Trace, schedule: Schedule) -> list[str]:
    """schedule, GPUs, epoch ms, GPU idle %, bound ms, gap %, group, GCN orders."""
    from tgpipe.simulator.cli import pct

    w = schedule.workload
    end = max(r.end for r in trace.rows)
    idle = gpu_idle(trace)
    bound = trace.meta["bound_epoch"]  # the simulator's snapshot_bound
    orders = "/".join(dict.fromkeys(w.orders))
    return [
        schedule.name,
        str(schedule.n_ranks),
        f"{end * 1e3:.3f}",
        pct(idle),
        f"{bound * 1e3:.3f}",
        pct(end / bound - 1),
        str(w.group),
        orders,
    ]


EPOCH_HEADER = ["schedule", "GPUs", "epoch ms", "GPU idle %", "bound ms", "gap %", "group", "GCN"]


def simulate_main(args: argparse.Namespace) -> None:
    from tgpipe.simulator.cli import print_table

    profile, workload, what = snapshot_inputs(args)
    names = [args.schedule or "blad"]
    compare = args.compare
    if compare is None and args.schedule is None:
        compare = "snapshot_partition,vertex_partition"
    names += [n.strip() for n in (compare or "").split(",")]
    schedules = [_schedule(n, profile, workload, args) for n in names if n]
    traces = [simulate(s, profile) for s in schedules]
    print(what)
    print_table([epoch_row(t, s) for t, s in zip(traces, schedules, strict=True)], EPOCH_HEADER)
    _write(args, traces, schedules[0])


def _write(args, traces: list[Trace], first: Schedule) -> None:
    outputs = []
    if getattr(args, "trace", None):
        outputs.append((args.trace, traces[0].dumps(), "trace"))
    if args.gantt:
        from tgpipe.gantt import gantt_figure, gantt_html

        outputs.append((args.gantt, gantt_html(gantt_figure(traces)), "Gantt chart"))
    out = getattr(args, "save_schedule", None) or getattr(args, "out", None)
    if out:
        outputs.append((out, first.dumps(), "schedule"))
    atomic_write_all([(path, text) for path, text, _ in outputs])
    for path, _, kind in outputs:
        print(f"wrote {kind} {path}")


def search_main(args: argparse.Namespace) -> None:
    from tgpipe.simulator.cli import print_table

    profile, workload, what = snapshot_inputs(args)
    groups = _groups(args.groups, workload)
    found = snapshot_search(profile, workload, args.gpus, groups, progress=True)
    traces = {id(c): c.trace for c in found}
    print(what)
    sizes = ", ".join(map(str, groups))
    print(f"{len(found)} candidates on {args.gpus} GPU(s), group sizes {sizes}")
    print_table([epoch_row(traces[id(c)], c.schedule) for c in found], EPOCH_HEADER)
    best = found[0]
    partition = min(
        (c for c in found if c.schedule.name.startswith("snapshot_partition")),
        key=lambda c: c.epoch,
    )
    print(
        f"\nbest: {best.schedule.name}, groups of {best.schedule.workload.group}: "
        f"{partition.epoch / best.epoch:.2f}x the best snapshot partition"
        + (
            " (tgpipe run does not run a vertex partition yet)"
            if best.schedule.workload.parts > 1
            else ""
        )
    )
    _write(args, [traces[id(best)], traces[id(partition)]], best.schedule)


def _groups(text: str | None, workload: SnapshotWorkload) -> list[int]:
    if not text:
        return [workload.group]
    try:
        groups = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        groups = []
    if not groups or min(groups) < 1:
        raise InputError(f"--groups must list group sizes >= 1, like 2,4,8; got {text!r}")
    return groups
