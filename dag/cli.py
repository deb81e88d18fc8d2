"""Subcommands `tgpipe profiles` and `tgpipe dag`."""

from __future__ import annotations

import argparse

from tgpipe.cli import add_machine_args, add_profile_arg, output_file, positive_int
from tgpipe.dag.bounds import MEMORY_BACKENDS, lower_bound
from tgpipe.dag.build import EDGE_KINDS, build_dag, count_by_kind, critical_path, save_dag
from tgpipe.dag.profile import builtin_profiles, load_profile
from tgpipe.dag.semantics import PRESETS, Semantics

__all__ = ["register"]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _profiles(args: argparse.Namespace) -> None:
    for name in builtin_profiles():
        p = load_profile(name)
        print(f"{name:<24} {p.source:<13} {p.device}")


def _dag(args: argparse.Namespace) -> None:
    profile = load_profile(args.profile)
    semantics = Semantics.parse(args.semantics, args.gpus)
    G = build_dag(profile, semantics, args.batches)
    nodes, edges = count_by_kind(G)
    length, path = critical_path(G)
    bound = lower_bound(
        profile, semantics, args.gpus, gpus_per_machine=args.gpus_per_machine, memory=args.memory
    )
    shown = path if len(path) <= 8 else [*path[:4], "...", *path[-3:]]
    print(f"profile        {profile.name} ({profile.source}: {profile.device})")
    print(
        f"semantics      {args.semantics} on {args.gpus} GPU(s) {semantics}, "
        f"memory backend {args.memory}"
    )
    print(
        f"nodes          {G.number_of_nodes()}  "
        + ", ".join(f"{op} {n}" for op, n in nodes.items())
    )
    print(
        f"edges          {G.number_of_edges()}  "
        + ", ".join(f"{kind} {edges.get(kind, 0)}" for kind in EDGE_KINDS)
    )
    print(f"critical path  {ms(length)} over {len(path)} ops: {' -> '.join(shown)}")
    print(f"bound          {bound.describe()}")
    print(f"  cycle        {ms(bound.cycle)}/batch")
    for kind, value in sorted(bound.resources.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<12} {ms(value)}/batch")
    print(
        f"epoch bound    {bound.per_batch * args.batches:.3f} s for {args.batches} batches "
        f"({profile.batch_size / bound.per_batch:,.0f} events/s at most)"
    )
    if args.out:
        save_dag(G, args.out)
        print(f"wrote          {args.out}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profiles",
        help="list the built-in cost profiles",
        description="List the cost profiles shipped with tgpipe.",
    )
    p.set_defaults(func=_profiles)

    p = sub.add_parser(
        "dag",
        help="build the runtime-analysis DAG and its lower bound",
        description="Build the DAG of M-TGNN training for some batches; print node and edge "
        "counts by kind, the critical path, and the lower bound per batch with what sets it.",
    )
    add_profile_arg(p)
    p.add_argument(
        "--semantics",
        default="pipetgl",
        metavar="NAME|S_MEM,S_W,G",
        help=f"one of {', '.join(PRESETS)} (mspipe:K for staleness bound K), or "
        "three integers (default: %(default)s)",
    )
    add_machine_args(p)
    p.add_argument(
        "--batches",
        type=positive_int,
        default=262,
        help="batches to unroll (default: %(default)s, one wikipedia epoch)",
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_BACKENDS,
        default="host",
        help="how memory moves between ranks (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=output_file,
        metavar="FILE",
        help="write the DAG: .graphml for GraphML, anything else node-link JSON",
    )
    p.set_defaults(func=_dag)
