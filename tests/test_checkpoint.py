"""Checkpoints: a killed run, resumed, ends exactly where the uninterrupted run ends.

MSPipe's schedule is used because its stale memory reads need the store's undo records
across a cut, and its synchronous groups must not be split by one; the PipeTGL ring's
because its learners are handed on, adopted and shared across one.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.checkpoint import MANIFEST, Checkpoints

RUN = ["--limit-events", "6000", "--batch-size", "300", "--epochs", "2"]
RUN += ["--no-evaluate", "--timeout", "30", "--nproc", "2"]


def _tgpipe(data, *extra, schedule="mspipe", env=None, check=True):
    cmd = [sys.executable, "-m", "tgpipe", "run", "--data", str(data), "--schedule", schedule]
    cmd += [*RUN, *extra]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def _state(prefix, rank):
    return torch.load(f"{prefix}.rank{rank}")


def _assert_same_end(a, b):
    for rank in (0, 1):
        x, y = _state(a, rank), _state(b, rank)
        assert all(torch.equal(s, t) for s, t in zip(x["table"], y["table"], strict=True))
        assert torch.equal(x["learner"], y["learner"])
    assert _state(a, 0)["losses"] == _state(b, 0)["losses"]


@pytest.fixture(scope="module")
def whole(wikipedia_csv, tmp_path_factory):
    """The uninterrupted run of a schedule (made once per module)."""
    done = {}

    def run(schedule="mspipe"):
        if schedule not in done:
            done[schedule] = tmp_path_factory.mktemp("whole") / "state"
            _tgpipe(wikipedia_csv, "--dump", str(done[schedule]), schedule=schedule)
        return done[schedule]

    return run


@pytest.mark.parametrize("schedule", ["mspipe", "pipetgl"])
def test_killed_while_writing_a_checkpoint_resumes_exactly(
    wikipedia_csv, tmp_path, whole, schedule
):
    ck = tmp_path / "ck"
    died = _tgpipe(
        wikipedia_csv,
        "--checkpoint",
        str(ck),
        "--checkpoint-every",
        "4",
        schedule=schedule,
        env={"TGPIPE_TEST_DIE_IN_CHECKPOINT": "1:8"},  # rank 0 dies half-way through its file
        check=False,
    )
    assert died.returncode != 0
    assert json.loads((ck / MANIFEST).read_text())["batch"] == 4  # the half-written one is not
    resumed = _tgpipe(
        wikipedia_csv, "--checkpoint", str(ck), "--checkpoint-every", "4", "--resume",
        "--dump", str(tmp_path / "state"), schedule=schedule,
    )  # fmt: skip
    assert "resuming at epoch 1, batch 4" in resumed.stdout
    assert "epoch 0:" not in resumed.stdout
    _assert_same_end(whole(schedule), tmp_path / "state")


def test_killed_mid_epoch_resumes_exactly(wikipedia_csv, tmp_path, whole):
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "tgpipe", "run", "--data", str(wikipedia_csv), *RUN]
    cmd += ["--schedule", "mspipe"]
    proc = subprocess.Popen(
        [*cmd, "--checkpoint", str(ck), "--checkpoint-every", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ck / MANIFEST).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank, at once
    finally:
        proc.wait()
    position = json.loads((ck / MANIFEST).read_text())
    assert (position["epoch"], position["batch"]) < (1, 14)  # killed before the end
    _tgpipe(
        wikipedia_csv, "--checkpoint", str(ck), "--checkpoint-every", "2", "--resume",
        "--dump", str(tmp_path / "state"),
    )  # fmt: skip
    _assert_same_end(whole(), tmp_path / "state")


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    meta = {"schedule": "mspipe(2,k=2)", "world": 2, "batches": 14}
    (tmp_path / MANIFEST).write_text(json.dumps({"epoch": 0, "batch": 4, "run": meta}))
    assert Checkpoints(tmp_path, meta).latest() == (0, 4)
    with pytest.raises(InputError, match="of another run"):
        Checkpoints(tmp_path, {**meta, "batches": 7}).latest()
    assert Checkpoints(tmp_path / "empty", meta).latest() is None
