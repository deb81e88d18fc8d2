"""Fidelity: the CPU compute model of the simulator, and `tgpipe validate` end to end."""

import dataclasses
import json
import subprocess
import sys

import pytest

from tgpipe.dag.profile import CostProfile, load_profile
from tgpipe.errors import InputError
from tgpipe.metrics import metrics
from tgpipe.schedules.families import family
from tgpipe.simulator.sim import simulate


def _overlaps(rows):
    rows = sorted(rows, key=lambda r: r.start)
    return any(b.start < a.end - 1e-12 for a, b in zip(rows, rows[1:], strict=False))


def test_cpu_compute_runs_one_op_at_a_time_per_rank():
    gpu = load_profile("gpu-illustrative")
    cpu = dataclasses.replace(gpu, compute="cpu")
    for profile, overlap in ((gpu, True), (cpu, False)):
        trace = simulate(family("pipetgl", profile, 2, 40), profile)
        for rank in (0, 1):
            rows = [r for r in trace.rows if r.rank == rank and r.op != "GRAD_SYNC"]
            assert _overlaps(rows) is overlap
    one = simulate(family("sequential", cpu, 1, 40), cpu)
    per_batch = sum(cpu.cost(op) for op in cpu.ops if op != "GRAD_SYNC")
    assert one.rows[-1].end == pytest.approx(40 * per_batch)


def test_compute_is_saved_and_checked(tmp_path):
    profile = dataclasses.replace(load_profile("gpu-illustrative"), compute="cpu")
    profile.save(tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json").compute == "cpu"
    data = json.loads((tmp_path / "p.json").read_text()) | {"compute": "tpu"}
    with pytest.raises(InputError, match="field 'compute' must be one of gpu, cpu"):
        CostProfile.from_dict(data)


def test_validate_prints_predicted_and_measured_and_draws_both(tmp_path):
    cmd = [sys.executable, "-m", "tgpipe", "validate", "--data", "synthetic:300,4000"]
    cmd += ["--families", "sequential,pipetgl", "--repeat", "3", "--gantt", "g.html"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "predicted ms" in lines[1] and "measured ms" in lines[1] and "error %" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    assert set(rows) == {"sequential", "pipetgl(2)"}
    for cells in rows.values():
        predicted, measured, error = map(float, cells[3:6])
        assert predicted > 0 and measured > 0
        # the table rounds each number: ms to 0.005, the error to 0.05 points
        rounding = 100 * 0.005 * (1 / measured + predicted / measured**2) + 0.05
        assert error == pytest.approx((predicted - measured) / measured * 100, abs=rounding)
    page = (tmp_path / "g.html").read_text()
    assert page.count("(simulated)") >= 2 and page.count("(measured)") >= 2


def test_a_run_is_measured_by_its_epoch_of_median_period_after_the_first():
    """`tgpipe run --trace-epochs all` puts each epoch after the one before; the measured
    epoch is, of all but the first (warm-up), the one of median period, from time 0."""
    from tgpipe.executor.validate import median_epoch
    from tgpipe.trace import Trace

    profile = dataclasses.replace(load_profile("gpu-illustrative"), compute="cpu")
    one = simulate(family("pipetgl", profile, 2, 12), profile)
    rows, zero = [], 0.0
    for slower in (5.0, 1.2, 1.0, 3.0):  # warm-up, then a burst of other work in the last
        rows += [
            r._replace(start=zero + r.start * slower, end=zero + r.end * slower) for r in one.rows
        ]
        zero = max(r.end for r in rows)
    picked = median_epoch(Trace(rows, one.meta), 4)
    assert metrics(picked).period == pytest.approx(1.2 * metrics(one).period)
    ends = {(r.rank, r.op, r.batch): r.end for r in picked.rows}
    assert ends == pytest.approx({(r.rank, r.op, r.batch): 1.2 * r.end for r in one.rows})
    with pytest.raises(ValueError, match="is not 5 epochs"):  # 108 rows an epoch
        median_epoch(Trace(rows, one.meta), 5)


@pytest.mark.parametrize("name", ["sequential", "data_parallel", "mspipe", "pipetgl"])
def test_replaying_a_trace_with_its_own_costs_gives_it_back(name):
    from tgpipe.executor.validate import measured_costs

    profile = dataclasses.replace(load_profile("gpu-illustrative"), compute="cpu")
    schedule = family(name, profile, 1 if name == "sequential" else 2, 24)
    trace = simulate(schedule, profile)
    replayed = simulate(schedule, profile, costs=measured_costs(trace))
    assert [(r.op, r.batch, r.rank) for r in replayed.rows] == [
        (r.op, r.batch, r.rank) for r in trace.rows
    ]
    assert [r.end for r in replayed.rows] == pytest.approx([r.end for r in trace.rows])


def test_replay_takes_each_actions_own_cost_and_the_last_arrival_of_an_all_reduce():
    from tgpipe.executor.validate import measured_costs
    from tgpipe.schedules.ir import Action
    from tgpipe.trace import Trace, TraceRow

    rows = [
        TraceRow(0, "net", "GRAD_SYNC", 0, 0.0, 0.5),  # waited 0.4 for rank 1
        TraceRow(1, "net", "GRAD_SYNC", 1, 0.4, 0.5),
        TraceRow(0, "gpu", "FWD", 0, 0.0, 0.3),
    ]
    costs = measured_costs(Trace(rows, {"semantics": [0, 0, 2]}))
    assert costs[Action("GRAD_SYNC", 0)] == costs[Action("GRAD_SYNC", 1)] == pytest.approx(0.1)
    assert costs[Action("FWD", 0)] == pytest.approx(0.3)
    # a run's pause before an op, which the profile counts in (`op_seconds`), counts here too
    paused = [*rows, TraceRow(0, "gpu", "BWD", 0, 0.4, 0.6)]
    assert measured_costs(Trace(paused, {"semantics": [0, 0, 2]}))[
        Action("BWD", 0)
    ] == pytest.approx(0.3)
    profile = load_profile("gpu-illustrative")
    schedule = family("sequential", profile, 1, 4)
    slow = simulate(schedule, profile, costs={Action("BWD", 2): 1.0})
    (bwd2,) = [r for r in slow.rows if r.op == "BWD" and r.batch == 2]
    assert bwd2.end - bwd2.start == pytest.approx(1.0)


def test_batches_cost_as_measured_and_a_synchronous_group_waits_for_its_slowest(tmp_path):
    base = dataclasses.replace(load_profile("gpu-illustrative"), compute="cpu")
    scaled = dataclasses.replace(base, batch_scale=(1.0, 3.0))
    scaled.save(tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json").batch_scale == (1.0, 3.0)
    trace = simulate(family("sequential", scaled, 1, 4), scaled)
    fwd = {r.batch: r.end - r.start for r in trace.rows if r.op == "FWD"}
    assert fwd[1] == pytest.approx(3 * fwd[0]) and fwd[3] == pytest.approx(fwd[1])
    # data parallel on 2 ranks: each group waits for its odd (slow) batch
    even = simulate(family("data_parallel", base, 2, 8), base).rows[-1].end
    uneven = simulate(family("data_parallel", scaled, 2, 8), scaled).rows[-1].end
    assert uneven > 1.9 * even
    step = {r.batch: r.end - r.start for r in trace.rows if r.op == "STEP"}
    assert step[1] == pytest.approx(step[0])
    # batches cheaper than the typical one: the bound stays below every period
    cheap = dataclasses.replace(base, batch_scale=(0.5, 0.7))
    for name, ranks in (("sequential", 1), ("pipetgl", 2), ("data_parallel", 2)):
        t = simulate(family(name, cheap, ranks, 40), cheap)
        assert metrics(t).gap >= -1e-9, name
    data = json.loads((tmp_path / "p.json").read_text()) | {"batch_scale": [1.0, -2]}
    with pytest.raises(InputError, match=r"batch_scale\[1\] must be > 0"):
        CostProfile.from_dict(data)


def test_a_profiles_batch_scale_gives_each_measured_batch_its_time():
    from tgpipe.executor.profiler import OpSamples

    seconds = {"FWD": [1.0, 3.0, 1.0, 3.0], "BWD": [1.0] * 4, "GRAD_SYNC": [9.0] * 4}
    seconds["STEP"] = [5.0, 1.0, 5.0, 1.0]  # the same weights every batch: left out
    samples = OpSamples(seconds, {}, [(0, 0), (0, 1)] * 2, grads=[])  # two ranks pooled
    # medians: FWD 2, BWD 1 -> a batch "costs" 3; batch 0 took 2, batch 1 took 4
    assert samples.batch_scale(3) == pytest.approx((2 / 3, 4 / 3, 1.0))
    assert samples.jitter() == 0.0  # both ranks took the same time for each batch
    # data parallel: rank 0 ran batches 0 and 2, rank 1 batches 1 and 3
    parallel = OpSamples(seconds, {}, [(0, 0), (0, 2), (0, 1), (0, 3)], grads=[])
    assert parallel.batch_scale(4) == pytest.approx((2 / 3, 2 / 3, 4 / 3, 4 / 3))


def test_a_profiles_jitter_is_the_spread_between_runs_of_one_batch():
    from tgpipe.executor.profiler import OpSamples

    # two ranks pooled, batches 0 and 1: rank 1 took 1 s more on batch 0, 3 s less on 1
    seconds = {"FWD": [2.0, 6.0, 3.0, 3.0], "GRAD_SYNC": [0.0] * 4, "STEP": [0.0] * 4}
    samples = OpSamples(seconds, {}, [(0, 0), (0, 1)] * 2, grads=[])
    # sample variances 0.5 and 4.5: their mean 2.5
    assert samples.jitter() == pytest.approx(2.5**0.5)
