"""`tgpipe simulate` as a user meets it."""

import subprocess
import sys

import pytest

from tgpipe.trace import Trace


def tgpipe(*args):
    return subprocess.run([sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True)


def test_compare_prints_one_row_per_schedule(tmp_path):
    r = tgpipe(
        "simulate",
        "--batches",
        "60",
        "--compare",
        "sequential,data_parallel,mspipe",
        "--trace",
        str(tmp_path / "t.json"),
    )
    assert r.returncode == 0, r.stderr
    for name in ("pipetgl(4)", "sequential", "data_parallel(4)", "mspipe(4,k=2)"):
        assert name in r.stdout
    assert "bubble %" in r.stdout and "gap %" in r.stdout
    trace = Trace.load(tmp_path / "t.json")
    assert trace.meta["schedule"] == "pipetgl(4)" and len(trace.rows) == 60 * 9


def test_saved_schedule_runs_back_the_same(tmp_path):
    path = tmp_path / "ring.schedule"
    first = tgpipe("simulate", "--batches", "40", "--save-schedule", str(path))
    again = tgpipe("simulate", "--batches", "40", "--schedule", str(path))
    assert first.returncode == again.returncode == 0
    assert first.stdout.splitlines()[3] == again.stdout.splitlines()[3]


def test_hand_edited_schedule_is_refused_where_it_breaks(tmp_path):
    path = tmp_path / "ring.schedule"
    tgpipe("simulate", "--batches", "12", "--save-schedule", str(path))
    path.write_text(path.read_text().replace("FWD5 BWD5", "BWD5 FWD5"))
    r = tgpipe("simulate", "--schedule", str(path))
    assert r.returncode == 2
    assert "rank 1 lane gpu position" in r.stderr and "BWD5 needs FWD5" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--schedule", "ring"], "unknown schedule family 'ring'"),
        (["--gpus", "0"], "expected an integer >= 1"),
        (["--compare", "sequential,nope"], "unknown schedule family 'nope'"),
        (["--profile", "missing.json"], "no profile 'missing.json'"),
    ],
)
def test_bad_input(tmp_path, args, message):
    out = tmp_path / "t.json"
    r = tgpipe("simulate", *args, "--trace", str(out))
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()
