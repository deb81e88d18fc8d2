"""The `tgpipe` command line: one subcommand per job, `--help` on each.

Each part registers its own subcommands (`register(sub)` in ``dag/cli.py``,
``simulator/cli.py``, ...), listed in `COMMAND_MODULES`; this module holds what they share.
A user's mistake (bad file, unknown name, impossible number) prints one line on stderr and
exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tgpipe import __version__
from tgpipe.errors import InputError

__all__ = ["COMMAND_MODULES", "Parser", "add_profile_arg", "main", "positive_int"]

#: Modules that define subcommands, each with ``register(subparsers)``.
COMMAND_MODULES = (
    "tgpipe.dag.cli",
    "tgpipe.simulator.cli",
    "tgpipe.schedules.cli",
    "tgpipe.gantt_cli",
    "tgpipe.executor.cli",
    "tgpipe.executor.run_cli",
)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        default="gpu-illustrative",
        metavar="NAME|FILE",
        help="built-in profile name or CostProfile JSON file "
        "(default: %(default)s; see 'tgpipe profiles')",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tgpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tgpipe {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
