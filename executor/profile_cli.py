"""Subcommand `tgpipe profile`: measure a `CostProfile` on this machine.

Started by hand it spawns --nproc local ranks the way `tgpipe run` does; under torchrun each
process is one rank (several machines: rank 0 also measures the link to another machine).
Every rank times the ops on real batches at once, as in a run, where every rank computes and
they compete for the machine's cores and memory (on a CPU, inside the runtime:
`tgpipe.executor.runtime_timing`); rank 0 pools the samples. Then every rank
joins the gradient all-reduce, on CPU ranks of one machine a learner handed on from rank 0
to rank 1 (what it costs each end's core), and the ping-pongs (see
`tgpipe.executor.profiler`), and rank 0 writes the profile (``compute`` says whether the
ops ran on a CPU or a GPU).

``--workload snapshot`` profiles the snapshot workload instead (a GCN + GRU over graph
snapshots, `tgpipe.executor.snapshot_profiler`): ``--data`` cut into snapshots of
``--period`` time units (or ``skewed:N``, the synthetic sequence of N uneven snapshots),
every training snapshot timed each epoch, and each op's cost fitted as a fixed part plus a
part per vertex and per edge; ``--warmup`` and ``--repeat`` then count epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import statistics
import sys
from pathlib import Path

from tgpipe.cli import (
    add_data_args,
    add_device_arg,
    add_workload_args,
    nonnegative_int,
    output_file,
    positive_int,
)

__all__ = ["register"]

#: Seconds a rank waits for a peer before giving up: the other ranks wait while rank 0
#: times the ops, which may take long with many --repeat on large data.
_TIMEOUT = 1800.0
#: --warmup and --repeat when not given: batches (mtgnn) or epochs of snapshots (snapshot).
_DEFAULT_COUNTS = {"mtgnn": (5, 50), "snapshot": (1, 5)}
#: Above this correlation of the snapshots' vertices and edges, the note warns that the fit
#: cannot tell a cost per vertex from a cost per edge.
_COLLINEAR = 0.95
#: Whole all-reduces timed after the snapshot ops (warm-up, measured).
_SNAPSHOT_ALLREDUCES = (2, 20)


def _counts(args: argparse.Namespace) -> None:
    """Fill --warmup and --repeat with the workload's defaults where not given."""
    warmup, repeat = _DEFAULT_COUNTS[args.workload]
    args.warmup = warmup if args.warmup is None else args.warmup
    args.repeat = repeat if args.repeat is None else args.repeat


def _sequence(args: argparse.Namespace):
    """The snapshot sequence of --data and --period (the same in every rank), checked to
    have enough training snapshots to fit; bad data raises InputError."""
    from tgpipe.executor.snapshot_profiler import check_sequence
    from tgpipe.executor.snapshots import load_sequence

    seq = load_sequence(args.data, args.period, args.limit_events)
    check_sequence(seq)
    return seq


def _stream(args: argparse.Namespace, device):
    """The data as training batches (the same in every rank); bad data raises InputError."""
    from tgpipe.executor.data import load_dataset
    from tgpipe.executor.model import TGNConfig
    from tgpipe.executor.stream import Stream

    graph = load_dataset(args.data)
    if args.limit_events:
        graph = graph.slice(0, min(args.limit_events, graph.n_events))
    config = TGNConfig()
    return Stream(graph, args.batch_size, neighbors=config.neighbors, device=device), config


def _one_machine(nodes: list[int]) -> bool:
    """Whether every rank runs on one machine (`nodes`: each rank's machine): its ranks then
    share host memory, and its all-reduce is measured rather than costed from the link."""
    return len(set(nodes)) == 1


def _rank_main(args: argparse.Namespace) -> None:
    """The body of one rank (started by `tgpipe profile --nproc` or by torchrun)."""
    import torch.distributed as dist

    from tgpipe.executor.launch import collective_backend, prepare_rank
    from tgpipe.executor.profiler import (
        allreduce_call,
        measure_links,
        measure_ops,
        time_beside,
        time_collective,
        time_handoff,
    )
    from tgpipe.executor.runtime_timing import time_in_runtime
    from tgpipe.progress import Progress

    _counts(args)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = prepare_rank(args.threads, args.device)
    if args.workload == "snapshot":
        seq = _sequence(args)
    else:
        stream, config = _stream(args, device)
    timeout = datetime.timedelta(seconds=_TIMEOUT)
    backend = collective_backend(device)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    try:
        alone = [dist.new_group([r], backend=backend, timeout=timeout) for r in range(world)]
        nodes = [0] * world
        dist.all_gather_object(nodes, int(os.environ.get("GROUP_RANK", 0)))
        if args.workload == "snapshot":
            _profile_snapshots(args, seq, device, rank, world, alone[rank], nodes)
            return
        total = args.warmup + args.repeat
        in_runtime = device.type == "cpu"  # on a GPU, timing in the runtime is untried yet
        kv = dist.distributed_c10d._get_default_store()
        with Progress(
            total * (1 + in_runtime),
            "profile ops",
            "batch",
            stream=sys.stderr if rank == 0 else None,
        ) as bar:
            loop = samples = measure_ops(
                stream, config, args.warmup, args.repeat, group=alone[rank], progress=bar
            )
            if in_runtime:  # the ops' seconds as the runtime pays them, GRAD_SYNC's aside
                seconds, batches = time_in_runtime(
                    stream,
                    config,
                    args.warmup,
                    args.repeat,
                    shared=_one_machine(nodes),
                    progress=bar,
                    kv=kv if world > 1 else None,
                )
                seconds["GRAD_SYNC"] = loop.seconds["GRAD_SYNC"]
                samples = dataclasses.replace(loop, seconds=seconds, batches=batches)
        pooled = [None] * world if rank == 0 else None
        # every rank's samples, as they ran together
        dist.gather_object((loop.seconds, samples.seconds, samples.batches), pooled)
        if rank == 0:
            loop = _pool(loop, [(part[0], loop.batches) for part in pooled])
            samples = _pool(samples, [part[1:] for part in pooled])
        allreduce = None  # each all-reduce's seconds, and what one costs an op beside it
        if world > 1:
            sync = allreduce_call(samples.grads, stream)
            seconds, beside = time_collective(sync, args.warmup, args.repeat, device), None
            if in_runtime and _one_machine(nodes):  # gloo's threads beside a CPU's ops
                beside = time_beside(sync, statistics.median(seconds), args.repeat)
            allreduce = (seconds, beside)
        handoff = ()
        if world > 1 and in_runtime and _one_machine(nodes):  # threads beside a CPU's ops
            size = samples.bytes["STEP"] // 4  # a packed learner's numbers
            handoff = time_handoff(size, args.repeat, kv)
        links = measure_links(nodes, device)
        if rank == 0:
            # the jitter from the loop, where every rank timed the same batches
            jitter = loop.jitter()
            _write(args, stream, device, world, nodes, samples, jitter, allreduce, links, handoff)
    finally:
        dist.destroy_process_group()


def _pool(samples, parts: list[tuple[dict[str, list[float]], list[tuple[int, int]]]]):
    """`samples` with the seconds and batches of every rank (`parts`: each rank's) in one."""
    seconds = {op: [t for part, _ in parts for t in part[op]] for op in samples.seconds}
    batches = [b for _, part in parts for b in part]
    return dataclasses.replace(samples, seconds=seconds, batches=batches)


def _write(args, stream, device, world, nodes, samples, jitter, allreduce, links, handoff):
    """Rank 0: the profile, checked, written, read back, and printed as a table."""
    from tgpipe.dag.ops import OPS
    from tgpipe.dag.profile import CostProfile, OpCost
    from tgpipe.executor.launch import job_cores
    from tgpipe.executor.profiler import device_name
    from tgpipe.executor.stream import TRAIN
    from tgpipe.simulator.cli import print_table

    costs = samples.costs()
    graph = stream.graph
    name = device_name(device)
    note = (
        f"Measured by 'tgpipe profile' on {name} ({device.type}, {args.threads} torch "
        f"thread(s) per rank), data {graph.name} ({graph.n_events:,} events), batches of "
        f"{args.batch_size}: each op's median and median absolute deviation over "
        f"{args.repeat} training batches run in order after {args.warmup} warm-up batches, "
        + (
            "by the runtime itself on "
            + ("the sequential schedule" if world == 1 else "data parallel over all ranks")
            + " (lane threads, "
            + ("a shared memory store" if _one_machine(nodes) else "a memory replica")
            + ", as runs on these ranks use), as an op costs in a run; GRAD_SYNC's from a "
            "loop of the ops. "
            if device.type == "cpu"
            else "one op after another. "
        )
        + "GRAD_SYNC's median is its local overhead; allreduce: the whole all-reduce measured "
        "on these ranks (elsewhere its messages are costed from the link); allreduce_cpu: "
        "how much longer an op computing beside it on rank 0's core takes (CPU ranks of one "
        "machine; median of --repeat pairs, beside and alone). "
        "batch_scale: each training batch's ops over the sum of their medians "
        "(1 where unmeasured). copy_bandwidth: packing and unpacking the learner "
        "(what stale weights, and a learner handed on one machine, copy), median of as "
        "many rounds. handoff_cpu: the CPU seconds of the sending and the receiving "
        "process for one learner handed on through shared memory (rank 0 to rank 1, the "
        "runtime's calls), median of --repeat. jitter: the standard "
        "deviation of a batch's ops between the ranks (one rank: the epochs) that ran it in a "
        "loop of the ops. "
        f"Links: intra, {links['intra'][1]['how']}; inter, {links['inter'][1]['how']}."
    )
    meta = {
        "tool": "tgpipe profile",
        "data": graph.name,
        "events": graph.n_events,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "threads": args.threads,
        "ranks": world,
        "train_batches": stream.n_batches(TRAIN),  # batch k measured is k % this, k >= warmup
        "links": {k: detail for k, (_, detail) in links.items()},
    }
    profile = CostProfile(
        name=Path(args.output).stem,
        source="measured",
        device=name,
        ops={op: OpCost(*costs[op]) for op in OPS},
        intra=links["intra"][0],
        inter=links["inter"][0],
        cpu_cores=job_cores(),
        batch_size=args.batch_size,
        note=note,
        meta=meta,
        compute="cpu" if device.type == "cpu" else "gpu",  # cuda: a GPU
        batch_scale=samples.batch_scale(stream.n_batches(TRAIN)),
        copy_bandwidth=samples.copy_bandwidth,
        jitter=jitter,
        handoff_cpu=handoff,
    )
    seconds, beside = allreduce or (None, None)
    profile = _with_allreduce(profile, seconds, beside, world, nodes)
    _save(profile, args.output)

    print(
        f"{name} ({device.type}), {args.threads} thread(s), {graph.name}: "
        f"{args.repeat} batches of {args.batch_size} after {args.warmup} warm-up"
    )
    rows = [
        [op, f"{c.median * 1e3:.3f}", f"{c.spread * 1e3:.3f}", f"{c.bytes:,}"]
        for op, c in profile.ops.items()
    ]
    print_table(rows, ["op", "median ms", "± ms", "bytes"])
    _print_tail(profile, links, args.output)


def _save(profile, path: str) -> None:
    """Check the profile, write it atomically, and read it back: never a file that fails."""
    from tgpipe.dag.profile import CostProfile, load_profile

    CostProfile.from_dict(profile.to_dict(), path)
    profile.save(path)
    if load_profile(path).to_dict() != profile.to_dict():  # pragma: no cover - a bug
        raise RuntimeError(f"{path} does not read back as written")


def _with_allreduce(
    profile, allreduce: list[float] | None, beside: float | None, world: int, nodes: list[int]
):
    """The profile with the whole all-reduce's timing (`allreduce`: rank 0's, each time) in
    meta beside what the link model predicts, and as the all-reduce's cost on `world` ranks
    when they are on one machine, with what it costs an op beside it on rank 0's core
    (`beside`: CPU ranks of one machine; where the median pair measured no slowdown, 0,
    nothing is kept: the profile's fields hold positive seconds)."""
    from tgpipe.executor.profiler import median_spread

    if not allreduce:
        return profile
    median, spread = median_spread(allreduce)
    inter = not _one_machine(nodes)
    measured = {
        "ranks": world,
        "bytes": profile.ops["GRAD_SYNC"].bytes,
        "median": median,
        "spread": spread,
        "predicted": profile.cost("GRAD_SYNC", world, inter=inter),  # by the link model
    }
    if beside is not None:
        measured["cpu"] = beside
    return dataclasses.replace(
        profile,
        meta={**profile.meta, "allreduce": measured},
        allreduce={} if inter else {world: median},
        allreduce_cpu={world: beside} if beside and not inter else {},
    )


def _print_tail(profile, links, path: str) -> None:
    """The links, the all-reduce against its prediction, and where the profile went."""
    from tgpipe.simulator.cli import print_table

    print()
    rows = [
        [kind, f"{link.latency * 1e6:.1f}", f"{link.bandwidth / 1e9:.3f}", links[kind][1]["how"]]
        for kind, link in (("intra", profile.intra), ("inter", profile.inter))
    ]
    print_table(rows, ["link", "latency us", "GB/s", "how"])
    a = profile.meta.get("allreduce")
    if a:
        print(
            f"\nall-reduce of {a['bytes']:,} bytes of gradients on {a['ranks']} ranks: "
            f"{a['median'] * 1e3:.3f} ± {a['spread'] * 1e3:.3f} ms measured, "
            f"{a['predicted'] * 1e3:.3f} ms by the link model"
            + (" (the profile keeps the measurement)" if profile.allreduce else "")
            + (f"; an op beside it takes {a['cpu'] * 1e3:.3f} ms longer" if "cpu" in a else "")
        )
    if profile.copy_bandwidth:
        print(f"copies (a learner copied or loaded): {profile.copy_bandwidth / 1e9:.2f} GB/s")
    if profile.handoff_cpu:
        send, receive = profile.handoff_cpu
        print(
            f"a learner handed on costs its sender's core {send * 1e3:.3f} ms, "
            f"its receiver's {receive * 1e3:.3f} ms"
        )
    if profile.jitter:
        print(f"jitter of one batch's ops, rank to rank: {profile.jitter * 1e3:.3f} ms")
    print(f"wrote profile {path}")


def _profile_snapshots(args, seq, device, rank, world, alone, nodes) -> None:
    """One rank of ``--workload snapshot``: time the ops (all ranks at once), pool the samples
    on rank 0, time the whole all-reduce and the links, and write the profile (rank 0)."""
    import torch.distributed as dist

    from tgpipe.executor.profiler import measure_links, time_collective
    from tgpipe.executor.snapshot_model import SnapshotConfig, grad_sync
    from tgpipe.executor.snapshot_profiler import check_sequence, measure_snapshot_ops
    from tgpipe.progress import Progress

    config = SnapshotConfig()
    total = (args.warmup + args.repeat) * len(check_sequence(seq))
    with Progress(
        total, "profile snapshot ops", "snapshot", stream=sys.stderr if rank == 0 else None
    ) as bar:
        samples = measure_snapshot_ops(
            seq,
            config,
            args.group,
            args.warmup,
            args.repeat,
            device=device,
            group=alone,
            progress=bar,
        )
    pooled = [None] * world if rank == 0 else None
    dist.gather_object(samples.portable(), pooled)  # every rank's samples, as they ran together
    if rank == 0:
        for other in pooled[1:]:
            samples.pool(other)
    allreduce = None
    if world > 1:
        grads = samples.grads
        allreduce = time_collective(lambda: grad_sync(grads), *_SNAPSHOT_ALLREDUCES, device)
    links = measure_links(nodes, device)
    if rank == 0:
        _write_snapshots(args, seq, config, device, world, nodes, samples, allreduce, links)


def _write_snapshots(args, seq, config, device, world, nodes, samples, allreduce, links) -> None:
    """Rank 0: the fitted snapshot profile, checked, written, read back, printed."""
    from tgpipe.executor.launch import job_cores
    from tgpipe.executor.profiler import device_name
    from tgpipe.executor.snapshot_profiler import device_bandwidth, snapshot_profile
    from tgpipe.simulator.cli import print_table

    name = device_name(device)
    gpu = device.type == "cuda"
    bandwidth = device_bandwidth(device) if gpu else None
    edges = sorted(e for _, e in samples.sizes)
    shares = (
        "Shares of the GPU (compute, memory) are a rough estimate, UNTESTED: memory = twice "
        "the bytes allocated during the op / (its time * the bandwidth of a large copy), "
        "compute = the rest."
        if gpu
        else "Shares (compute, memory) are 1.0: on a CPU a rank runs one op at a time, so "
        "there is no GPU to share."
    )
    note = (
        f"Measured by 'tgpipe profile --workload snapshot' on {name} ({device.type}, "
        f"{args.threads} torch thread(s) per rank, {world} rank(s) at once), data {seq.name} "
        f"cut into {len(seq)} snapshots of {seq.period:g} time units: the ops of a GCN "
        f"({config.in_dim} -> {config.hidden_dim}, agg_first) + GRU model timed on each of "
        f"the {len(samples.sizes)} training snapshots ({edges[0]:,}-{edges[-1]:,} edges) in "
        f"{args.repeat} epoch(s) after {args.warmup} warm-up epoch(s), in groups of "
        f"{args.group}. Per op, seconds = median + per_vertex * V + per_edge * E, fitted by "
        "non-negative least squares to each snapshot's median (fit quality in "
        "meta.fit; spread = median |sample - fit|). GRAD_SYNC's median is its local overhead; "
        "allreduce: the whole all-reduce measured on these ranks (elsewhere its messages are "
        "costed from the link). STEP: one Adam step per epoch. "
        f"{shares} Links: intra, {links['intra'][1]['how']}; inter, "
        f"{links['inter'][1]['how']}."
    )
    meta = {
        "tool": "tgpipe profile --workload snapshot",
        "data": seq.name,
        "period": seq.period,
        "group": args.group,
        "order": "agg_first",
        "model": {"in_dim": config.in_dim, "hidden_dim": config.hidden_dim},
        "warmup": args.warmup,
        "repeat": args.repeat,
        "threads": args.threads,
        "ranks": world,
        "links": {k: detail for k, (_, detail) in links.items()},
    }
    profile = snapshot_profile(
        samples,
        links["intra"][0],
        links["inter"][0],
        name=Path(args.output).stem,
        device=name,
        compute="gpu" if gpu else "cpu",
        cpu_cores=job_cores(),
        note=note,
        meta=meta,
        bandwidth=bandwidth,
    )
    correlation = profile.meta["snapshots"]["vertex_edge_correlation"]
    if correlation is not None and abs(correlation) > _COLLINEAR:
        profile = dataclasses.replace(
            profile,
            note=f"{note} The snapshots' vertices and edges move together (correlation "
            f"{correlation:.3f}): the split between per_vertex and per_edge is not "
            "determined by this data; trust the fit for snapshots shaped like these only.",
        )
    profile = _with_allreduce(profile, allreduce, None, world, nodes)
    _save(profile, args.output)

    print(
        f"{name} ({device.type}), {args.threads} thread(s), {seq.name}: "
        f"{len(samples.sizes)} training snapshots x {args.repeat} epoch(s) x {world} rank(s) "
        f"after {args.warmup} warm-up epoch(s)"
    )
    fits = profile.meta["fit"]
    rows = []
    for op, c in profile.ops.items():
        fit = fits.get(op)
        rows.append(
            [
                op,
                f"{c.median * 1e3:.4f}",
                f"{c.per_vertex * 1e9:.2f}",
                f"{c.per_edge * 1e9:.2f}",
                f"{c.bytes:,}",
                "-" if fit is None or fit["r2"] is None else f"{fit['r2']:.3f}",
                "-" if fit is None else f"{fit['median_relative_error'] * 100:.1f}%",
            ]
        )
    print_table(rows, ["op", "median ms", "ns/vertex", "ns/edge", "bytes", "R^2", "med err"])
    _print_tail(profile, links, args.output)


def _run(args: argparse.Namespace) -> None:
    from tgpipe.executor.launch import check_device, run_ranks

    def check() -> None:
        check_device(args.device, args.nproc)
        if args.workload == "snapshot":
            _sequence(args)
        else:
            _stream(args, "cpu")

    run_ranks(args.nproc, lambda: _rank_main(args), check)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure every op's cost and the links between ranks: a measured CostProfile",
        description="Time each op of TGN training (the code 'tgpipe run' runs) on real "
        "batches of the data, in training order after warm-up batches: median and spread "
        "(median absolute deviation) per op, and the bytes it moves. On a CPU the ops run "
        "inside the runtime itself (one rank: the sequential schedule; several: data "
        "parallel over all of them; lane threads and all), and an "
        "op's time includes the runtime's pause before it. With several ranks, "
        "also the latency and bandwidth between them (ping-pong) and the gradient "
        "all-reduce; on CPU ranks of one machine, what a learner handed on and an all-reduce "
        "cost the ops on a rank's core. Writes a CostProfile for 'tgpipe simulate --profile' "
        "and 'tgpipe search --profile'. With --workload snapshot, the ops of the snapshot "
        "model (GCN + GRU) on each training snapshot, each op's cost fitted as a fixed part "
        "plus a part per vertex and per edge of a snapshot.",
    )
    add_data_args(p, snapshots=True)
    add_workload_args(p)
    add_device_arg(p, "NCCL all-reduce; ops timed one by one with the GPU synchronized")
    p.add_argument(
        "--warmup",
        type=nonnegative_int,
        default=None,
        help="batches run first and not counted (default: 5); snapshot: epochs (default: 1)",
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=None,
        help="batches measured, also all-reduces timed (default: 50); snapshot: epochs "
        "measured (default: 5)",
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=2,
        help="local ranks to start; 1 measures no link between ranks (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads per rank (default: %(default)s)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=output_file,
        default="profile.json",
        metavar="FILE",
        help="the profile to write (default: %(default)s)",
    )
    p.set_defaults(func=_run)
