"""A rank killed mid-epoch: the others stop within 60 s with a line that names it, never hang.

Killed for real (SIGKILL): one rank of a 3-rank local run (the launcher notices), and a
whole "machine" of a torchrun --nnodes 2 run on loopback (the survivor's watchdog notices;
no launcher on its side knows anything).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tgpipe.executor.launch import free_port, job_cores, pin_rank
from tgpipe.executor.watchdog import LOST_STATUS

LIMIT = 60


def _args(data):
    return [
        "-m",
        "tgpipe",
        "run",
        "--data",
        str(data),
        "--limit-events",
        "30000",
        "--epochs",
        "50",
        "--no-evaluate",
    ]


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun starts its workers in sessions of their own)."""
    return [pid, *(q for child in _children(pid) for q in _tree(child))]


def _wait_for_epoch(proc: subprocess.Popen) -> None:
    """Read the run's output until training is under way."""
    for line in proc.stdout:
        if line.startswith("epoch 0:"):
            return
    raise AssertionError(f"the run ended before training: {proc.stderr.read()[-2000:]}")


def test_local_run_stops_when_a_rank_is_killed(wikipedia_csv):
    proc = subprocess.Popen(
        [sys.executable, *_args(wikipedia_csv), "--nproc", "3", "--schedule", "pipetgl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_epoch(proc)
        victim = next(p for p in _children(proc.pid) if _rank_of(p) == 2)
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        _, err = proc.communicate(timeout=LIMIT)
        assert time.monotonic() - start < LIMIT
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "tgpipe run: rank 2 was killed by SIGKILL; stopping the other ranks" in err
    assert not _children(proc.pid)


def test_torchrun_survivor_names_the_lost_machine(wikipedia_csv):
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={node}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                *_args(wikipedia_csv),
                "--schedule",
                "pipetgl",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        _wait_for_epoch(nodes[0])
        for pid in _tree(nodes[1].pid):  # the second machine goes away, all of it at once
            os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        _, err = nodes[0].communicate(timeout=LIMIT)
        assert time.monotonic() - start < LIMIT
    finally:
        for p in nodes:
            for pid in _tree(p.pid) if p.poll() is None else []:
                os.kill(pid, signal.SIGKILL)
    assert nodes[0].returncode != 0
    assert "tgpipe run: rank 1 was lost: no sign of life" in err, err[-2000:]
    assert re.search(rf"exitcode\s*:\s*{LOST_STATUS}\b", err), err[-2000:]  # the watchdog's exit


def test_a_spawned_rank_is_pinned_to_its_own_cores(monkeypatch):
    """Ranks that `spawn` started take the LOCAL_RANK-th slice of the cores; under torchrun
    (no spawn marker), or when the ranks do not fit, nothing is pinned."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("TGPIPE_SPAWNED", raising=False)
    assert pin_rank(1) is None  # torchrun's rank: left alone
    monkeypatch.setenv("TGPIPE_SPAWNED", str(len(cores)))
    assert job_cores() == len(cores)
    assert pin_rank(len(cores)) is None  # 2 ranks of all the cores each do not fit
    try:
        assert pin_rank(1) == [cores[1]]
        assert sorted(os.sched_getaffinity(0)) == [cores[1]]
        assert job_cores() == len(cores)  # what the ranks share, not what this one may use
    finally:
        os.sched_setaffinity(0, cores)


FAIL_AT_BATCH_5 = """
import os
if os.environ.get("RANK") == "1":
    import time

    import tgpipe.executor.rank as rank

    ready = rank.RankRunner._ready

    def failing(self, op, state):
        if op == "MEM_FETCH" and state.batch == 5:
            while self.store.version < 5:  # rank 0's write of batch 4 (and its token) is in:
                time.sleep(0.01)  # this rank's receiver now waits for one that never comes
            time.sleep(0.3)
            raise RuntimeError("injected failure")
        return ready(self, op, state)

    rank.RankRunner._ready = failing
"""


def test_a_rank_whose_op_fails_ends_the_run_long_before_its_timeout(wikipedia_csv, tmp_path):
    """An op that raises on one rank of a shared-memory run: the run ends with its error,
    not after the peers' receives (memory tokens) wait out --timeout."""
    (tmp_path / "sitecustomize.py").write_text(FAIL_AT_BATCH_5)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, *_args(wikipedia_csv), "--schedule", "data_parallel", "--nproc", "2"]
        + ["--epochs", "1", "--memory", "shared", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert run.returncode != 0 and "injected failure" in run.stderr
    assert time.monotonic() - began < LIMIT  # not the 120 s a receive would wait
