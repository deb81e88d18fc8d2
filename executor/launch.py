"""Starting a distributed run: local ranks spawned here, or ranks started by torchrun.

`tgpipe run --nproc N` starts N copies of itself with the environment that torchrun gives a
rank (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so one code path serves both:
under torchrun (one machine or several) each process finds those variables and runs its
rank. The launcher watches its children: when one fails, it stops the others rather than
leave them waiting forever, and exits with the failed child's status.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = ["free_port", "run_ranks", "spawn", "under_launcher"]


def under_launcher() -> bool:
    """True in a process that torchrun (or `spawn`) started as one rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def run_ranks(nproc: int, rank_main: Callable[[], None], check: Callable[[], None]) -> None:
    """The body of a command that runs on ranks: under a launcher, this process's rank;
    started by hand, `check` (refuse bad input before any rank starts), then `nproc` local
    ranks of this same command line, exiting with their status."""
    if under_launcher():
        rank_main()
        return
    check()
    status = spawn(sys.argv[1:], nproc)
    if status:
        raise SystemExit(status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], nproc: int, grace: float = 10.0) -> int:
    """Run ``python -m tgpipe <argv>`` as `nproc` local ranks; the exit status of the run."""
    port = free_port()
    children = []
    for rank in range(nproc):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(nproc),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        children.append(subprocess.Popen([sys.executable, "-m", "tgpipe", *argv], env=env))
    ranks = {child: rank for rank, child in enumerate(children)}
    status = 0
    try:
        while children:
            for child in list(children):
                code = child.poll()
                if code is None:
                    continue
                children.remove(child)
                if code and not status:
                    status = code if code > 0 else 1
                    if children:
                        how = (
                            f"was killed by {signal.Signals(-code).name}"
                            if code < 0
                            else (f"failed (exit status {code})")
                        )
                        rank = ranks[child]
                        print(
                            f"tgpipe run: rank {rank} {how}; stopping the other ranks",
                            file=sys.stderr,
                            flush=True,
                        )
                    _stop(children, grace)
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(children, grace)
        return 130
    return status


def _stop(children: list[subprocess.Popen], grace: float) -> None:
    """Ask the others to stop; kill those that do not within `grace` seconds."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
