"""Subcommand `tgpipe search`: the best schedule for a profile, a machine and a budget."""

from __future__ import annotations

import argparse

from tgpipe.cli import add_profile_arg, add_workload_args, output_file, percent, positive_int
from tgpipe.errors import InputError
from tgpipe.files import atomic_write_all
from tgpipe.progress import Progress
from tgpipe.schedules.search import MARGIN, Evaluated, search
from tgpipe.simulator.cli import pct, print_table
from tgpipe.simulator.sim import simulate

__all__ = ["register"]


def _row(label: str, r: Evaluated) -> list[str]:
    s = r.schedule.semantics
    return [
        label,
        r.schedule.name,
        str(r.schedule.n_ranks),
        f"{r.period * 1e3:.3f}",
        f"{r.throughput:,.0f}",
        pct(r.bubble),
        f"{r.bound * 1e3:.3f}",
        pct(r.gap),
        f"({s.s_mem},{s.s_w},{s.g})",
    ]


HEADER = [
    "",
    "schedule",
    "GPUs",
    "period ms",
    "events/s",
    "bubble %",
    "bound ms",
    "gap %",
    "(s_mem,s_w,g)",
]


def _search(args: argparse.Namespace) -> None:
    from tgpipe.schedules.snapshot_cli import profile_for, search_main

    if args.workload == "snapshot":
        search_main(args)
        return
    if args.data or args.groups:
        raise InputError("--data and --groups are for --workload snapshot")
    profile = profile_for(args)
    shape = f"{args.machines} machine(s) x {args.gpus} GPU(s)"
    with Progress(None, f"searching {shape}", "candidates") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.done)

        result = search(
            profile,
            gpus_per_machine=args.gpus,
            machines=args.machines,
            max_memory_staleness=args.max_memory_staleness,
            max_weight_staleness=args.max_weight_staleness,
            n_batches=args.batches,
            seed=args.seed,
            margin=args.margin,
            on_progress=progress,
        )
    budget_w = "W-1" if args.max_weight_staleness is None else args.max_weight_staleness
    print(
        f"profile {profile.name} ({profile.source}); {shape}; budget: memory staleness "
        f"<= {args.max_memory_staleness}, weight staleness <= {budget_w}"
    )
    print(
        f"{len(result.evaluated)} candidates simulated, {result.pruned} skipped by their "
        f"lower bound, in {result.seconds:.1f} s\n"
    )
    print("Pareto front: throughput against staleness (window runs)")
    print_table([_row("", r)[1:] for r in result.pareto], HEADER[1:])
    print(f"\nbest, re-checked on {args.batches} batches")
    print_table([_row("found", result.best), _row("best family", result.best_family)], HEADER)
    speedup = result.best_family.period / result.best.period
    print(f"\nthe found schedule runs {speedup:.3f}x the best published family")
    if result.passed_over:
        fastest, chosen = result.passed_over
        print(
            f"{fastest.schedule.name} ran {chosen.period / fastest.period - 1:.1%} faster than "
            f"{chosen.schedule.name} in the window runs, within the {args.margin * 100:g} % "
            "margin: the search prefers less staleness, then fewer ranks, then a hand-written "
            "family (--margin 0 answers the fastest)"
        )
    outputs = []
    if args.out:
        outputs.append((args.out, result.best.schedule.dumps()))
    if args.gantt:
        traces = [simulate(r.schedule, profile) for r in (result.best, result.best_family)]
        from tgpipe.gantt import gantt_figure, gantt_html  # plotly: only when drawing

        outputs.append((args.gantt, gantt_html(gantt_figure(traces))))
    atomic_write_all(outputs)
    if args.out:
        print(f"wrote schedule {args.out} (run it with: tgpipe simulate --schedule {args.out})")
    if args.gantt:
        print(f"wrote Gantt chart {args.gantt}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search the schedule with the fewest bubbles within a staleness budget",
        description="Search schedules (ranks, semantics within the staleness budget, memory "
        "backend, lane orders, and the hand-written families) on the SimPy simulator for one "
        "cost profile and machine shape; print the Pareto front of throughput against "
        "staleness and the best schedule beside the best published family. With --workload "
        "snapshot: every snapshot family and BLAD choice (group sizes from --groups, "
        "assignment by cost or count, one or two workers per GPU, operator pairing) for a "
        "snapshot epoch, shortest first.",
    )
    add_profile_arg(p, default=None)
    p.add_argument(
        "--gpus", type=positive_int, default=8, help="GPUs per machine (default: %(default)s)"
    )
    p.add_argument(
        "--machines", type=positive_int, default=1, help="machines (default: %(default)s)"
    )
    p.add_argument(
        "--max-memory-staleness",
        type=int,
        default=0,
        metavar="S",
        help="largest memory staleness allowed, in groups (default: 0, exact)",
    )
    p.add_argument(
        "--max-weight-staleness",
        type=int,
        default=None,
        metavar="S",
        help="largest weight staleness allowed, in steps (default: W-1 on W ranks, "
        "as the PipeTGL ring)",
    )
    p.add_argument(
        "--batches",
        type=positive_int,
        default=1121,
        help="batches of the full run that re-checks the answer "
        "(default: %(default)s, one REDDIT epoch)",
    )
    p.add_argument(
        "--margin",
        type=percent,
        default=MARGIN,
        metavar="PCT",
        help="how much faster, as predicted, a schedule must be to be the answer over a less "
        "stale one (then one on fewer ranks, then a hand-written family), in %% "
        f"(default: {MARGIN * 100:g}; 0: the fastest)",
    )
    p.add_argument("--seed", type=int, default=0, help="breaks ties (default: %(default)s)")
    p.add_argument(
        "-o", "--out", type=output_file, metavar="FILE", help="save the best schedule (text)"
    )
    p.add_argument(
        "--gantt",
        type=output_file,
        metavar="FILE.html",
        help="Gantt chart of the best schedule beside the best family",
    )
    add_workload_args(p, data=True)
    p.add_argument(
        "--groups",
        metavar="G,G,...",
        help="--workload snapshot: group sizes the search may choose (default: --group)",
    )
    p.set_defaults(func=_search)
