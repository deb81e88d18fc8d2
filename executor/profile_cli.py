"""Subcommand `tgpipe profile`: measure a `CostProfile` on this machine.

Started by hand it spawns --nproc local ranks the way `tgpipe run` does; under torchrun each
process is one rank (several machines: rank 0 also measures the link to another machine).
Every rank times the ops on real batches at once, as in a run, where every rank computes and
they compete for the machine's cores and memory; rank 0 pools the samples. Then every rank
joins the gradient all-reduce and the ping-pongs (see `tgpipe.executor.profiler`), and
rank 0 writes the profile (``compute`` says whether the ops ran on a CPU or a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from pathlib import Path

from tgpipe.cli import add_data_args, nonnegative_int, output_file, positive_int
from tgpipe.errors import InputError

__all__ = ["register"]

#: Seconds a rank waits for a peer before giving up: the other ranks wait while rank 0
#: times the ops, which may take long with many --repeat on large data.
_TIMEOUT = 1800.0


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


def _check_device(args: argparse.Namespace) -> None:
    """--device cuda needs a GPU, and a GPU for each local rank."""
    import torch

    if args.device != "cuda":
        return
    if not torch.cuda.is_available():
        raise InputError(
            f"--device cuda: this torch ({torch.__version__}) sees no CUDA GPU here; "
            "use --device cpu"
        )
    count = torch.cuda.device_count()
    if args.nproc > count:
        raise InputError(
            f"--nproc {args.nproc} needs a GPU per rank but this machine has {count}: "
            f"use --nproc {count} (or torchrun across machines)"
        )


def _rank_main(args: argparse.Namespace) -> None:
    """The body of one rank (started by `tgpipe profile --nproc` or by torchrun)."""
    import torch
    import torch.distributed as dist

    from tgpipe.executor.profiler import measure_links, measure_ops, time_allreduce
    from tgpipe.progress import Progress

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    stream, config = _stream(args, device)
    timeout = datetime.timedelta(seconds=_TIMEOUT)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    try:
        alone = [dist.new_group([r], backend=backend, timeout=timeout) for r in range(world)]
        nodes = [0] * world
        dist.all_gather_object(nodes, int(os.environ.get("GROUP_RANK", 0)))
        total = args.warmup + args.repeat
        with Progress(
            total, "profile ops", "batch", stream=sys.stderr if rank == 0 else None
        ) as bar:
            samples = measure_ops(
                stream, config, args.warmup, args.repeat, group=alone[rank], progress=bar
            )
        pooled = [None] * world if rank == 0 else None
        dist.gather_object(samples.seconds, pooled)  # every rank's samples, as they ran together
        if rank == 0:
            for other in pooled[1:]:
                for op, seconds in other.items():
                    samples.seconds[op].extend(seconds)
        allreduce = None
        if world > 1:
            allreduce = time_allreduce(samples.grads, args.warmup, args.repeat, stream)
        links = measure_links(nodes, device)
        if rank == 0:
            _write(args, stream, device, world, nodes, samples, allreduce, links)
    finally:
        dist.destroy_process_group()


def _write(args, stream, device, world, nodes, samples, allreduce, links) -> None:
    """Rank 0: the profile, checked, written, read back, and printed as a table."""
    from tgpipe.dag.ops import OPS
    from tgpipe.dag.profile import CostProfile, OpCost, load_profile
    from tgpipe.executor.profiler import cpu_cores, device_name, median_spread
    from tgpipe.executor.stream import TRAIN
    from tgpipe.simulator.cli import print_table

    costs = samples.costs()
    graph = stream.graph
    name = device_name(device)
    note = (
        f"Measured by 'tgpipe profile' on {name} ({device.type}, {args.threads} torch "
        f"thread(s) per rank), data {graph.name} ({graph.n_events:,} events), batches of "
        f"{args.batch_size}: each op's median and median absolute deviation over "
        f"{args.repeat} training batches run in order after {args.warmup} warm-up batches. "
        "GRAD_SYNC's median is its local overhead; its messages are costed from the link. "
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
        cpu_cores=cpu_cores(),
        batch_size=args.batch_size,
        note=note,
        meta=meta,
        compute=device.type,
    )
    if allreduce:
        median, spread = median_spread(allreduce)
        across = len(set(nodes)) > 1
        meta["allreduce"] = {
            "ranks": world,
            "bytes": profile.ops["GRAD_SYNC"].bytes,
            "median": median,
            "spread": spread,
            "predicted": profile.cost("GRAD_SYNC", world, inter=across),
        }
    profile = dataclasses.replace(profile, meta=meta)
    CostProfile.from_dict(profile.to_dict(), args.output)  # never write a profile that fails
    profile.save(args.output)
    if load_profile(args.output).to_dict() != profile.to_dict():  # pragma: no cover - a bug
        raise RuntimeError(f"{args.output} does not read back as written")

    print(
        f"{name} ({device.type}), {args.threads} thread(s), {graph.name}: "
        f"{args.repeat} batches of {args.batch_size} after {args.warmup} warm-up"
    )
    rows = [
        [op, f"{c.median * 1e3:.3f}", f"{c.spread * 1e3:.3f}", f"{c.bytes:,}"]
        for op, c in profile.ops.items()
    ]
    print_table(rows, ["op", "median ms", "± ms", "bytes"])
    print()
    rows = [
        [kind, f"{link.latency * 1e6:.1f}", f"{link.bandwidth / 1e9:.3f}", links[kind][1]["how"]]
        for kind, link in (("intra", profile.intra), ("inter", profile.inter))
    ]
    print_table(rows, ["link", "latency us", "GB/s", "how"])
    if allreduce:
        a = meta["allreduce"]
        print(
            f"\nall-reduce of {a['bytes']:,} bytes of gradients on {world} ranks: "
            f"{a['median'] * 1e3:.3f} ± {a['spread'] * 1e3:.3f} ms measured, "
            f"{a['predicted'] * 1e3:.3f} ms by the profile"
        )
    print(f"wrote profile {args.output}")


def _run(args: argparse.Namespace) -> None:
    from tgpipe.executor.launch import run_ranks

    def check() -> None:
        _check_device(args)
        _stream(args, "cpu")

    run_ranks(args.nproc, lambda: _rank_main(args), check)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure every op's cost and the links between ranks: a measured CostProfile",
        description="Time each op of TGN training (the code 'tgpipe run' runs) on real "
        "batches of the data, in training order after warm-up batches: median and spread "
        "(median absolute deviation) per op, and the bytes it moves. With several ranks, "
        "also the latency and bandwidth between them (ping-pong) and the gradient "
        "all-reduce. Writes a CostProfile for 'tgpipe simulate --profile' and 'tgpipe search "
        "--profile'.",
    )
    add_data_args(p)
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the ops run: gloo ranks on the CPU, or NCCL ranks, one per GPU "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=nonnegative_int,
        default=5,
        help="batches run first and not counted (default: %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=50,
        help="batches measured, also all-reduces timed (default: %(default)s)",
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
