"""Fidelity of the simulator on this machine: each family's predicted period per batch
beside the period the same schedule measures when it trains for real, side by side.

    python bench/bench_fidelity.py                       # wikipedia, first 30,000 events
    python bench/bench_fidelity.py --limit-events 0      # all of it
    python bench/bench_fidelity.py --rounds 1            # one round: a third of the time

It is what `tgpipe validate` does (profile this machine with all ranks computing, simulate
each family from that profile, run the same schedule file on local gloo ranks), with the
verdict: the largest error, and whether every row is within 10 %. Two more columns split
the error: the *replay* simulates each run again with its own measured op costs (the model's
error alone). The machine's speed drifts (by 10-20 % within a minute while it is shared), so
each family is predicted from a profile of its ranks (sequential: one rank alone) taken just
before its run, and another profile just after it gives the *drift* across the run (the sum
of the op costs, after over before): error that no model of the schedule can know about.
The *bracketed* error predicts from the midpoint of the two profiles (each time their
mean): the machine as it was, on average, during the run, so that a steady drift does not
count against the model. A second table says where the error comes from, op by op: each
op's median cost in the run (as the replay takes it) over the profile's.

A burst of other work on the machine can make one profile, or one run, 10-20 % slower than
the next. So the bench repeats the whole (profile, run, profile) for every family
`--rounds` times, the families taking turns, and reports each family's medians beside the
error of every round. Last in each round comes the schedule that `tgpipe search` finds for
the ranks from the profile before it (``found``), as `tgpipe demo` runs it: what the tool
recommends is predicted as well as the families, and its measured period is set beside the
fastest family's (is it at least as fast?).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict
from pathlib import Path

from tgpipe.dag.ops import OPS
from tgpipe.dag.profile import CostProfile, Link
from tgpipe.executor.validate import (
    FAMILY_NAMES,
    data_args,
    family_schedules,
    measure_profile,
    measured_costs,
    training_batches,
    validate,
)
from tgpipe.metrics import metrics
from tgpipe.schedules.search import search
from tgpipe.simulator.sim import simulate

#: The row of the schedule that the search finds, round by round.
FOUND = "found"
#: The op table's last line: a batch's ops together.
ALL_OPS = "all ops"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_slice_args(p)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="profile-and-run pairs per family")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    n, data = slice_of(args)
    repeat = max(30, n)  # every training batch, for its scale
    #: family -> one entry per round
    rows, drift, bracketed = defaultdict(list), defaultdict(list), defaultdict(list)
    op_costs = defaultdict(list)
    found_names = []  # the found schedule of each round
    for _ in range(args.rounds):
        for name in (*FAMILY_NAMES, FOUND):  # each from a profile taken just before its run
            ranks = 1 if name == "sequential" else args.nproc
            before = measure_profile(data, ranks, repeat)
            if name == FOUND:
                schedules = [search(before, gpus_per_machine=args.nproc, n_batches=n).best.schedule]
                found_names.append(schedules[0].name)
            else:
                schedules = family_schedules([name], before, args.nproc, n)
            (found,), (_, measured) = validate(schedules, before, data)
            rows[name].append(found)
            op_costs[name].append(_op_costs(measured, before))
            after = measure_profile(data, ranks, repeat)
            drift[name].append(_total(after) / _total(before) - 1)
            middle = metrics(simulate(schedules[0], _midpoint(before, after))).period
            bracketed[name].append(middle / found.measured - 1)
    print(
        f"{n} batches of {args.batch_size} events, {before.device}, {args.nproc} ranks; "
        f"medians of {args.rounds} rounds (each: profile, run, profile), every round's error"
    )
    head = ("schedule", "predicted ms", "measured ms", "error %", "replay err %", "drift %")
    print(f"{head[0]:<18}" + "".join(f"{h:>14}" for h in head[1:]) + "  bracketed err %  rounds")
    med = statistics.median
    for name, found in rows.items():
        cells = (
            med(f.predicted for f in found) * 1e3,
            med(f.measured for f in found) * 1e3,
            med(f.error for f in found) * 100,
            med(f.replay_error for f in found) * 100,
            med(drift[name]) * 100,
            med(bracketed[name]) * 100,
        )
        each = " ".join(f"{f.error * 100:+.1f}" for f in found)
        print(
            f"{_label(name, found):<18}{cells[0]:>14.2f}{cells[1]:>14.2f}{cells[2]:>+14.1f}"
            f"{cells[3]:>+14.1f}{cells[4]:>+14.1f}{cells[5]:>+17.1f}  {each}"
        )
    print(f"found, round by round: {', '.join(found_names)}")
    print("\nop cost in the run over the profile taken before it, % (median over batches, rounds)")
    print(f"{'op':<12}" + "".join(f"{_label(n, f):>18}" for n, f in rows.items()))
    for op in (*OPS, ALL_OPS):
        cells = [[c[op] for c in op_costs[name] if op in c] for name in rows]
        if any(cells):
            text = [f"{med(c) * 100:+.1f}" if c else "-" for c in cells]
            print(f"{op:<12}" + "".join(f"{t:>18}" for t in text))
    errors = {
        "error": {name: med(f.error for f in found) for name, found in rows.items()},
        "bracketed error": {name: med(b) for name, b in bracketed.items()},
        "replay error": {name: med(f.replay_error for f in found) for name, found in rows.items()},
    }
    families = [n for n in rows if n != FOUND]
    fastest = min(families, key=lambda n: med(f.measured for f in rows[n]))
    ratio = med(f.measured for f in rows[FOUND]) / med(f.measured for f in rows[fastest])
    each = [  # round by round: over the family that measured fastest in that round
        f.measured / min(rows[n][k].measured for n in families) for k, f in enumerate(rows[FOUND])
    ]
    print(
        f"found's median measured period over the fastest family's "
        f"({_label(fastest, rows[fastest])}): {ratio:.3f}; round by round, over that round's "
        f"fastest: {' '.join(f'{r:.3f}' for r in each)}"
    )
    for what, values in errors.items():
        worst = max(values, key=lambda name: abs(values[name]))
        verdict = "within" if abs(values[worst]) <= 0.10 else "NOT within"
        print(
            f"largest |median {what}|: {abs(values[worst]) * 100:.1f} % "
            f"({_label(worst, rows[worst])}); "
            f"every row {verdict} 10 %"
        )


def add_slice_args(p: argparse.ArgumentParser) -> None:
    """The data options of the benches that run schedules against their predictions."""
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--limit-events", type=int, default=30000, help="0: all of it")
    p.add_argument("--batch-size", type=int, default=600)


def slice_of(args: argparse.Namespace) -> tuple[int, list[str]]:
    """The training batches of `add_slice_args`'s options, and the options that give every
    profile and run those batches."""
    limit = args.limit_events or None
    return (
        training_batches(args.data, args.batch_size, limit),
        data_args(args.data, args.batch_size, limit),
    )


def _label(name: str, found: list) -> str:
    """A row's name: the family's schedule, or ``found`` (its schedules are listed apart)."""
    return FOUND if name == FOUND else found[0].name


def _op_costs(measured, profile: CostProfile) -> dict[str, float]:
    """Each op's median cost in a measured run over the profile's (`CostProfile.cost`: the
    simulator adds what runs beside it on the core), minus one, and the same of their sum
    (`ALL_OPS`: how much slower a batch's ops ran than profiled). GRAD_SYNC's is the
    all-reduce from its last member's arrival (`measured_costs`) over the profile's
    all-reduce on the group's ranks."""
    group = measured.meta["semantics"][2]
    by_op = defaultdict(list)
    for act, seconds in measured_costs(measured).items():
        by_op[act.op].append(seconds)
    run = {op: statistics.median(s) for op, s in by_op.items()}
    charged = {op: profile.cost(op, group) for op in run}
    costs = {op: run[op] / charged[op] - 1 for op in run}
    costs[ALL_OPS] = sum(run.values()) / sum(charged.values()) - 1
    return costs


def _total(profile) -> float:
    """Seconds of one batch's ops, all-reduce aside: the machine's speed in one number."""
    return sum(c.median for op, c in profile.ops.items() if op != "GRAD_SYNC")


def _midpoint(before: CostProfile, after: CostProfile) -> CostProfile:
    """The machine halfway through a run: each time the mean of the two profiles' (an op's
    median, a batch's scale, the jitter, the all-reduce and its cost to an op beside it, a
    hand-off's cost to its cores, a copy's and a message's seconds per byte)."""

    def rate(a: float, b: float) -> float:  # bytes/s: the mean of seconds per byte
        return 2 / (1 / a + 1 / b) if a and b else 0.0

    def mean(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:  # ranks -> s
        return {k: (t + b[k]) / 2 for k, t in a.items() if k in b}

    def link(a: Link, b: Link) -> Link:
        return Link((a.latency + b.latency) / 2, rate(a.bandwidth, b.bandwidth))

    ops = {
        op: dataclasses.replace(c, median=(c.median + after.ops[op].median) / 2)
        for op, c in before.ops.items()
    }
    scale = tuple((x + y) / 2 for x, y in zip(before.batch_scale, after.batch_scale, strict=True))
    return dataclasses.replace(
        before,
        ops=ops,
        batch_scale=scale,
        intra=link(before.intra, after.intra),
        inter=link(before.inter, after.inter),
        jitter=(before.jitter + after.jitter) / 2,
        allreduce=mean(before.allreduce, after.allreduce),
        allreduce_cpu=mean(before.allreduce_cpu, after.allreduce_cpu),
        copy_bandwidth=rate(before.copy_bandwidth, after.copy_bandwidth),
        handoff_cpu=tuple(
            (x + y) / 2 for x, y in zip(before.handoff_cpu, after.handoff_cpu, strict=False)
        ),
    )


if __name__ == "__main__":
    main()
