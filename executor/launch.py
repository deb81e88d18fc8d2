"""Starting a distributed run: local ranks spawned here, or ranks started by torchrun.

`tgpipe run --nproc N` starts N copies of itself with the environment that torchrun gives a
rank (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so one code path serves both:
under torchrun (one machine or several) each process finds those variables and runs its
rank. The launcher watches its children: when one fails, it stops the others rather than
leave them waiting forever, and exits with the failed child's status.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from tgpipe.errors import InputError

__all__ = [
    "check_device",
    "collective_backend",
    "free_port",
    "job_cores",
    "keep_freed_memory",
    "pin_rank",
    "prepare_rank",
    "rank_device",
    "run_ranks",
    "spawn",
    "under_launcher",
]

#: Set in the ranks that `spawn` starts (all of this machine's ranks: they may be pinned),
#: to the number of cores the launcher could use.
_SPAWNED = "TGPIPE_SPAWNED"


def job_cores() -> int:
    """CPU cores this machine's ranks share: those the launcher that spawned them could use
    (a spawned rank may be pinned to fewer), else this process's own (its affinity, not
    the machine's total)."""
    if os.environ.get(_SPAWNED, "").isdigit():
        return int(os.environ[_SPAWNED])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


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


def pin_rank(threads: int) -> list[int] | None:
    """Keep a rank that `spawn` started on cores of its own, `threads` of them: the
    LOCAL_RANK-th slice of the cores it may use, if all local ranks fit (else, or under
    torchrun, which knows the machine better, no pinning: None). A process whose threads
    hop between cores finds its caches cold: on this 2-core machine a sequential rank ran
    4-17 % slower unpinned (three runs side by side)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    local = int(os.environ.get("LOCAL_RANK", 0))
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if not cores or _SPAWNED not in os.environ or ranks * threads > len(cores):
        return None
    mine = cores[local * threads : (local + 1) * threads]
    os.sched_setaffinity(0, mine)
    return mine


#: glibc's `mallopt` parameters (malloc.h): the free memory at a heap's top above which it
#: is given back to the system, the size above which a block gets a mapping of its own, and
#: how many arenas (heaps that threads allocate from) there may be.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Bytes, for both: more than any tensor of a batch, and than what a batch frees at once.
KEEP_BYTES = 2**30


def keep_freed_memory() -> bool:
    """Keep the memory that a batch frees for the next batch, in this process (a rank).

    By default glibc gives large freed blocks back to the system: a block over 128 KiB has
    a mapping of its own, unmapped when freed, and a heap's free top is trimmed. The next
    batch's tensors then fault their pages in again, zeroed. On wikipedia (first 30,000
    events, 2 ranks, two pairs of runs) keeping them took pipetgl(2)'s FWD from 11.3-11.5 to
    8.2-8.6 ms and its BWD from 23.5-24.0 to 20.4-20.6 ms, and data parallel's FWD from
    9.5-9.9 to 8.4-8.6 ms.

    Those two settings hold for the main thread's heap only: every other thread (a lane, a
    receiver) allocates from an arena of its own, whose heaps hold at most 64 MiB, so a
    large block gets a mapping of its own there whatever the threshold, unmapped when
    freed (`tests/test_launch.py` frees 64 MiB in a thread). So a rank keeps one arena for
    all its threads: in a pipetgl(2) epoch on wikipedia its compute lane then faulted
    140-810 pages in instead of 7,100-12,800, and its weight receiver 3 instead of
    3,100-4,600 (17 learners of 2.6 MB), whose CPU time halved; epoch times, side by side
    with and without, moved less than this machine's noise. The price is that a rank keeps
    its peak heap until it ends, and its threads share one arena's lock.
    False (and nothing changed) where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    kept = all(mallopt(p, KEEP_BYTES) == 1 for p in (_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD))
    return kept and mallopt(_M_ARENA_MAX, 1) == 1


def prepare_rank(threads: int, device: str = "cpu"):
    """What every rank does first, before torch starts threads or a batch's tensors: its
    device (`rank_device`, returned), its cores (`pin_rank`; not on a GPU, where the rank's
    lanes, receivers and NCCL's threads mostly wait for the GPU, and pinned to `threads`
    cores would queue behind each other), its freed memory kept (`keep_freed_memory`), its
    torch threads."""
    import torch

    here = rank_device(device)
    if here.type == "cpu":
        pin_rank(threads)
    keep_freed_memory()
    torch.set_num_threads(threads)
    return here


def check_device(device: str, local_ranks: int) -> None:
    """Refuse ``--device cuda`` where this torch sees no GPU, or fewer GPUs than the
    `local_ranks` of this machine (one GPU per rank: NCCL takes no two ranks on one GPU)."""
    import torch

    if device != "cuda":
        return
    if not torch.cuda.is_available():
        raise InputError(
            f"--device cuda: this torch ({torch.__version__}) sees no CUDA GPU here; "
            "use --device cpu"
        )
    count = torch.cuda.device_count()
    if local_ranks > count:
        raise InputError(
            f"{local_ranks} ranks on this machine need a GPU each but it has {count}: start "
            f"at most {count} here (--nproc, or torchrun's --nproc-per-node)"
        )


def collective_backend(device) -> str:
    """The torch.distributed backend of a collective over tensors on `device`."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def rank_device(device: str):
    """The torch device of this rank for ``--device cpu|cuda``: on a GPU machine the
    LOCAL_RANK-th GPU, made the process's current one (checked as `check_device` does)."""
    import torch

    if device != "cuda":
        return torch.device("cpu")
    check_device(device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(gpu)
    return gpu


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
            **{_SPAWNED: str(job_cores())},
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
