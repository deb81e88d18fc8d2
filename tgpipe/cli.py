"""The `tgpipe` command line: one subcommand per job, `--help` on each.

A user's mistake (bad file, unknown name, impossible number) prints one line on stderr and
exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import sys

from tgpipe import __version__
from tgpipe.errors import InputError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help."""

    def error(self, message: str):  # noqa: D401 - argparse's name
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        default="gpu-illustrative",
        metavar="NAME|FILE",
        help="built-in profile name or CostProfile JSON file "
        "(default: %(default)s; see 'tgpipe profiles')",
    )


def _cmd_profiles(args: argparse.Namespace) -> None:
    from tgpipe.dag import builtin_profiles, load_profile

    for name in builtin_profiles():
        p = load_profile(name)
        print(f"{name:<24} {p.source:<13} {p.device}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _cmd_dag(args: argparse.Namespace) -> None:
    from tgpipe.dag import (
        EDGE_KINDS,
        Semantics,
        build_dag,
        count_by_kind,
        critical_path,
        load_profile,
        lower_bound,
        save_dag,
    )

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
    print(f"critical path  {_ms(length)} over {len(path)} ops: {' -> '.join(shown)}")
    print(f"bound          {bound.describe()}")
    print(f"  cycle        {_ms(bound.cycle)}/batch")
    for kind, value in sorted(bound.resources.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<12} {_ms(value)}/batch")
    print(
        f"epoch bound    {bound.per_batch * args.batches:.3f} s for {args.batches} batches "
        f"({profile.batch_size / bound.per_batch:,.0f} events/s at most)"
    )
    if args.out:
        save_dag(G, args.out)
        print(f"wrote          {args.out}")


def build_parser() -> argparse.ArgumentParser:
    from tgpipe.dag import MEMORY_BACKENDS, PRESETS

    parser = _Parser(prog="tgpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tgpipe {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser(
        "profiles",
        help="list the built-in cost profiles",
        description="List the cost profiles shipped with tgpipe.",
    )
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser(
        "dag",
        help="build the runtime-analysis DAG and its lower bound",
        description="Build the DAG of M-TGNN training for some batches; print node and edge "
        "counts by kind, the critical path, and the lower bound per batch with "
        "what sets it.",
    )
    _add_profile(p)
    p.add_argument(
        "--semantics",
        default="pipetgl",
        metavar="NAME|S_MEM,S_W,G",
        help=f"one of {', '.join(PRESETS)} (mspipe:K for staleness bound K), or "
        "three integers (default: %(default)s)",
    )
    p.add_argument("--gpus", type=_positive_int, default=4, help="ranks (default: %(default)s)")
    p.add_argument(
        "--gpus-per-machine",
        type=_positive_int,
        default=None,
        metavar="N",
        help="GPUs on each machine (default: all on one machine)",
    )
    p.add_argument(
        "--batches",
        type=_positive_int,
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
        metavar="FILE",
        help="write the DAG: .graphml for GraphML, anything else node-link JSON",
    )
    p.set_defaults(func=_cmd_dag)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        print(f"tgpipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tgpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
