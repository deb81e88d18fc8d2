"""The `tgpipe` command line: one subcommand per job, `--help` on each.

Each part registers its own subcommands (`register(sub)` in ``dag/cli.py``,
``simulator/cli.py``, ...), listed in `COMMAND_MODULES`; this module holds what they share.
A user's mistake (bad file, unknown name, impossible number, unwritable output) prints one
line on stderr and exits with status 2; nothing is written. Output paths are checked before
any work (`output_file`), and a command writes its outputs all or none at its end.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from tgpipe import __version__
from tgpipe.errors import InputError
from tgpipe.files import check_writable

__all__ = [
    "COMMAND_MODULES",
    "Parser",
    "add_machine_args",
    "add_profile_arg",
    "SNAPSHOT_DEFAULTS",
    "add_workload_args",
    "main",
    "nonnegative_int",
    "output_file",
    "positive_int",
    "positive_seconds",
    "resolve_workload",
]

#: Modules that define subcommands, each with ``register(subparsers)``.
COMMAND_MODULES = (
    "tgpipe.dag.cli",
    "tgpipe.simulator.cli",
    "tgpipe.schedules.cli",
    "tgpipe.gantt_cli",
    "tgpipe.executor.cli",
    "tgpipe.executor.run_cli",
    "tgpipe.executor.profile_cli",
    "tgpipe.executor.validate",
    "tgpipe.demo",
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


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def percent(text: str) -> float:
    """argparse type: a percentage (``5`` or ``5%``), at least 0 and under 100, as a
    fraction."""
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"expected a percentage >= 0 and < 100, got {text}")
    return value / 100


def output_file(text: str) -> str:
    """argparse type of every output option: a path where a file can be written, checked
    while the command line is read, so that no work is done for a result that cannot be
    saved."""
    try:
        check_writable(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_data_args(
    p: argparse.ArgumentParser, *, limit: bool = True, snapshots: bool = False
) -> None:
    """--data, --batch-size (and --limit-events): the data and batches of every command
    that trains, profiles or runs (`snapshots`: one that also takes --workload snapshot)."""
    more = ", or with --workload snapshot skewed[:N] or growing[:N]" if snapshots else ""
    p.add_argument(
        "--data",
        default="synthetic",
        metavar="PATH",
        help=f"a data set file or folder, or synthetic[:NODES,EVENTS]{more} (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=positive_int, default=600, help="(default: %(default)s)")
    if limit:
        p.add_argument(
            "--limit-events",
            type=positive_int,
            default=None,
            metavar="N",
            help="use only the first N events of the data",
        )


def positive_seconds(text: str) -> float:
    """argparse type of --period: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0 (time units per snapshot), got {text}"
        )
    return value


#: The snapshot workload's options and their defaults (`add_workload_args`).
SNAPSHOT_DEFAULTS = {"period": 86400.0, "group": 4}


def add_workload_args(p: argparse.ArgumentParser, *, data: bool = False) -> None:
    """--workload and the snapshot workload's --period and --group; with `data`, its own
    --data too (for commands that have no data option of their own)."""
    p.add_argument(
        "--workload",
        choices=("mtgnn", "snapshot"),
        default="mtgnn",
        help="mtgnn: a memory-based TGN over event batches; snapshot: a GCN + GRU over "
        "graph snapshots (default: %(default)s)",
    )
    g = p.add_argument_group("snapshot workload (--workload snapshot)")
    if data:
        g.add_argument(
            "--data",
            default=None,
            metavar="PATH",
            help="a data set cut into snapshots, skewed[:N] or growing[:N] (default: skewed:32)",
        )
    g.add_argument(
        "--period",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"time units per snapshot of a data file (default: {SNAPSHOT_DEFAULTS['period']:g}, "
        "a day of seconds; skewed:N and growing:N are snapshots already)",
    )
    g.add_argument(
        "--group",
        type=positive_int,
        default=None,
        metavar="N",
        help="snapshots per group, the hidden state restarting at each (default: "
        f"{SNAPSHOT_DEFAULTS['group']})",
    )


def resolve_workload(args: argparse.Namespace) -> None:
    """Fill in the snapshot options' defaults; InputError if one is given for another
    workload (it would be ignored without a word)."""
    if not hasattr(args, "workload"):
        return
    given = [f"--{k}" for k in SNAPSHOT_DEFAULTS if getattr(args, k) is not None]
    if given and args.workload != "snapshot":
        one = len(given) == 1
        raise InputError(
            f"{' and '.join(given)} {'is' if one else 'are'} for --workload snapshot: add "
            f"--workload snapshot, or leave {'it' if one else 'them'} out"
        )
    for k, default in SNAPSHOT_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, default)


def add_profile_arg(p: argparse.ArgumentParser, default: str | None = "gpu-illustrative") -> None:
    """--profile; `default` None: the workload's built-in one (see --workload)."""
    p.add_argument(
        "--profile",
        default=default,
        metavar="NAME|FILE",
        help="built-in profile name or CostProfile JSON file (default: "
        + (
            "%(default)s"
            if default
            else "gpu-illustrative, snapshot-gpu-illustrative for --workload snapshot"
        )
        + "; see 'tgpipe profiles')",
    )


def add_device_arg(p: argparse.ArgumentParser, what: str) -> None:
    """--device cpu|cuda of a command whose ranks run ops (`what` it does on a GPU)."""
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help=f"where the ops run: gloo ranks on the CPU, or one rank per GPU ({what}) "
        "(default: %(default)s)",
    )


def add_machine_args(p: argparse.ArgumentParser) -> None:
    """--gpus and --gpus-per-machine: the machine shape, for every command that needs one."""
    p.add_argument("--gpus", type=positive_int, default=4, help="ranks (default: %(default)s)")
    p.add_argument(
        "--gpus-per-machine",
        type=positive_int,
        default=None,
        metavar="N",
        help="GPUs on each machine (default: all on one machine)",
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
        resolve_workload(args)
        args.func(args)
    except InputError as exc:
        print(f"tgpipe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tgpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
