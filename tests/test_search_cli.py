"""`tgpipe search` as a user meets it."""

import subprocess
import sys
from pathlib import Path

from tgpipe.schedules import Schedule, validate


def tgpipe(*args):
    return subprocess.run([sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True)


def test_search_writes_a_schedule_that_runs(tmp_path):
    out = tmp_path / "best.schedule"
    r = tgpipe(
        "search",
        "--gpus",
        "2",
        "--batches",
        "60",
        "-o",
        str(out),
        "--gantt",
        str(tmp_path / "best.html"),
    )
    assert r.returncode == 0, r.stderr
    assert "Pareto front" in r.stdout and "best family" in r.stdout and "found" in r.stdout
    assert "candidates" in r.stderr  # the progress bar
    validate(Schedule.load(out))
    assert (tmp_path / "best.html").stat().st_size > 100_000


def test_bad_budget_is_one_line(tmp_path):
    out = tmp_path / "best.schedule"
    r = tgpipe("search", "--max-weight-staleness", "-2", "-o", str(out))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "tgpipe search: error: weight staleness budget must be >= 0, got -2"
    ]
    assert not out.exists()


def test_search_names_the_faster_schedule_it_passed_over():
    """Within the margin the less stale schedule is the answer, and the search says which
    faster one it passed over; with --margin 0 the faster one is the answer."""
    profile = str(Path(__file__).with_name("wikipedia-cpu-profile.json"))
    common = ("search", "--profile", profile, "--gpus", "2", "--batches", "35")
    r = tgpipe(*common)
    assert r.returncode == 0, r.stderr
    found = next(line for line in r.stdout.splitlines() if line.startswith("found"))
    assert "pipetgl(2)" in found
    assert "pipeline(W=2,s=(0,1,2)" in r.stdout and "within the 5 % margin" in r.stdout
    r = tgpipe(*common, "--margin", "0%")
    assert r.returncode == 0, r.stderr
    found = next(line for line in r.stdout.splitlines() if line.startswith("found"))
    assert "pipeline(W=2,s=(0,1,2)" in found and "margin:" not in r.stdout
