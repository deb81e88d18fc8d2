"""tgpipe profile --workload snapshot: a cost line per op, fitted to real snapshot timings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tgpipe.dag import load_profile
from tgpipe.dag.ops import SNAPSHOT_OPS
from tgpipe.executor.snapshot_profiler import (
    fit_costs,
    nnls,
    relative_errors,
    vertex_edge_correlation,
)


def tgpipe_profile(folder, *args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "tgpipe", "profile", "--workload", "snapshot", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


# ---- the fitter: a pure function ------------------------------------------------------------
def test_the_fit_recovers_known_coefficients_through_noise():
    rng = np.random.default_rng(0)
    sizes = [
        (int(v), int(e))
        for v, e in zip(rng.integers(100, 5000, 40), rng.integers(50, 20000, 40), strict=True)
    ]
    true = (3e-4, 2e-7, 5e-8)
    samples = [
        list((true[0] + true[1] * v + true[2] * e) * rng.lognormal(0.0, 0.03, 7)) for v, e in sizes
    ]
    fit = fit_costs(sizes, samples)
    assert fit.median == pytest.approx(true[0], rel=0.1)
    assert fit.per_vertex == pytest.approx(true[1], rel=0.1)
    assert fit.per_edge == pytest.approx(true[2], rel=0.1)
    assert fit.r2 > 0.98 and fit.median_relative_error < 0.03 and fit.points == 40
    assert 0 < fit.spread < 1e-4


def test_the_fit_never_goes_negative():
    sizes = [(v, 10 * v) for v in range(100, 1100, 100)]
    falling = [[1e-3 - 5e-7 * v] for v, _ in sizes]  # a cost that falls with size: noise
    fit = fit_costs(sizes, falling)
    assert min(fit.median, fit.per_vertex, fit.per_edge) >= 0
    assert fit.per_vertex == fit.per_edge == 0 and fit.median == pytest.approx(np.mean(falling))


def test_nnls_matches_unconstrained_least_squares_when_that_is_non_negative():
    rng = np.random.default_rng(1)
    a = np.column_stack([np.ones(20), rng.uniform(0, 1e4, 20), rng.uniform(0, 1e5, 20)])
    b = a @ np.array([1e-3, 2e-6, 3e-8]) + rng.normal(0, 1e-5, 20)
    assert np.allclose(nnls(a, b), np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-6)


def test_a_fit_of_equal_snapshots_has_no_r2_and_collinear_sizes_are_flagged():
    fit = fit_costs([(10, 20)] * 3, [[1e-3], [1e-3], [1e-3]])
    assert fit.r2 is None and fit.seconds(10, 20) == pytest.approx(1e-3)
    assert vertex_edge_correlation([(1, 2), (2, 4), (3, 6)]) == pytest.approx(1.0)
    assert vertex_edge_correlation([(1, 2)] * 3) is None


# ---- the command ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One real run of the command on 2 gloo ranks over a synthetic skewed sequence."""
    folder = tmp_path_factory.mktemp("snapshot-profile")
    r = tgpipe_profile(folder, "--data", "skewed:12", "--nproc", "2", "-o", "p.json")
    return r, folder / "p.json"


def test_the_command_writes_a_snapshot_profile_that_loads(measured):
    r, path = measured
    p = load_profile(path)
    assert p.to_dict() == json.loads(path.read_text())
    assert p.workload == "snapshot" and p.source == "measured" and p.compute == "cpu"
    assert list(p.ops) == list(SNAPSHOT_OPS) and p.batch_size == 1
    assert "tgpipe profile --workload snapshot" in p.note and "1.0" in p.note
    sizes = p.meta["snapshots"]["sizes"]
    assert len(sizes) == 7  # 12 snapshots: 8 train, so 7 training positions
    for op, cost in p.ops.items():
        assert cost.compute == cost.memory == 1.0, op
        assert all(cost.seconds(v, e) > 0 for v, e in sizes), op
    assert p.ops["GRAD_SYNC"].bytes > 0 and p.ops["STEP"].bytes > p.ops["GRAD_SYNC"].bytes
    assert p.meta["allreduce"]["ranks"] == 2 and p.meta["allreduce"]["median"] > 0
    assert "rank 0 with rank 1 over gloo" in p.meta["links"]["intra"]["how"]
    assert all(op in r.stdout for op in SNAPSHOT_OPS) and "wrote profile p.json" in r.stdout


def test_the_fitted_lines_predict_the_measured_medians(measured):
    p = load_profile(measured[1])
    for op, errors in relative_errors(p).items():
        assert max(errors) < 2.0, (op, errors)  # within a factor of 3 on every snapshot
        assert p.meta["fit"][op]["points"] == len(errors)
        assert p.meta["fit"][op]["median_relative_error"] == pytest.approx(
            float(np.median(errors)), rel=1e-3, abs=1e-5
        )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "skewed:x"], "skewed:N"),
        (["--data", "skewed:12", "--period", "0"], "--period"),
        (["--data", "skewed:12", "--limit-events", "100"], "--limit-events"),
        (["--data", "skewed:5"], "training position"),
    ],
)
def test_bad_input_is_one_line_and_status_2_with_no_file(tmp_path, args, words):
    r = tgpipe_profile(tmp_path, *args, "--nproc", "1", "-o", "bad.json", check=False)
    assert r.returncode == 2 and words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "bad.json").exists()
