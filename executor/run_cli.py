"""Subcommand `tgpipe run`: train a TGN with a schedule, on local ranks or under torchrun.

With ``--workload snapshot`` it trains the snapshot model (GCN + GRU) instead, through
`tgpipe.executor.snapshot_run`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import time

from tgpipe.cli import add_data_args, add_device_arg, add_workload_args, output_file, positive_int
from tgpipe.errors import InputError
from tgpipe.files import atomic_open, check_writable

__all__ = ["register"]


def _build(args: argparse.Namespace, world: int, device="cpu"):
    """Data, stream (its tensors on `device`) and schedule, checked against each other (the
    same in every rank)."""
    from tgpipe.dag.profile import load_profile
    from tgpipe.executor.data import load_dataset
    from tgpipe.executor.model import TGNConfig
    from tgpipe.executor.stream import TRAIN, Stream
    from tgpipe.schedules.families import family
    from tgpipe.schedules.ir import Schedule, validate

    graph = load_dataset(args.data)
    if args.limit_events:
        graph = graph.slice(0, min(args.limit_events, graph.n_events))
    config = TGNConfig()
    stream = Stream(
        graph, args.batch_size, seed=args.seed, neighbors=config.neighbors, device=device
    )
    n = stream.n_batches(TRAIN)
    if os.path.isfile(args.schedule):
        schedule = Schedule.load(args.schedule)
        if schedule.n_batches != n:
            raise InputError(
                f"schedule {args.schedule} has {schedule.n_batches} batches but the data has "
                f"{n} training batches of {args.batch_size} events: make the schedule for {n}"
            )
    else:
        ranks = 1 if args.schedule == "sequential" else world
        options = {"k": args.mspipe_k} if args.schedule.startswith("mspipe") else {}
        schedule = family(args.schedule, load_profile("gpu-illustrative"), ranks, n, **options)
    if schedule.n_ranks > world:
        raise InputError(
            f"schedule {schedule.name!r} is for {schedule.n_ranks} ranks but {world} were "
            f"started: use --nproc {schedule.n_ranks}"
        )
    validate(schedule)
    return graph, stream, config, schedule


def _run_identity(args: argparse.Namespace, schedule, stream, world: int) -> dict:
    """What a checkpoint must have been made by to be resumed by this run."""
    return {
        "schedule": schedule.name,
        "world": world,
        "batches": schedule.n_batches,
        "batch_size": args.batch_size,
        "events": stream.graph.n_events,
        "seed": args.seed,
    }


def _check_checkpoint_args(args: argparse.Namespace, schedule, stream, world: int) -> None:
    from tgpipe.executor.checkpoint import Checkpoints

    if (args.resume or args.checkpoint_every) and not args.checkpoint:
        raise InputError("--resume and --checkpoint-every need --checkpoint DIR")
    if args.checkpoint:  # a folder that exists, or one that can be made
        place = args.checkpoint
        check_writable(os.path.join(place, "x") if os.path.isdir(place) else place)
    if args.resume:
        ckpt = Checkpoints(args.checkpoint, _run_identity(args, schedule, stream, world))
        if ckpt.latest() is None:
            raise InputError(
                f"no checkpoint in {args.checkpoint} to resume: run without --resume first"
            )


def _memory_backend(args: argparse.Namespace, schedule, world: int) -> str:
    """The node memory backend of a run: ``shared`` host memory when every rank is on one
    machine (torchrun's LOCAL_WORLD_SIZE is the world), rows rank to rank otherwise or when
    the schedule says so (``pipetgl/rows``); ``--memory`` chooses, within what can work."""
    local = os.environ.get("LOCAL_WORLD_SIZE") == str(world)
    if args.memory == "shared" and not local:
        machines = os.environ.get("LOCAL_WORLD_SIZE", "?")
        raise InputError(
            f"--memory shared needs every rank on one machine, but this machine runs "
            f"{machines} of the {world} ranks: use --memory rows (or auto)"
        )
    if args.memory == "auto":
        return "shared" if local and schedule.memory == "host" else "rows"
    return args.memory


def _rank_main(args: argparse.Namespace) -> None:
    """The body of one rank (started by `tgpipe run --nproc` or by torchrun)."""
    if args.workload == "snapshot":
        from tgpipe.executor.snapshot_run import snapshot_rank_main

        snapshot_rank_main(args)
        return
    import torch
    import torch.distributed as dist

    from tgpipe.executor.launch import collective_backend, prepare_rank
    from tgpipe.executor.rank import RankRunner
    from tgpipe.executor.runtime import lower, process_group_sets
    from tgpipe.executor.shared_store import open_run_file
    from tgpipe.executor.watchdog import Watchdog, rendezvous

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = prepare_rank(args.threads, args.device)
    graph, stream, config, schedule = _build(args, world, device)
    memory = args.memory = _memory_backend(args, schedule, world)  # _train prints it
    timeout = datetime.timedelta(seconds=args.timeout)
    store = rendezvous(rank, world, args.timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    watchdog = Watchdog(store, rank, world, lost_after=min(10.0, args.timeout)).start()
    try:
        groups = {
            "memory": dist.new_group(backend="gloo", timeout=timeout),
            "weights": dist.new_group(backend="gloo", timeout=timeout),
        }
        all_reduce = collective_backend(device)  # the rest: CPU tensors, gloo
        for ranks in process_group_sets(schedule):
            groups[ranks] = dist.new_group(list(ranks), backend=all_reduce, timeout=timeout)
            if device.type == "cuda" and rank in ranks:  # NCCL sets up at its first call:
                # here, not inside the trace row of the first GRAD_SYNC
                dist.all_reduce(torch.zeros(1, device=device), group=groups[ranks])
        programs = lower(schedule)
        fd = weights_fd = None
        if memory == "shared":  # every rank on this machine: memory and weights shared
            fd = open_run_file(store, rank, dist.barrier)
            if any(p.sends("weights") for p in programs.values()):  # the same on every rank
                weights_fd = open_run_file(store, rank, dist.barrier, "weights")
        program = programs.get(rank)
        runner = None
        if program:
            runner = RankRunner(
                rank,
                schedule,
                program,
                stream,
                config,
                groups=groups,
                timeout=args.timeout,
                shared_memory=fd,
                shared_weights=weights_fd,
            )
        else:
            for descriptor in (fd, weights_fd):
                if descriptor is not None:
                    os.close(descriptor)
        try:
            _train(args, rank, world, schedule, stream, runner, groups)
        except Exception:
            watchdog.explain()  # a lost peer ends the process here, with one line naming it
            raise
        dist.barrier()  # every rank is done: none may take another's silence for a loss
        watchdog.stop()
        dist.barrier()  # every watchdog is stopped: rank 0 may take the store away
    finally:
        dist.destroy_process_group()


def _train(args, rank, world, schedule, stream, runner, groups) -> None:
    import torch
    import torch.distributed as dist

    from tgpipe.executor.checkpoint import Checkpoints, segment_ends
    from tgpipe.executor.reference import evaluate
    from tgpipe.executor.stream import TEST, VAL
    from tgpipe.progress import Progress
    from tgpipe.trace import Trace

    last = max((a for a in schedule.placement() if a.op == "STEP"), key=lambda a: a.batch)
    last_rank = schedule.placement()[last][0]
    all_rows, all_losses, epochs = [], [], []
    if rank == 0:
        print(
            f"{schedule.name}: {schedule.n_batches} batches of {args.batch_size} events per "
            f"epoch on {schedule.n_ranks} rank(s) of {world}, semantics {schedule.semantics}, "
            f"memory {args.memory}",
            flush=True,
        )
    n, g = schedule.n_batches, schedule.semantics.g
    identity = _run_identity(args, schedule, stream, world)
    ckpt = Checkpoints(args.checkpoint, identity) if args.checkpoint else None
    first_epoch, first_batch, state = 0, 0, None
    if args.resume:
        first_epoch, first_batch = ckpt.latest()
        state = ckpt.load((first_epoch, first_batch), rank) if runner else None
        if rank == 0:
            all_losses, epochs = state["history"]
            print(f"resuming at epoch {first_epoch}, batch {first_batch}", flush=True)
        if first_batch == n:  # a whole epoch was done
            if runner:
                runner.learner.unpack(state["learner"])
            first_epoch, first_batch = first_epoch + 1, 0

    def save(position: tuple[int, int]) -> float:
        """Checkpoint here (when asked to); the seconds it took."""
        if not ckpt:
            dist.barrier()
            return 0.0
        began = time.perf_counter()
        mine = runner.state_dict() if runner else None
        if mine is not None and rank == 0:
            mine["history"] = (all_losses, epochs)
        ckpt.save(position, rank, mine, dist.barrier)
        return time.perf_counter() - began

    offset = 0.0
    for epoch in range(first_epoch, args.epochs):
        gc.collect()  # untimed: 0.1-0.15 s here, which an epoch of 2 s used to pay
        dist.barrier()  # every rank starts the epoch together
        start, paused = time.perf_counter(), 0.0
        bar = Progress(n, f"epoch {epoch}", "batch") if rank == 0 else None
        if runner and first_batch:
            runner.load_state_dict(state, first_batch)
        elif runner:
            runner.begin_epoch(epoch)
        if bar and first_batch:
            bar.update(first_batch)
        lo, first_batch = first_batch, 0
        events = stream.bounds[0][1] - lo * args.batch_size  # those this run trains on
        for hi in segment_ends(n, args.checkpoint_every, g):
            if hi <= lo:
                continue
            if runner:
                runner.run_batches(lo, hi, bar)
            lo = hi
            if hi < n:
                paused += save((epoch, hi))
        result = runner.end_epoch() if runner else None
        if bar:
            bar.__exit__()
        packed = runner.learner.pack().cpu() if runner else torch.zeros(0)
        size = torch.tensor([packed.numel()])
        dist.broadcast(size, last_rank, group=groups["weights"])
        if rank != last_rank:
            packed = torch.zeros(int(size))
        dist.broadcast(packed, last_rank, group=groups["weights"])
        if runner:
            runner.learner.unpack(packed)
        seconds = time.perf_counter() - start - paused
        gathered = [None] * world if rank == 0 else None
        dist.gather_object((result.losses, result.rows) if result else ({}, []), gathered)
        if rank == 0:
            losses = {b: v for part in gathered for b, v in part[0].items()}
            if args.trace_epochs == "last":  # the warm epoch only, from time 0, for measuring
                all_rows, offset = [], 0.0
            rows = [
                r._replace(start=r.start + offset, end=r.end + offset)
                for part in gathered
                for r in part[1]
            ]
            offset = max((r.end for r in rows), default=offset)
            all_rows += rows
            all_losses.append([losses[b] for b in sorted(losses)])
            scores = None
            if args.evaluate:
                scores = evaluate(stream, runner.learner.model, runner.store, (VAL, TEST))
            epochs.append(report_epoch(epoch, seconds, events, "events", losses, scores))
        save((epoch, n))
    if rank == 0:
        trace = Trace(
            sorted(all_rows, key=lambda r: (r.start, r.rank)),
            {
                "schedule": schedule.name,
                "semantics": list(schedule.semantics),
                "source": "measured",
                "n_ranks": schedule.n_ranks,
                "batch_size": args.batch_size,
            },
        )
        meta = {"schedule": schedule.name, "semantics": list(schedule.semantics)}
        meta |= {"ranks": schedule.n_ranks, "batch_size": args.batch_size}
        write_outputs(args, meta, epochs, trace)
    if args.dump and runner:
        torch.save(
            {
                "table": tuple(t.cpu().clone() for t in runner.store.table),
                "learner": runner.learner.pack().cpu(),
                "losses": all_losses if rank == 0 else None,
            },
            f"{args.dump}.rank{rank}",
        )


def report_epoch(
    epoch: int, seconds: float, count: int, unit: str, losses: dict, scores: dict | None
) -> dict:
    """Print one epoch's line (time, `unit`/s, mean loss, validation and test AP and AUC
    when evaluated) and return it as a record for --metrics."""
    from tgpipe.executor.stream import TEST, VAL

    record = {"epoch": epoch, "seconds": seconds, f"{unit}_per_s": count / seconds}
    record["loss"] = sum(losses.values()) / len(losses)
    line = f"epoch {epoch}: {seconds:.2f} s, {count / seconds:,.1f} {unit}/s, "
    line += f"loss {record['loss']:.4f}"
    if scores is not None:
        (record["val_ap"], record["val_auc"]), (record["test_ap"], record["test_auc"]) = (
            scores[VAL],
            scores[TEST],
        )
        line += (
            f", val AP {record['val_ap']:.4f} AUC {record['val_auc']:.4f}, "
            f"test AP {record['test_ap']:.4f} AUC {record['test_auc']:.4f}"
        )
    print(line, flush=True)
    return record


def write_outputs(args: argparse.Namespace, meta: dict, epochs: list[dict], trace) -> None:
    """--metrics (the epochs' records with `meta`), --trace and --gantt, each atomically."""
    if args.metrics:
        with atomic_open(args.metrics) as f:
            json.dump({**meta, "epochs": epochs}, f, indent=1)
        print(f"wrote metrics {args.metrics}")
    if args.trace:
        trace.save(args.trace)
        print(f"wrote trace {args.trace}")
    if args.gantt:
        from tgpipe.gantt import write_gantt

        write_gantt([trace], args.gantt)
        print(f"wrote Gantt chart {args.gantt}")


def _run(args: argparse.Namespace) -> None:
    from tgpipe.executor.launch import check_device, run_ranks

    if args.schedule is None:
        args.schedule = "blad" if args.workload == "snapshot" else "pipetgl"
    if args.workload == "snapshot":
        from tgpipe.executor.snapshot_run import check_snapshot_args

        if args.device == "cuda":
            raise InputError(
                "--workload snapshot runs on CPUs only (its runtime has no CUDA streams yet): "
                "use --device cpu"
            )
        run_ranks(args.nproc, lambda: _rank_main(args), lambda: check_snapshot_args(args))
        return

    def check() -> None:
        check_device(args.device, args.nproc)
        _, stream, _, schedule = _build(args, args.nproc)
        _check_checkpoint_args(args, schedule, stream, args.nproc)

    run_ranks(args.nproc, lambda: _rank_main(args), check)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="train a TGN with a schedule on local ranks or under torchrun",
        description="Train a TGN (memory, GRU, temporal attention, link predictor) with a "
        "schedule (a family run on --nproc ranks, or a schedule file) on torch.distributed "
        "(gloo; with --device cuda one GPU per rank, a CUDA stream per lane and NCCL for the "
        "gradient all-reduce). Started by hand it spawns --nproc local ranks; under torchrun "
        "each process runs its own rank. Prints time, events/s, loss, val and test AP/AUC per "
        "epoch.",
    )
    p.add_argument(
        "--schedule",
        default=None,
        metavar="FAMILY|FILE",
        help="a family or a schedule file (default: pipetgl; blad with --workload snapshot; "
        "snapshot families: vertex_partition, snapshot_partition, blad)",
    )
    add_data_args(p, snapshots=True)
    add_workload_args(p)
    p.add_argument(
        "--nproc", type=positive_int, default=2, help="local ranks to start (default: %(default)s)"
    )
    add_device_arg(
        p,
        "mtgnn only: a CUDA stream per lane, NCCL all-reduce; memory rows and weights travel "
        "as CPU tensors, through shared host memory or gloo",
    )
    p.add_argument("--epochs", type=positive_int, default=1, help="(default: %(default)s)")
    p.add_argument(
        "--mspipe-k",
        type=positive_int,
        default=2,
        metavar="K",
        help="mspipe's staleness bound (default: %(default)s)",
    )
    p.add_argument(
        "--memory",
        choices=("auto", "shared", "rows"),
        default="auto",
        help="node memory backend: one table in shared host memory for the ranks of a "
        "machine, or a replica per rank with the rows sent rank to rank; auto: shared when "
        "every rank is on one machine and the schedule's memory is host (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads per rank (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a rank waits for a peer before giving up (default: %(default)s)",
    )
    p.add_argument(
        "--no-evaluate",
        dest="evaluate",
        action="store_false",
        help="skip validation and test after each epoch",
    )
    p.add_argument(
        "--metrics",
        type=output_file,
        metavar="FILE",
        help="save each epoch's time, events/s, loss and AP/AUC (JSON)",
    )
    p.add_argument(
        "--trace", type=output_file, metavar="FILE", help="save the measured trace (JSON)"
    )
    p.add_argument(
        "--trace-epochs",
        choices=("all", "last"),
        default="all",
        help="epochs the trace keeps: all, or the last (warm) one (default: %(default)s)",
    )
    p.add_argument(
        "--gantt", type=output_file, metavar="FILE.html", help="Gantt chart of the measured run"
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="checkpoint into DIR at the end of each epoch (weights, Adam state, memory, "
        "mailbox; atomically)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="also checkpoint every N batches (rounded up to whole synchronous groups)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last checkpoint in --checkpoint DIR (same options as the run)",
    )
    p.add_argument("--dump", metavar="PREFIX", help=argparse.SUPPRESS)  # tests: final state
    p.set_defaults(func=_run)
