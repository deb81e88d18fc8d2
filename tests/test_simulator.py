import dataclasses
import random
from collections import defaultdict

import pytest

from tgpipe.dag import OPS, build_dag, lower_bound
from tgpipe.dag.semantics import Semantics
from tgpipe.metrics import metrics
from tgpipe.schedules import Action, Schedule, family, requirements
from tgpipe.schedules.families import pipeline
from tgpipe.simulator import Deadlock, simulate
from tgpipe.simulator.sim import expected_max

GPU_HEAVY = {"FWD": 10e-3, "BWD": 20e-3} | {
    op: 1e-5 for op in ("SAMPLE", "FEAT", "MEM_FETCH", "MEM_WRITE")
}


def _run(profile, name, ranks, batches, **options):
    s = family(name, profile, ranks, batches, **options)
    trace = simulate(s, profile)
    bound = lower_bound(profile, s.semantics, ranks, memory=s.memory).per_batch
    return s, trace, metrics(trace, bound), bound


def test_one_lane_makespan_is_the_sum_of_costs(hand):
    p = hand({op: (k + 1) * 1e-3 for k, op in enumerate(OPS)})
    n = 4
    G = build_dag(p, family("sequential", p, 1, n).semantics, n)
    import networkx as nx

    order = tuple(
        Action(G.nodes[v]["op"], G.nodes[v]["batch"])
        for v in nx.lexicographical_topological_sort(G)
    )
    s = Schedule("one lane", family("sequential", p, 1, n).semantics, 1, n, {(0, "gpu"): order})
    trace = simulate(s, p)
    total = sum(G.nodes[v]["cost"] for v in G)
    assert metrics(trace).makespan == pytest.approx(total)


def test_pipetgl_with_cheap_chains_has_period_r_over_w_and_no_bubbles(hand):
    p = hand(GPU_HEAVY)
    R = sum(p.cost(op) for op in OPS if "gpu" in OPS[op].resources)  # GPU work per batch
    _, _, m, _ = _run(p, "pipetgl", 4, 120)
    assert m.period == pytest.approx(R / 4, rel=1e-3)
    assert max(m.bubbles) < 0.01


def test_pipetgl_with_expensive_memory_chain_runs_at_the_chain_bound(hand):
    chain = {"MEM_FETCH": 4e-3, "MEM_ROOT": 5e-3, "MEM_WRITE": 3e-3}
    p = hand(GPU_HEAVY | chain, {"MEM_WRITE": 10_000}, intra=(2e-4, 1e8))
    _, _, m, bound = _run(p, "pipetgl/rows", 4, 120)
    assert lower_bound(p, family("pipetgl", p, 4, 1).semantics, 4, memory="rows").binding == "cycle"
    assert m.period == pytest.approx(bound, rel=0.005)


def test_data_parallel_period_matches_its_closed_form(hand):
    W = 4
    p = hand(GPU_HEAVY | {"GRAD_SYNC": 2e-4}, {"GRAD_SYNC": 4_000_000}, intra=(1e-5, 1e10))
    # each group: every rank trains its batch, all-reduces, steps; the next group's memory
    # fetch overlaps training, and its GRU waits for the step
    group = sum(
        p.cost(op, W) for op in ("MEM_ROOT", "MEM_SUPPORT", "FWD", "BWD", "GRAD_SYNC", "STEP")
    )
    _, trace, m, _ = _run(p, "data_parallel", W, 80)
    assert m.period == pytest.approx(group / W, rel=1e-3)
    # the all-reduce is a collective: its members start and end together
    syncs = defaultdict(set)
    for r in trace.rows:
        if r.op == "GRAD_SYNC":
            syncs[r.batch // W].add((round(r.start, 12), round(r.end, 12)))
    assert all(len(times) == 1 for times in syncs.values())


def test_shared_cpu_cores_are_a_resource(hand):
    p = hand({"SAMPLE": 10e-3} | {op: 1e-5 for op in OPS if op != "SAMPLE"}, cores=1)
    _, _, m, bound = _run(p, "pipetgl", 4, 80)
    # 4 ranks on one machine share one core: SAMPLE and FEAT of every batch, serialised
    cpu = p.cost("SAMPLE") + p.cost("FEAT")
    assert m.period == pytest.approx(cpu, rel=1e-6)
    assert bound == pytest.approx(cpu)


def test_links_cost_time_across_machines(hand):
    chain = {"MEM_FETCH": 1e-3, "MEM_ROOT": 1e-3, "MEM_WRITE": 1e-3}
    p = hand(
        {op: 1e-5 for op in OPS} | chain,
        {"MEM_WRITE": 1_000_000},
        intra=(0.0, 1e12),
        inter=(1e-3, 1e9),
    )
    one = _run(p, "pipetgl", 4, 80)[2].period
    two = _run(p, "pipetgl", 4, 80, gpus_per_machine=2)[2].period
    # two of the four ring hops cross machines: 2 x (1 ms + 1 ms) more per 4 batches
    assert two - one == pytest.approx(1e-3, rel=0.01)


def test_trace_respects_dependencies_and_lanes(hand):
    p = hand({op: random.Random(1).uniform(1e-4, 3e-3) for op in OPS})
    s = family("mspipe", p, 2, 20)
    trace = simulate(s, p)
    end = {(r.op, r.batch): r.end for r in trace.rows}
    start = {(r.op, r.batch): r.start for r in trace.rows}
    assert len(end) == len(trace.rows) == 20 * 10
    for act, preds in requirements(s).items():
        assert all(start[act] >= end[pred] - 1e-12 for pred, _ in preds)
    lanes = defaultdict(list)
    for r in trace.rows:
        lanes[r.rank, r.lane].append((r.start, r.end))
    for spans in lanes.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:], strict=False))


def test_deadlock_names_the_waiting_actions(hand):
    p = hand()
    s = family("sequential", p, 1, 2)
    gpu = list(s.lanes[0, "gpu"])
    gpu.remove(Action("FWD", 0))
    gpu.append(Action("FWD", 0))
    bad = Schedule("bad", s.semantics, 1, 2, {**s.lanes, (0, "gpu"): tuple(gpu)})
    with pytest.raises(Deadlock, match="deadlocked with .* rank 0 gpu: BWD0 waits for FWD0"):
        simulate(bad, p, check=False)


@pytest.mark.parametrize("seed", range(16))
def test_period_never_beats_the_lower_bound(hand, seed):
    """The bound is asymptotic; a finite window can catch the tail of the warm-up, so the run
    is long enough for that to vanish."""
    rng = random.Random(seed)
    p = hand(
        {op: rng.uniform(1e-4, 6e-3) for op in OPS},
        {op: rng.choice([0, 100_000, 2_000_000]) for op in OPS},
        intra=(rng.uniform(0, 1e-4), rng.uniform(1e8, 1e10)),
        cores=rng.choice([1, 2, 8]),
    )
    name = rng.choice(["sequential", "data_parallel", "pipetgl", "pipetgl/rows", "mspipe"])
    ranks = 1 if name == "sequential" else rng.choice([2, 3, 4])
    _, _, m, bound = _run(p, name, ranks, 240)
    assert m.period >= bound * (1 - 1e-9)


def test_weight_copies_are_charged_where_the_runtime_makes_them(hand):
    """With a copy bandwidth, a 2-rank ring with s_w = 2 copies at each STEP the learner it
    takes over (a load of its rank still reads it) and loads each version's weights once per
    rank (`WeightPlan`): on GPU-bound ranks each batch's period grows by its copies over the
    2 ranks. One rank with s_w = 1 copies each STEP's result it keeps, as the next STEP
    steps in place. The PipeTGL ring and data parallel copy nothing. (Row-passing memory:
    the learners travel over the link, not through shared slots.)"""
    base = hand(GPU_HEAVY | {"STEP": 1e-3}, {"STEP": 3_000_000, "GRAD_SYNC": 1_000_000})
    copies = dataclasses.replace(base, copy_bandwidth=1e9)  # 3 ms per packed learner
    lagged = pipeline(base, 2, 40, Semantics(0, 2, 1), memory="rows")
    plain, copied = (simulate(lagged, p) for p in (base, copies))
    steps = {r.batch: r.end - r.start for r in copied.rows if r.op == "STEP"}
    assert steps[0] == pytest.approx(1e-3)  # its own learner, kept as it is
    assert steps[5] == pytest.approx(1e-3 + 3e-3)  # taken over, copied, stepped
    roots = [r.end - r.start for r in copied.rows if r.op == "MEM_ROOT"]
    assert roots[5] == pytest.approx(base.cost("MEM_ROOT") + 1e-3)  # its version's weights
    assert metrics(copied).period == pytest.approx(metrics(plain).period + 4e-3 / 2, rel=1e-3)
    alone = simulate(pipeline(base, 1, 6, Semantics(0, 1, 1)), copies)
    kept = {r.batch: r.end - r.start for r in alone.rows if r.op == "STEP"}
    assert kept[0] == pytest.approx(1e-3 + 3e-3) and kept[5] == pytest.approx(
        1e-3
    )  # last: read by none
    for name in ("pipetgl/rows", "data_parallel"):
        schedule = family(name, base, 2, 40)
        assert simulate(schedule, copies).rows == simulate(schedule, base).rows


def test_a_learner_handed_on_one_machine_is_copied_in_and_out(hand):
    """With host memory on one machine, a ring's learner goes through the shared slots: the
    next STEP starts no earlier than the link's latency and two copies after the last."""
    p = dataclasses.replace(
        hand(GPU_HEAVY | {"STEP": 1e-3}, {"STEP": 3_000_000}), copy_bandwidth=1e9
    )
    assert p.slots("host", 1) and not p.slots("rows", 1) and not p.slots("host", 2)
    rows = {r.batch: r for r in simulate(family("pipetgl", p, 2, 12), p).rows if r.op == "STEP"}
    gaps = [rows[b + 1].start - rows[b].end for b in range(11)]
    assert min(gaps) >= p.intra.latency + 2 * 3e-3 - 1e-12
    assert min(gaps) == pytest.approx(p.intra.latency + 2 * 3e-3)  # the ring binds somewhere


def test_on_cpu_ranks_a_handed_learners_copies_share_the_ranks_core(hand):
    """On CPU ranks the runtime's sender and receiver threads copy a handed learner on the
    rank's own core, beside its ops: the op running when a copy (3 ms here) ends takes that
    much longer. A core-bound ring of 2 ranks hands on one learner per batch, a copy in on
    one rank and out on the other: 3 ms more per batch than with no copies at all. On GPU
    ranks the copies cost the ops nothing, and a replay of the CPU run's own op seconds
    (which hold the copies already) is the run again, not stretched twice."""
    heavy = hand(GPU_HEAVY | {"STEP": 1e-3}, {"STEP": 3_000_000})
    p = dataclasses.replace(heavy, copy_bandwidth=1e9)
    ring = family("pipetgl", p, 2, 40)

    def extras(profile):
        trace = simulate(ring, profile)
        return trace, [r.end - r.start - profile.cost(r.op) for r in trace.rows]

    _, on_gpu = extras(p)
    assert max(on_gpu) == pytest.approx(0.0, abs=1e-12)
    cpu = dataclasses.replace(p, compute="cpu")
    trace, on_cpu = extras(cpu)
    stretched = [x for x in on_cpu if x > 1e-12]
    assert stretched and all(x / 3e-3 == pytest.approx(round(x / 3e-3)) for x in stretched)
    no_copies = dataclasses.replace(heavy, compute="cpu")  # no slots: nothing to copy
    plain = metrics(simulate(ring, no_copies)).period
    assert metrics(trace).period == pytest.approx(plain + 3e-3, rel=1e-2)
    own = {Action(r.op, r.batch): r.end - r.start for r in trace.rows}
    assert simulate(ring, cpu, costs=own).rows == trace.rows


def test_on_cpu_ranks_a_hand_off_costs_its_two_ends_cores_what_the_profile_measured(hand):
    """Where the profile measured what a handed learner costs its sender's and its
    receiver's core (`handoff_cpu`), that replaces the copies: a core-bound ring of 2 ranks
    hands on a learner (2 ms to send, 1 ms to take) per batch, each rank sends and takes
    every other one, so each batch takes (2 + 1) / 2 ms longer than with nothing to charge;
    data parallel hands on nothing; on GPU ranks no op takes longer."""
    heavy = hand(GPU_HEAVY | {"STEP": 1e-3}, {"STEP": 3_000_000})
    cpu = dataclasses.replace(heavy, compute="cpu", copy_bandwidth=1e9)
    ring, dp = family("pipetgl", cpu, 2, 40), family("data_parallel", cpu, 2, 40)
    plain = dataclasses.replace(cpu, copy_bandwidth=0.0)

    def period(schedule, profile, **change):
        return metrics(simulate(schedule, dataclasses.replace(profile, **change))).period

    measured = period(ring, cpu, handoff_cpu=(2e-3, 1e-3))
    assert measured == pytest.approx(period(ring, plain) + 1.5e-3, rel=1e-3)
    assert period(ring, plain, handoff_cpu=(2e-3, 1e-3)) == measured
    assert period(dp, cpu, handoff_cpu=(2e-3, 1e-3)) == period(dp, plain)
    gpu = dataclasses.replace(cpu, compute="gpu", handoff_cpu=(2e-3, 1e-3))
    assert all(r.end - r.start == pytest.approx(gpu.cost(r.op)) for r in simulate(ring, gpu).rows)


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_on_cpu_ranks_an_op_beside_an_allreduce_takes_longer_by_its_share_of_the_core(hand, share):
    """A step that lags behind its all-reduce (semantics (0,1,2), step_lag 1) lets the next
    batch compute while the all-reduce runs. On CPU ranks gloo's threads use the rank's core
    meanwhile (`allreduce_cpu`: half of a 4 ms all-reduce's time, or all of it): every op on
    a rank takes longer by that share of the time it overlapped that rank's all-reduces,
    its longer time included (all of the core: it waits for the all-reduce's end), and the
    rank ends later. On GPUs, or with the runs' own seconds replayed, nothing is
    stretched."""
    base = hand(GPU_HEAVY | {"STEP": 1e-3})
    cpu = dataclasses.replace(base, compute="cpu", allreduce={2: 4e-3})
    lag = pipeline(cpu, 2, 24, Semantics(0, 1, 2), step_lag=1)
    plain = simulate(lag, cpu)
    shared = dataclasses.replace(cpu, allreduce_cpu={2: share * 4e-3})
    trace = simulate(lag, shared)
    syncs = [r for r in trace.rows if r.op == "GRAD_SYNC"]
    stretched = 0.0
    for r in trace.rows:
        if r.op == "GRAD_SYNC":
            continue
        overlap = sum(
            max(0.0, min(r.end, s.end) - max(r.start, s.start)) for s in syncs if s.rank == r.rank
        )
        extra = (r.end - r.start) - shared.batch_cost(r.op, r.batch, 2)
        assert extra == pytest.approx(share * overlap, abs=1e-9), r
        stretched += extra
    assert stretched > 10 * 1e-3  # most batches overlap an all-reduce
    assert metrics(trace).makespan > metrics(plain).makespan
    own = {Action(r.op, r.batch): r.end - r.start for r in trace.rows}
    assert simulate(lag, shared, costs=own).rows == trace.rows
    gpu = dataclasses.replace(shared, compute="gpu")
    assert simulate(lag, gpu).rows == simulate(lag, dataclasses.replace(gpu, allreduce_cpu={})).rows


def test_a_synchronous_group_waits_for_its_expected_slowest_member(hand):
    """With a measured jitter, an all-reduce of 2 ranks that arrive together starts
    expected_max(2) = 0.564 standard deviations later: data parallel's period per batch
    grows by that over its 2 batches; one rank has no one to wait for."""
    base = hand(GPU_HEAVY)
    noisy = dataclasses.replace(base, jitter=4e-3)
    dp = family("data_parallel", base, 2, 40)
    plain, waited = (metrics(simulate(dp, p)).period for p in (base, noisy))
    assert expected_max(2) == pytest.approx(0.5642, abs=1e-4)
    assert waited == pytest.approx(plain + expected_max(2) * 4e-3 / 2, rel=1e-3)
    seq = family("sequential", base, 1, 10)
    assert simulate(seq, noisy).rows == simulate(seq, base).rows
