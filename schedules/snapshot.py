"""Schedules of a snapshot epoch: vertex partition, snapshot partition, BLAD; and their search.

The three ways that systems for discrete-time dynamic GNNs split an epoch over W GPUs, in
the same IR as the M-TGNN families (`tgpipe.schedules.ir`; the actions' units are those of
`tgpipe.dag.snapshot`):

- ``vertex_partition`` (DGL, PyG Temporal, AliGraph): every GPU takes 1/W of every snapshot's
  vertices; before each aggregation the parts exchange their neighbours' rows (halo edges).
- ``snapshot_partition`` (ESDG): each GPU takes a contiguous block of the snapshots, the same
  number each; it runs the GCN of its block first (no dependencies), then the GRU chain, whose
  hidden state comes from the GPU before it inside a group. Equal counts are unequal work when
  snapshot sizes are skewed, and the all-reduce waits for the slowest.
- ``blad`` (adaptive load-balanced scheduling with operator overlap): groups (no dependency on
  each other) go to GPUs by a two-level balancer, by cost and not by count: longest group
  first to the least loaded GPU, then, on each GPU, the same between its `workers` worker
  lanes (``gpu`` and ``gpu2``, two processes on one GPU). With ``pairing``, the groups of the
  second worker write their GCN the other way round (DENSE before AGG), so that the first
  worker's memory-bound aggregation meets the second's compute-bound transform.

`snapshot_search` simulates every choice (family; for BLAD the group size, assignment,
workers and pairing) and keeps the shortest epoch.

Examples
--------
>>> from tgpipe.dag import load_profile
>>> from tgpipe.dag.snapshot import SnapshotWorkload
>>> w = SnapshotWorkload(((100, 400),) * 6 + ((3000, 40000),) * 2, n_nodes=5000, group=2)
>>> s = blad(load_profile("snapshot-gpu-illustrative"), w, 2)
>>> s.name, sorted({lane for _, lane in s.lanes})
('blad(2)', ['gpu', 'gpu2', 'h2d', 'net'])
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from tgpipe.dag.profile import CostProfile
from tgpipe.dag.semantics import sequential as plain
from tgpipe.dag.snapshot import OP_ORDER, UNIT_OPS, SnapshotWorkload
from tgpipe.errors import InputError
from tgpipe.progress import Progress
from tgpipe.schedules.ir import Action, Schedule
from tgpipe.trace import Trace

__all__ = [
    "SNAPSHOT_FAMILIES",
    "SnapshotCandidate",
    "blad",
    "snapshot_family",
    "snapshot_partition",
    "snapshot_search",
    "vertex_partition",
]


def _unit_work(profile: CostProfile, w: SnapshotWorkload, unit: int) -> float:
    return sum(w.cost(profile, op, unit) for op in UNIT_OPS)


def _schedule(
    name: str,
    w: SnapshotWorkload,
    n_ranks: int,
    workers: dict[int, list[list[int]]],
    gcn_first: bool,
    late: frozenset[int] = frozenset(),
) -> Schedule:
    """Lanes from each rank's worker lanes' units, in order: a unit's ops on its worker lane
    (with `gcn_first`, every unit's GCN ops before the GRU chains, and the chains of the
    units in `late` last), its LOAD on ``h2d`` in the order the workers take them; then the
    rank's GRAD_SYNC and STEP."""
    lanes: dict[tuple[int, str], tuple[Action, ...]] = {}
    for rank in range(n_ranks):
        loads = []
        per_worker = workers.get(rank, [[]])
        for k, units in enumerate(per_worker):
            chains = [(*OP_ORDER[w.order(u)][1:], "BWD") for u in units]
            if gcn_first:
                acts = [Action(op, u) for u, c in zip(units, chains, strict=True) for op in c[:2]]
                chained = sorted(zip(units, chains, strict=True), key=lambda uc: uc[0] in late)
                acts += [Action(op, u) for u, c in chained for op in c[2:]]
            else:
                acts = [Action(op, u) for u, c in zip(units, chains, strict=True) for op in c]
            if k == 0:
                acts.append(Action("STEP", rank))
            lanes[rank, ("gpu", "gpu2")[k]] = tuple(acts)
        longest = max(len(units) for units in per_worker)
        for i in range(longest):  # the workers' loads, interleaved as they need them
            loads += [Action("LOAD", units[i]) for units in per_worker if i < len(units)]
        lanes[rank, "h2d"] = tuple(loads)
        lanes[rank, "net"] = (Action("GRAD_SYNC", rank),)
    return Schedule(name, plain(), n_ranks, w.n_units, lanes, workload=w)


def vertex_partition(profile: CostProfile, workload: SnapshotWorkload, n_ranks: int) -> Schedule:
    """Every rank takes its part of every position (unit t * W + rank)."""
    w = dataclasses.replace(workload, parts=n_ranks)
    units = {r: [[t * n_ranks + r for t in range(w.n_positions)]] for r in range(n_ranks)}
    return _schedule(f"vertex_partition({n_ranks})", w, n_ranks, units, gcn_first=False)


def snapshot_partition(profile: CostProfile, workload: SnapshotWorkload, n_ranks: int) -> Schedule:
    """Contiguous blocks of positions, the same count on each rank, GCN first; a rank runs
    last the chain of a group that began on the rank before it (it waits for that hidden
    state), its own groups' chains first."""
    w = dataclasses.replace(workload, parts=1)
    n = w.n_positions
    bounds = [round(r * n / n_ranks) for r in range(n_ranks + 1)]
    units = {r: [list(range(bounds[r], bounds[r + 1]))] for r in range(n_ranks)}
    late = frozenset(
        u
        for r in range(n_ranks)
        for u in range(bounds[r], bounds[r + 1])
        if w.group_of(u) == w.group_of(bounds[r]) and bounds[r] % w.group
    )
    return _schedule(f"snapshot_partition({n_ranks})", w, n_ranks, units, True, late)


def _least_loaded(costs: dict[int, float], bins: int, by_cost: bool) -> list[list[int]]:
    """Items into `bins`: longest first to the least loaded bin (by cost), or contiguous
    runs of equal count; each bin's items in their own order."""
    items = sorted(costs)
    if not by_cost:
        bounds = [round(b * len(items) / bins) for b in range(bins + 1)]
        return [items[bounds[b] : bounds[b + 1]] for b in range(bins)]
    load, out = [0.0] * bins, [[] for _ in range(bins)]
    for item in sorted(items, key=lambda i: (-costs[i], i)):
        b = min(range(bins), key=lambda k: (load[k], k))
        load[b] += costs[item]
        out[b].append(item)
    return [sorted(b) for b in out]


def blad(
    profile: CostProfile,
    workload: SnapshotWorkload,
    n_ranks: int,
    *,
    workers: int = 2,
    assign: str = "cost",
    pairing: bool = True,
) -> Schedule:
    """Groups to GPUs and to each GPU's workers by cost (``assign="cost"``; ``"count"``:
    contiguous runs of equal count), the second worker's groups DENSE-first with `pairing`."""
    if workers not in (1, 2):
        raise InputError(f"blad: workers must be 1 or 2 (lanes gpu, gpu2), got {workers}")
    if assign not in ("cost", "count"):
        raise InputError(f"blad: assign must be cost or count, got {assign!r}")
    w = dataclasses.replace(workload, parts=1, orders=workload.orders[:1])
    group_cost = {
        g: sum(_unit_work(profile, w, u) for u in w.group_units(g)) for g in range(w.n_groups)
    }
    by_cost = assign == "cost"
    per_rank = _least_loaded(group_cost, n_ranks, by_cost)
    groups_of: dict[int, list[list[int]]] = {}
    orders = [w.orders[0]] * w.n_groups
    other = {"agg_first": "dense_first", "dense_first": "agg_first"}[w.orders[0]]
    for rank, groups in enumerate(per_rank):
        split = _least_loaded({g: group_cost[g] for g in groups}, workers, by_cost)
        groups_of[rank] = split
        if pairing and workers == 2:
            for g in split[1]:
                orders[g] = other
    if len(set(orders)) > 1:
        w = dataclasses.replace(w, orders=tuple(orders))
    units = {
        r: [[u for g in gs for u in w.group_units(g)] for gs in split]
        for r, split in groups_of.items()
    }
    options = [] if workers == 2 else [f"workers={workers}"]
    options += [] if by_cost else ["assign=count"]
    options += [] if pairing or workers == 1 else ["pairing=off"]
    name = f"blad({', '.join([str(n_ranks), *options])})".replace(", ", ",")
    return _schedule(name, w, n_ranks, units, gcn_first=False)


SNAPSHOT_FAMILIES: dict[str, Callable[..., Schedule]] = {
    "vertex_partition": vertex_partition,
    "snapshot_partition": snapshot_partition,
    "blad": blad,
}


def snapshot_family(
    name: str, profile: CostProfile, workload: SnapshotWorkload, n_ranks: int, **options
) -> Schedule:
    """A snapshot family by name; an InputError that lists them otherwise."""
    if name not in SNAPSHOT_FAMILIES:
        raise InputError(
            f"unknown snapshot schedule {name!r}: expected one of {', '.join(SNAPSHOT_FAMILIES)}"
        )
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int) or n_ranks < 1:
        raise InputError(f"number of GPUs must be an integer >= 1, got {n_ranks!r}")
    return SNAPSHOT_FAMILIES[name](profile, workload, n_ranks, **options)


class SnapshotCandidate(NamedTuple):
    """One simulated choice: its schedule, epoch time and trace."""

    schedule: Schedule
    epoch: float  #: seconds: the simulated makespan
    trace: Trace


def snapshot_search(
    profile: CostProfile,
    workload: SnapshotWorkload,
    n_ranks: int,
    groups: Sequence[int] = (),
    *,
    progress: bool = False,
) -> list[SnapshotCandidate]:
    """Simulate every family and every BLAD choice (group size from `groups`, default the
    workload's; assignment by cost or count; one or two workers; pairing on or off) on
    `n_ranks` GPUs; the candidates, shortest epoch first. A group size is a choice of
    semantics (where the hidden state restarts): only the sizes given are tried."""
    from tgpipe.simulator.sim import simulate

    sizes = list(dict.fromkeys(groups or [workload.group]))
    todo = []
    for g in sizes:
        w = dataclasses.replace(workload, group=g, orders=workload.orders[:1])
        todo += [(f, w, {}) for f in ("vertex_partition", "snapshot_partition")]
        for assign in ("cost", "count"):
            todo.append(("blad", w, {"workers": 1, "assign": assign}))
            for pairing in (True, False):
                todo.append(("blad", w, {"assign": assign, "pairing": pairing}))
    found = []
    stream = sys.stderr if progress else None
    with Progress(len(todo), "search", "schedule", stream=stream) as bar:
        for name, w, options in todo:
            schedule = snapshot_family(name, profile, w, n_ranks, **options)
            trace = simulate(schedule, profile, check=False)
            found.append(SnapshotCandidate(schedule, max(r.end for r in trace.rows), trace))
            bar.update()
    return sorted(found, key=lambda c: (c.epoch, c.schedule.name))
