"""What a rank does first: it keeps the memory a batch frees for the next one (glibc only),
and it takes a GPU only where there is one for each rank of its machine."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.launch import check_device, rank_device

_PROBE = """
import ctypes, ctypes.util, sys, threading
from tgpipe.executor.launch import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
def resident():
    return int(open("/proc/self/statm").read().split()[1])  # pages
def released():
    size = 64 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touched: resident
    before = resident()
    libc.free(ctypes.c_void_p(block))
    print(kept, before - resident())
if sys.argv[2] == "thread":  # a lane's or a receiver's
    t = threading.Thread(target=released)
    t.start()
    t.join()
else:
    released()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_freed_block_stays_with_the_rank_instead_of_going_back_to_the_system(where):
    def released(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, mode, where], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    pages = 64 * 2**20 // 4096
    assert released("default")[1] >= pages * 0.9  # glibc unmaps a 64 MiB block at once
    kept, freed = released("keep")
    assert kept == "True" and freed < pages * 0.1  # kept for the next batch


def test_a_gpu_run_needs_a_gpu_for_each_rank_of_its_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda", 1)
    check_device("cpu", 4)  # no GPU asked for
    with pytest.raises(InputError, match="2 ranks on this machine need a GPU each but it has 1"):
        check_device("cuda", 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as torchrun starts a rank
    with pytest.raises(InputError, match="start at most 1 here"):
        rank_device("cuda")
    assert rank_device("cpu") == torch.device("cpu")
