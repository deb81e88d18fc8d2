"""The shared device: ops alone, side by side, sharing, queued, and in long random chains."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
import simpy

from tgpipe.errors import InputError
from tgpipe.simulator.contention import SharedDevice, Usage, slowdown

COMPUTE = Usage(compute=1.0, memory=0.2)
TOL = 1e-12


def _run(ops, capacity=2):
    """`ops`: (name, arrival, work, usage); each op is its own process. Returns times, env."""
    env = simpy.Environment()
    device = SharedDevice(env, capacity)
    times = {}

    def one(name, arrival, work, usage):
        yield env.timeout(arrival)
        times[name] = yield from device.run(work, usage)

    for op in ops:
        env.process(one(*op))
    env.run()
    assert device.running == 0 and device.slowdown == 1.0
    return times, env


def _progress(times, usages):
    """Each op's alone-time done, integrated by hand over the pieces between starts and ends."""
    cuts = sorted({t for span in times.values() for t in span})
    done = dict.fromkeys(times, 0.0)
    for a, b in pairwise(cuts):
        running = [name for name, (start, end) in times.items() if start <= a and end >= b]
        rate = 1.0 / slowdown(usages[name] for name in running)
        for name in running:
            done[name] += (b - a) * rate
    return done


def test_one_op_alone_takes_its_work():
    times, env = _run([("a", 0.5, 3.25, Usage(0.7, 0.4))])
    assert times == {"a": (0.5, 3.75)}
    assert env.now == 3.75


def test_two_compute_bound_ops_each_take_twice_as_long():
    times, _ = _run([("a", 0, 1.5, COMPUTE), ("b", 0, 1.5, COMPUTE)])
    assert times == {"a": (0.0, 3.0), "b": (0.0, 3.0)}


def test_compute_bound_next_to_memory_bound_both_run_at_full_speed():
    times, _ = _run([("c", 0, 2.0, Usage(0.8, 0.2)), ("m", 0, 1.0, Usage(0.2, 0.8))])
    assert times == {"c": (0.0, 2.0), "m": (0.0, 1.0)}


def test_compute_bound_next_to_memory_bound_slightly_over_shares_by_the_excess():
    # sums 1.1: both at rate 1/1.1 while together; m ends at 1.1 * 1.0, c then alone
    times, _ = _run([("c", 0, 2.0, Usage(0.9, 0.2)), ("m", 0, 1.0, Usage(0.2, 0.9))])
    assert times["m"][1] == pytest.approx(1.1, abs=TOL)
    assert times["c"][1] == pytest.approx(1.1 + (2.0 - 1.0), abs=TOL)


def test_the_long_op_speeds_back_up_when_the_short_one_ends():
    # long: 0..1 alone (1 done); short joins at 1, both at 1/2 until short's 1 s is done at 3
    # (long has 2 done); long alone again: 2 s left, ends at 5
    times, env = _run([("long", 0, 4.0, COMPUTE), ("short", 1, 1.0, COMPUTE)])
    assert times["short"] == pytest.approx((1.0, 3.0), abs=TOL)
    assert times["long"] == pytest.approx((0.0, 5.0), abs=TOL)
    assert env.now == pytest.approx(5.0, abs=TOL)  # superseded timers end no later


def test_a_partial_overlap_with_an_uneven_slowdown():
    # s = 0.6 + 0.5 = 1.1 together: b's 1.1 s take 1.21; a has done 1.1, 0.9 left -> 2.11
    times, _ = _run([("a", 0, 2.0, Usage(0.6, 0.1)), ("b", 0, 1.1, Usage(0.5, 0.1))])
    assert times["b"] == pytest.approx((0.0, 1.21), abs=TOL)
    assert times["a"] == pytest.approx((0.0, 2.11), abs=TOL)


def test_capacity_two_queues_a_third_op_first_come_first_served():
    light = Usage(0.1, 0.1)
    ops = [("a", 0, 1.0, light), ("b", 0, 1.0, light), ("c", 0, 1.0, light), ("d", 0.5, 1.0, light)]
    times, _ = _run(ops)
    assert times == {"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (1.0, 2.0), "d": (1.0, 2.0)}
    times, _ = _run(ops, capacity=4)  # room for all: the light ops do not slow each other
    assert times == {"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, 1.0), "d": (0.5, 1.5)}


def _random_chain(seed, lanes=3, per_lane=40, capacity=2):
    rng = random.Random(seed)
    env = simpy.Environment()
    device = SharedDevice(env, capacity)
    times, usages = {}, {}

    def lane(k):
        for i in range(per_lane):
            yield env.timeout(rng.choice([0.0, rng.uniform(0, 2e-3)]))
            usage = Usage(rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0))
            work = rng.choice([1e-3, rng.uniform(1e-5, 5e-3)])
            usages[k, i] = usage
            times[k, i] = yield from device.run(work, usage)
            times[k, i] += (work,)

    for k in range(lanes):
        env.process(lane(k))
    env.run()
    return times, usages, env.now


@pytest.mark.parametrize("capacity", [2, 3])
def test_a_random_chain_conserves_work_and_is_deterministic(capacity):
    times, usages, end = _random_chain(7, capacity=capacity)
    assert _random_chain(7, capacity=capacity) == (times, usages, end)
    spans = {name: (s, e) for name, (s, e, _) in times.items()}
    done = _progress(spans, usages)
    for name, (_, _, work) in times.items():
        assert done[name] == pytest.approx(work, rel=1e-9, abs=TOL)
    assert sum(done.values()) == pytest.approx(sum(w for *_, w in times.values()), rel=1e-9)
    # never more than `capacity` at once, and the run ends with its last op
    cuts = sorted({t for span in spans.values() for t in span})
    for a, b in pairwise(cuts):
        assert sum(s <= a and e >= b for s, e in spans.values()) <= capacity
    assert end == pytest.approx(max(e for _, e in spans.values()), abs=TOL)


@pytest.mark.parametrize(
    "compute, memory, word",
    [(0.0, 0.5, "compute"), (1.5, 0.5, "compute"), (0.5, -0.1, "memory"),
     (math.nan, 0.5, "compute"), (0.5, "lots", "memory"), (True, 0.5, "compute")],
)  # fmt: skip
def test_bad_usage_is_an_input_error_of_one_line(compute, memory, word):
    with pytest.raises(InputError, match=f"usage {word} must be a fraction in \\(0, 1\\]") as e:
        Usage(compute, memory)
    assert "\n" not in str(e.value)


def test_bad_work_usage_or_capacity_is_an_input_error():
    device = SharedDevice(simpy.Environment())
    for work in (-1.0, math.inf, "x"):
        with pytest.raises(InputError, match="work must be"):
            device.run(work, COMPUTE)
    with pytest.raises(InputError, match="must be a Usage"):
        device.run(1.0, (1.0, 0.2))
    for capacity in (0, 1.5):
        with pytest.raises(InputError, match="capacity"):
            SharedDevice(simpy.Environment(), capacity)
