"""Subcommand `tgpipe demo`: the whole story on a built-in default, with no download.

1. profile this machine (`tgpipe profile`, on the synthetic data set, all ranks at once);
2. search the schedules for this machine, and for 2, 4 and 8 GPUs of the built-in
   ``gpu-illustrative`` profile;
3. simulate and run (four epochs, the median of the last three measured; local gloo ranks)
   every family and the found schedule here;
4. print the summary (predicted and measured period, error, bubbles, semantics) and write
   one Gantt chart with every schedule's simulated and measured trace on one time axis.

It is the first command of the README: it must stay under two minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

__all__ = ["register"]

SHAPES = (2, 4, 8)


def _say(text: str) -> None:
    print(text, flush=True)


def _main(args: argparse.Namespace) -> None:
    from tgpipe.dag.profile import load_profile
    from tgpipe.executor.validate import (
        FAMILY_NAMES,
        data_args,
        family_schedules,
        measure_profile,
        training_batches,
        validate,
    )
    from tgpipe.gantt import write_gantt
    from tgpipe.schedules.search import search
    from tgpipe.simulator.cli import pct, print_table

    began = time.perf_counter()
    n = training_batches(args.data, args.batch_size, None)
    data = data_args(args.data, args.batch_size, None)
    W = args.nproc
    _say(f"[1/4] profiling this machine: {args.data}, {W} rank(s) computing at once")
    repeat = args.repeat or max(30, n)
    here = measure_profile(data, W, repeat)
    alone = measure_profile(data, 1, repeat) if W > 1 else None  # sequential runs alone
    per_batch = sum(here.cost(op) for op in here.ops) * 1e3
    _say(f"      {here.device}: one batch's ops take {per_batch:.1f} ms on one rank")

    _say(f"[2/4] searching schedules for this machine ({W} ranks) and for GPUs")
    found = search(here, gpus_per_machine=W, n_batches=n)
    _say(f"      here: {found.best.schedule.name}, {found.best.period * 1e3:.2f} ms per batch")
    gpu = load_profile("gpu-illustrative")
    shapes = []
    for gpus in SHAPES:
        r = search(gpu, gpus_per_machine=gpus)
        speedup = r.best_family.period / r.best.period
        shapes.append(
            [
                f"{gpus} GPUs",
                r.best.schedule.name,
                f"{r.best.period * 1e3:.3f}",
                pct(r.best.bubble),
                pct(r.best.gap),
                r.best_family.schedule.name,
                f"{speedup:.2f}x",
            ]
        )
    print_table(
        shapes,
        ["gpu-illustrative", "found", "period ms", "bubble %", "gap %", "best family", "vs it"],
    )

    schedules = family_schedules(FAMILY_NAMES, here, W, n)
    schedules.append(found.best.schedule)
    _say(f"[3/4] simulating and running {len(schedules)} schedules here, four epochs each")
    rows, traces = validate(schedules, here, data, alone)

    _say(f"[4/4] summary: {n} batches of {args.batch_size} events on this machine")
    table = [
        [
            ("found: " if k == len(rows) - 1 else "") + f.name,
            str(f.ranks),
            f"{f.predicted * 1e3:.2f}",
            f"{f.measured * 1e3:.2f}",
            f"{f.error * 100:+.1f}",
            "" if f.replay_error is None else f"{f.replay_error * 100:+.1f}",
            pct(f.predicted_bubble),
            pct(f.measured_bubble),
            "(" + ",".join(map(str, f.semantics)) + ")",
        ]
        for k, f in enumerate(rows)
    ]
    print_table(
        table,
        [
            "schedule",
            "ranks",
            "predicted ms",
            "measured ms",
            "error %",
            "replay err %",
            "sim bubble %",
            "run bubble %",
            "(s_mem,s_w,g)",
        ],
    )
    for line in _verdict(rows, schedules):
        _say("      " + line)
    write_gantt(traces, args.gantt, title="tgpipe demo: simulated and measured on this machine")
    _say(f"wrote {args.gantt} ({time.perf_counter() - began:.0f} s in all)")


def _verdict(rows, schedules) -> list[str]:
    """Whether the found schedule (the last row) ran at least as fast as every family. When
    it is a family's own schedule, that schedule ran twice: both runs are shown, how far
    apart they landed (the noise of one run here) and how they compare with the others."""
    found = rows[-1]
    families = list(zip(rows[:-1], schedules[:-1], strict=True))
    twins = [r for r, s in families if _same(s, schedules[-1])]
    others = [r for r, s in families if not _same(s, schedules[-1])]
    fastest = min(others, key=lambda f: f.measured) if others else None
    lines = []
    if twins:
        a, b = twins[0].measured * 1e3, found.measured * 1e3
        lines.append(
            f"the found schedule is {twins[0].name} itself, so it ran twice: {a:.2f} and "
            f"{b:.2f} ms per batch, {abs(b / a - 1) * 100:.1f} % apart (the noise of one run "
            "on this machine)"
        )
        if fastest:
            n = sum(run <= fastest.measured for run in (twins[0].measured, found.measured))
            runs = ("neither run was", "one of its two runs was", "both runs were")[n]
            lines.append(
                f"{runs} at least as fast as every other family (the fastest, {fastest.name}: "
                f"{fastest.measured * 1e3:.2f} ms)"
            )
    else:
        verdict = (
            "at least as fast as every family"
            if found.measured <= fastest.measured
            else f"slower than the fastest family, {fastest.name}"
        )
        lines.append(
            f"measured here, the found schedule ran {verdict}: {found.measured * 1e3:.2f} ms "
            f"per batch against {fastest.measured * 1e3:.2f} ms"
        )
    from tgpipe.schedules.search import MARGIN

    lines.append(
        f"the search ranks schedules by their predictions (a lead under {MARGIN:.0%} does not "
        "count): 'error %' is the prediction's from the profile, 'replay err %' the "
        "simulator's with the run's own op costs; the rest is the profile's"
    )
    return lines


def _same(a, b) -> bool:
    """Whether two schedules place the same actions in the same order (names aside)."""
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


def register(sub: argparse._SubParsersAction) -> None:
    from tgpipe.cli import add_data_args, output_file, positive_int

    p = sub.add_parser(
        "demo",
        help="profile this machine, search, simulate and run the schedules, print a summary",
        description=sys.modules[__name__].__doc__.split("\n\n")[1],
    )
    add_data_args(p, limit=False)
    p.add_argument("--nproc", type=positive_int, default=2, help="ranks (default: %(default)s)")
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=20,
        help="batches each rank times per op when profiling (default: %(default)s)",
    )
    p.add_argument(
        "--gantt",
        type=output_file,
        default="gantt.html",
        metavar="FILE.html",
        help="the Gantt chart (default: %(default)s)",
    )
    p.set_defaults(func=_main)
