"""`tgpipe run --workload snapshot`: train the snapshot model with a schedule on gloo ranks.

The snapshot workload's side of `tgpipe run` (`tgpipe.executor.run_cli` parses the command
line and dispatches here): `check_snapshot_args` refuses bad input in the launching process,
before any rank starts, with one line; `snapshot_rank_main` is the body of one rank under
the launcher (`tgpipe.executor.launch`: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as
torchrun sets them). Every rank builds the same sequence, workload and schedule from the
arguments, so they agree without talking:

- the sequence: ``cut_snapshots(load_dataset(DATA), PERIOD)``, or with ``--data skewed:N``
  the synthetic sequence of N snapshots of uneven sizes (`tgpipe.executor.snapshots.
  load_sequence`, as the other snapshot commands read it);
- the workload: its training epoch in groups of ``--group`` (`snapshot_workload`);
- the schedule: a family (vertex_partition, snapshot_partition, blad) on the started ranks,
  or a schedule file, whose workload must be this data's (the same snapshot sizes, vertices
  and group size: a schedule made for other data would assign other work).

Each epoch rank 0 prints its time, snapshots/s, mean loss and (unless ``--no-evaluate``)
validation and test AP and AUC, computed by the reference's evaluation
(`evaluate_snapshots`) with the trained weights. ``--trace`` saves the last epoch's measured
trace, ``--metrics`` each epoch's numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

from tgpipe.errors import InputError

__all__ = ["build_snapshot_run", "check_snapshot_args", "snapshot_rank_main"]


def _same_workload(mine, data, where: str, group: int) -> None:
    """A schedule file's workload against the data's: one line on what differs."""
    if (mine.sizes, mine.n_nodes) != (data.sizes, data.n_nodes):
        raise InputError(
            f"schedule {where} is for another snapshot sequence ({mine.n_positions} training "
            f"snapshots over {mine.n_nodes} vertices) than the data ({data.n_positions} over "
            f"{data.n_nodes}, with this --period): make the schedule for this data"
        )
    if mine.group != data.group:
        raise InputError(
            f"schedule {where} has groups of {mine.group} snapshots but --group is {group}: "
            f"use --group {mine.group}"
        )


def build_snapshot_run(args: argparse.Namespace, world: int):
    """Sequence, model config, workload and schedule, checked against each other and the
    `world` size (the same in every rank); InputError (one line) otherwise."""
    from tgpipe.dag.profile import load_profile
    from tgpipe.executor.snapshot_model import SnapshotConfig, snapshot_workload
    from tgpipe.executor.snapshot_reference import _check
    from tgpipe.executor.snapshot_runtime import check_runnable
    from tgpipe.executor.snapshots import load_sequence
    from tgpipe.schedules.ir import Schedule, validate
    from tgpipe.schedules.snapshot import snapshot_family

    seq = load_sequence(args.data, args.period, args.limit_events)
    _check(seq, args.epochs, args.evaluate)
    config = SnapshotConfig()
    workload = snapshot_workload(seq, args.group, config)
    if os.path.isfile(args.schedule):
        schedule = Schedule.load(args.schedule)
        check_runnable(schedule)
        _same_workload(schedule.workload, workload, args.schedule, args.group)
    else:
        profile = load_profile("snapshot-gpu-illustrative")
        schedule = snapshot_family(args.schedule, profile, workload, world)
        check_runnable(schedule)
    if schedule.n_ranks > world:
        raise InputError(
            f"schedule {schedule.name!r} is for {schedule.n_ranks} ranks but {world} were "
            f"started: use --nproc {schedule.n_ranks}"
        )
    validate(schedule)
    return seq, config, schedule.workload, schedule


def check_snapshot_args(args: argparse.Namespace) -> None:
    """Refuse what cannot run, before any rank is started (one line, InputError)."""
    if args.checkpoint or args.resume or args.checkpoint_every:
        raise InputError(
            "--checkpoint, --checkpoint-every and --resume are for the mtgnn workload: a "
            "snapshot epoch is short; run it without them"
        )
    if args.memory != "auto":
        raise InputError("--memory is for the mtgnn workload (node memory); leave it out")
    build_snapshot_run(args, args.nproc)


def snapshot_rank_main(args: argparse.Namespace) -> None:
    """The body of one rank of ``tgpipe run --workload snapshot``."""
    import torch.distributed as dist

    from tgpipe.executor.launch import prepare_rank
    from tgpipe.executor.snapshot_runtime import SnapshotRunner
    from tgpipe.executor.watchdog import Watchdog, rendezvous

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    prepare_rank(args.threads)
    seq, config, workload, schedule = build_snapshot_run(args, world)
    timeout = datetime.timedelta(seconds=args.timeout)
    store = rendezvous(rank, world, args.timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    watchdog = Watchdog(store, rank, world, lost_after=min(10.0, args.timeout)).start()
    try:
        p2p = dist.new_group(backend="gloo", timeout=timeout)  # hidden tables, parts' rows
        members = list(range(schedule.n_ranks))  # every rank creates every group
        sync = dist.new_group(members, backend="gloo", timeout=timeout)
        runner = None
        if rank < schedule.n_ranks:
            runner = SnapshotRunner(
                rank,
                schedule,
                seq,
                config,
                seed=args.seed,
                p2p=p2p,
                sync=sync,
                timeout=args.timeout,
            )
        try:
            _train(args, rank, world, seq, workload, schedule, runner)
        except Exception:
            watchdog.explain()  # a lost peer ends the process here, with one line naming it
            raise
        dist.barrier()
        watchdog.stop()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _train(args, rank, world, seq, workload, schedule, runner) -> None:
    import torch
    import torch.distributed as dist

    from tgpipe.executor.run_cli import report_epoch, write_outputs
    from tgpipe.executor.snapshot_reference import evaluate_snapshots
    from tgpipe.trace import Trace

    n = workload.n_positions
    if rank == 0:
        orders = sorted(set(workload.orders))
        print(
            f"{schedule.name}: {n} training snapshots in groups of {workload.group} per epoch "
            f"on {schedule.n_ranks} rank(s) of {world}, GCN {' and '.join(orders)}",
            flush=True,
        )
    all_losses, epochs, rows = [], [], []
    for epoch in range(args.epochs):
        dist.barrier()  # every rank starts the epoch together
        start = time.perf_counter()
        result = runner.run_epoch(epoch) if runner else None
        seconds = time.perf_counter() - start
        gathered = [None] * world if rank == 0 else None
        mine = (result.losses, result.rows, seconds) if result else ({}, [], 0.0)
        dist.gather_object(mine, gathered)
        if rank != 0:
            continue
        seconds = max(part[2] for part in gathered)  # the epoch ends with its slowest rank
        losses = dict.fromkeys(range(n), 0.0)  # a position's loss: the sum of its parts'
        for u, value in sorted(item for part in gathered for item in part[0].items()):
            losses[workload.position(u)] += value
        rows = sorted((r for part in gathered for r in part[1]), key=lambda r: (r.start, r.rank))
        all_losses.append([losses[u] for u in sorted(losses)])
        scores = None
        if args.evaluate:
            scores = evaluate_snapshots(
                seq,
                runner.learner.model,
                group_size=workload.group,
                seed=args.seed,
                order=workload.orders[0],
            )
        epochs.append(report_epoch(epoch, seconds, n, "snapshots", losses, scores))
    if rank == 0:
        meta = {
            "schedule": schedule.name,
            "n_ranks": schedule.n_ranks,
            "source": "measured",
            "workload": "snapshot",
            "group": workload.group,
            "orders": list(workload.orders),
        }
        write_outputs(args, meta, epochs, Trace(rows, meta))  # the last epoch, from its start
    if args.dump and runner:
        torch.save(
            {
                "learner": runner.learner.pack(),
                "losses": all_losses if rank == 0 else None,
                "orders": workload.orders,
                "group": workload.group,
                "schedule": schedule.name,
            },
            f"{args.dump}.rank{rank}",
        )
