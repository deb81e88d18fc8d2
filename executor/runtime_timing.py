"""The ops timed where they run: training through the runtime itself.

**Why.** Timed one after another in a plain loop (`tgpipe.executor.profiler.measure_ops`),
the ops cost less than the same ops inside ``tgpipe run``. Measured on the synthetic data
(1 rank alone, three pairs of runs), a batch's ops cost 8-13 % more in the run: SAMPLE
13-29 %, MEM_ROOT 28-30 %, MEM_WRITE 43-47 %, FWD 8-17 %, BWD 1-8 %, STEP 15-21 %. Fed the
loop's costs, the simulator predicted the families 8-27 % too fast (2 ranks, two runs).
Those runs were before the ranks kept their freed memory (`launch.keep_freed_memory`); with
it, a batch's ops cost 3.6 % and 11.5 % more in the runtime than in the loop (one process,
two rounds). The reasons are the runtime's:

- each lane is a thread; while one lane's op runs, the lanes it wakes run their own Python
  (the wait that ends, the next batch opened, the bookkeeping) on the rank's core, and that
  time lands in the op's (MEM_ROOT: 1.25 ms of wall time for 0.98 ms of its thread's CPU);
- the shared store keeps an undo record per write and takes a file lock;
- the lanes interleave batches, so an op finds other data in the caches than in the loop.

So on a CPU the ranks train through `RankRunner`, with the memory backend their runs would
have, and each op's seconds are read from its trace rows: from the end of the op before it
on the rank (the runtime runs one at a time on a CPU) to its own end. The pause between the
two is the op's dispatch (its lane thread woken, the runner's bookkeeping: 2-4 % of a
sequential epoch here, 0.02-0.2 ms per op), which a run pays for every op and the simulator
has no other place for. The simulator then starts from what the runtime pays for an op.

One rank alone trains the `sequential` schedule. Several train `data_parallel` over all of
them: one store for all, their memory tokens and all-reduces, the ranks in step. They used
to train a sequential schedule each, side by side, and the ops of every two-rank family then
cost more in its run than in the profile taken just before it (wikipedia, 30,000 events,
medians of three rounds: MEM_FETCH +55-63 %, MEM_SUPPORT +11-23 %, FWD +11-19 %, BWD
+6-14 %; the sequential run's, from a profile of one rank alone, -13 to +6 %), and the
simulator predicted each of the three families 10-12 % too fast (medians). Profiled in data
parallel (in two benches of three rounds, before an op that waited for the other rank was
timed from its own start), FWD cost -11 to +11 % and BWD -2 to +12 % of the profile in the
runs, and the families' median errors were -8.5 to +14.9 %; one bench since, on a slow
spell (every op of every family, sequential's too, 4-29 % cheaper in its runs than
profiled), +8.5 to +24.0 %. A rank's ops beside ranks that train with it (reading the rows
they wrote, in step with them, gloo's threads working) cost more than beside ranks that
train alone.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping

from tgpipe.dag.ops import OPS
from tgpipe.executor.model import TGNConfig
from tgpipe.executor.stream import TRAIN, Stream
from tgpipe.progress import Progress
from tgpipe.trace import TraceRow

__all__ = ["op_seconds", "time_in_runtime"]


def time_in_runtime(
    stream: Stream,
    config: TGNConfig,
    warmup: int,
    repeat: int,
    *,
    shared: bool,
    progress: Progress | None = None,
    kv=None,
) -> tuple[dict[str, list[float]], list[tuple[int, int]]]:
    """Seconds of every op (its dispatch included) in the training batches after `warmup`
    that this rank runs, and the (epoch, batch) of each, in order, GRAD_SYNC aside. One rank
    alone runs `warmup` + `repeat` batches of the sequential schedule; with `kv` (the run's
    key-value store, torch.distributed set up) the ranks run that many batches of data
    parallel over all of them, each rank every W-th, so that the ops cost what they cost
    beside the other ranks' in a run (module doc): pooled, the ranks' samples are `repeat`
    batches. `shared`: on the shared host memory store (every rank's, with `kv`), else on a
    replica."""
    import torch.distributed as dist

    from tgpipe.dag.build import predecessors
    from tgpipe.executor.rank import RankRunner
    from tgpipe.executor.runtime import lower, process_group_sets
    from tgpipe.executor.shared_store import open_run_file, shared_folder
    from tgpipe.schedules.families import data_parallel, sequential

    n = stream.n_batches(TRAIN)
    rank, world = (dist.get_rank(), dist.get_world_size()) if kv is not None else (0, 1)
    groups: dict = {"memory": None, "weights": None}  # one rank: no messages
    preds: dict = {}  # one rank: it waits for nothing but itself
    if world == 1:
        schedule = sequential(None, 1, n)  # its lanes do not depend on costs
    else:
        schedule = data_parallel(None, world, n)
        groups = {kind: dist.new_group(backend="gloo") for kind in groups}
        for ranks in process_group_sets(schedule):
            groups[ranks] = dist.new_group(list(ranks), backend="gloo")
        preds = predecessors(schedule.semantics, n)
    program = lower(schedule)[rank]
    g = schedule.semantics.g
    fd = None
    if shared and world > 1:  # one store for all ranks, as a run's
        fd = open_run_file(kv, rank, dist.barrier)
    elif shared:  # a store of this process alone, as `SharedStore.create` makes
        fd, path = tempfile.mkstemp(prefix="tgpipe-profile-", dir=shared_folder())
        os.unlink(path)
    per_batch: dict[int, dict[str, float]] = defaultdict(dict)
    total = warmup + repeat
    try:
        runner = RankRunner(
            rank, schedule, program, stream, config, groups=groups, shared_memory=fd
        )
        for epoch in range((total + n - 1) // n):
            gc.collect()  # as `tgpipe run` does between epochs
            if world > 1:
                dist.barrier()  # every rank starts the epoch together, as in a run
            runner.begin_epoch(epoch)
            hi = min(n, -(-(total - epoch * n) // g) * g)  # whole synchronous groups
            runner.run_batches(0, hi)
            mine = runner.end_epoch().rows
            rows = mine
            if world > 1:  # every rank's: an op that waited for another rank is timed
                everyone = [None] * world  # from its own start, as a run's (`op_seconds`)
                dist.all_gather_object(everyone, mine)
                rows = [r for part in everyone for r in part]
            ran = {(r.op, r.batch) for r in mine}
            for (op, batch), took in op_seconds(rows, preds).items():
                if (op, batch) in ran and epoch * n + batch >= warmup and op != "GRAD_SYNC":
                    per_batch[epoch * n + batch][op] = took
            if progress:
                progress.update(min(hi, total - epoch * n), note="in the runtime")
    finally:
        if fd is not None:  # the runner is done: its unlinked file goes with its mapping
            os.close(fd)
    measured = sorted(per_batch)
    ran = [op for op in OPS if op in per_batch[measured[0]]]
    seconds = {op: [per_batch[k][op] for k in measured] for op in ran}
    return seconds, [divmod(k, n) for k in measured]


def op_seconds(rows: Iterable[TraceRow], preds: Mapping) -> dict[tuple[str, int], float]:
    """(op, batch) -> its seconds in the trace `rows` of one epoch, its dispatch included:
    from the moment its rank could start it (the end of the rank's op before it, an
    all-reduce aside, and of its predecessors on the rank: `preds`, the DAG's, as
    `tgpipe.dag.build.predecessors` gives them) to its end. Not for an op that waits for
    another rank: one with a predecessor there (the simulator charges that wait as the
    message's), a MEM_WRITE after a write of the batch before on another rank (the shared
    store applies writes in batch order), and GRAD_SYNC (an all-reduce waits for its peers
    inside it): those are timed from their own start. So on a trace of the simulator,
    where nothing waits for a dispatch, this is each row's own length."""
    rows = list(rows)
    where = {(r.op, r.batch): r for r in rows}
    if len(where) < len(rows):
        raise ValueError("a trace of several epochs: op seconds are read from one epoch")
    seconds = {}
    for rank in {r.rank for r in rows}:
        before = None  #: the end of this rank's ops so far, all-reduces aside
        for r in sorted((r for r in rows if r.rank == rank), key=lambda r: r.start):
            waits = [where[p] for p, _ in preds.get((r.op, r.batch), ()) if p in where]
            if r.op == "MEM_WRITE" and ("MEM_WRITE", r.batch - 1) in where:
                waits.append(where["MEM_WRITE", r.batch - 1])
            begin = r.start
            if before is not None and r.op != "GRAD_SYNC":
                if all(w.rank == rank for w in waits):  # the rank was what it waited for
                    begin = min(r.start, max([before, *(w.end for w in waits)]))
            seconds[r.op, r.batch] = r.end - begin
            if r.op != "GRAD_SYNC":
                before = r.end if before is None else max(before, r.end)
    return seconds
