"""The snapshot workload's DAG, its schedules in the IR, the simulator with two workers per GPU,
and the search over BLAD's choices."""

import dataclasses

import networkx as nx
import pytest

from tgpipe.dag.profile import load_profile
from tgpipe.dag.snapshot import SNAPSHOT_EDGE_KINDS, SnapshotWorkload, snapshot_bound
from tgpipe.errors import InputError
from tgpipe.executor.snapshots import skewed_sequence
from tgpipe.schedules.ir import Schedule, validate
from tgpipe.schedules.snapshot import (
    SNAPSHOT_FAMILIES,
    blad,
    snapshot_family,
    snapshot_partition,
    snapshot_search,
    vertex_partition,
)
from tgpipe.simulator.sim import simulate

PROFILE = load_profile("snapshot-gpu-illustrative")


@pytest.fixture(scope="module")
def skewed() -> SnapshotWorkload:
    """Skewed sizes that grow over the epoch, as a growing graph's snapshots do."""
    seq = skewed_sequence(32, n_nodes=2000, mean_edges=2000, sigma=1.2, seed=3)
    sizes = tuple(sorted((s.n_vertices, s.n_edges) for s in seq))
    return SnapshotWorkload(sizes, n_nodes=2000, group=4, state_bytes=2000 * 256, row_bytes=256)


def test_hidden_edges_stay_inside_groups_and_halo_edges_join_parts():
    w = SnapshotWorkload(((10, 20),) * 6, n_nodes=50, group=3, parts=2)
    preds = w.predecessors(n_ranks=2)
    hidden = {(p[1], u) for (op, u), ps in preds.items() for p, kind in ps if kind == "hidden"}
    # units t * 2 + p: part p of position t follows part p of t - 1, except at t = 3
    assert hidden == {(0, 2), (1, 3), (2, 4), (3, 5), (6, 8), (7, 9), (8, 10), (9, 11)}
    assert (("LOAD", 5), "halo") in preds["AGG", 4] and (("LOAD", 4), "halo") in preds["AGG", 5]
    assert (("RNN", 5), "halo") in preds["BWD", 4]  # the predictor's pairs span parts
    dense_first = dataclasses.replace(w, orders=("dense_first",))
    assert (("DENSE", 5), "halo") in dense_first.predecessors(2)["AGG", 4]
    for r in (0, 1):
        assert {p for p, kind in preds["GRAD_SYNC", r] if kind == "group"} == {
            ("BWD", u) for u in range(w.n_units)
        }
    assert {kind for ps in preds.values() for _, kind in ps} == set(SNAPSHOT_EDGE_KINDS)
    G = w.dag(PROFILE, n_ranks=2)
    assert nx.is_directed_acyclic_graph(G) and G.number_of_nodes() == 5 * 12 + 2 * 2


def test_costs_follow_each_snapshots_vertices_and_edges():
    w = SnapshotWorkload(((100, 1000), (200, 4000)), n_nodes=300, parts=1)
    agg = PROFILE.ops["AGG"]
    assert w.cost(PROFILE, "AGG", 1) == pytest.approx(
        agg.median + 200 * agg.per_vertex + 4000 * agg.per_edge
    )
    halves = dataclasses.replace(w, parts=2)
    assert halves.cost(PROFILE, "DENSE", 3) == pytest.approx(
        PROFILE.ops["DENSE"].seconds(100, 2000)
    )
    with pytest.raises(InputError, match="needs a snapshot profile"):
        w.cost(load_profile("gpu-illustrative"), "AGG", 0)


def test_every_family_is_a_valid_schedule_that_round_trips_through_its_file(skewed, tmp_path):
    for name in SNAPSHOT_FAMILIES:
        s = snapshot_family(name, PROFILE, skewed, 3)
        validate(s)
        s.save(tmp_path / "s.schedule")
        back = Schedule.load(tmp_path / "s.schedule")
        assert back.workload == s.workload and back.lanes == s.lanes and back.n_ranks == 3
    text = blad(PROFILE, skewed, 2).dumps()
    with pytest.raises(InputError, match="VERTICES:EDGES"):
        Schedule.loads(text.replace("snapshots ", "snapshots 5x7 "))
    with pytest.raises(InputError, match="units"):
        validate(Schedule.loads(text.replace("batches 32", "batches 31")))
    with pytest.raises(InputError, match="is for the mtgnn workload"):
        simulate(blad(PROFILE, skewed, 2), load_profile("gpu-illustrative"))


def test_blad_balances_groups_by_cost_not_count(skewed):
    per_rank = {}
    for assign in ("cost", "count"):
        s = blad(PROFILE, skewed, 2, workers=1, assign=assign)
        work = [
            sum(skewed.cost(PROFILE, a.op, a.batch) for a in s.lanes[r, "gpu"] if a.op != "STEP")
            for r in (0, 1)
        ]
        per_rank[assign] = max(work) / min(work)
    assert per_rank["cost"] < 1.1 and per_rank["count"] > 1.5


def test_two_workers_share_one_gpu_and_overlap():
    seq = skewed_sequence(32, n_nodes=2000, mean_edges=2000, sigma=1.2, seed=3)
    sizes = tuple((s.n_vertices, s.n_edges) for s in seq)
    skewed = SnapshotWorkload(sizes, n_nodes=2000, group=4)
    trace = simulate(blad(PROFILE, skewed, 2), PROFILE)
    for rank in (0, 1):
        one = [(r.start, r.end) for r in trace.rows if r.rank == rank and r.lane == "gpu"]
        two = [(r.start, r.end) for r in trace.rows if r.rank == rank and r.lane == "gpu2"]
        overlap = sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in one for s2, e2 in two)
        assert overlap > 0.3 * sum(e - s for s, e in one)
    # ops that overlap run slower than alone: the contention model is in play
    alone = {(r.op, r.batch): skewed.cost(PROFILE, r.op, r.batch) for r in trace.rows}
    slowed = [r for r in trace.rows if r.lane in ("gpu", "gpu2") and r.op != "STEP"]
    assert any(r.end - r.start > 1.01 * alone[r.op, r.batch] for r in slowed)


def test_on_skewed_snapshots_blad_beats_snapshot_partition_and_no_schedule_beats_the_bound(skewed):
    found = snapshot_search(PROFILE, skewed, 2, groups=(2, 4))
    epochs = {(c.schedule.name, c.schedule.workload.group): c.epoch for c in found}
    assert found[0].schedule.name.startswith("blad(2")
    assert epochs["blad(2)", 4] < 0.9 * epochs["snapshot_partition(2)", 4]
    assert epochs["blad(2,workers=1)", 4] < epochs["blad(2,workers=1,assign=count)", 4]
    assert [c.epoch for c in found] == sorted(c.epoch for c in found)
    for g in (2, 4):  # one bound per workload, whatever the family's partition
        bound = snapshot_bound(dataclasses.replace(skewed, group=g), PROFILE, 2).seconds
        for c in found:
            if c.schedule.workload.group == g:
                assert c.epoch >= bound * (1 - 1e-9), c.schedule.name


def test_families_refuse_bad_choices(skewed):
    with pytest.raises(InputError, match="unknown snapshot schedule"):
        snapshot_family("ring", PROFILE, skewed, 2)
    with pytest.raises(InputError, match="workers must be 1 or 2"):
        blad(PROFILE, skewed, 2, workers=3)
    with pytest.raises(InputError, match="group must be an integer"):
        dataclasses.replace(skewed, group=0)
    assert vertex_partition(PROFILE, skewed, 2).workload.parts == 2
    assert snapshot_partition(PROFILE, skewed, 2).workload.parts == 1


def test_gpu_idle_counts_both_workers_and_the_chart_titles_an_epoch(skewed):
    from tgpipe.gantt import block_title
    from tgpipe.metrics import gpu_idle, metrics
    from tgpipe.trace import Trace, TraceRow

    rows = [TraceRow(0, "gpu", "AGG", 0, 0.0, 2.0), TraceRow(0, "gpu2", "DENSE", 1, 1.0, 3.0)]
    rows.append(TraceRow(0, "gpu", "STEP", 0, 3.5, 4.0))
    assert gpu_idle(Trace(rows, {"n_ranks": 1})) == pytest.approx(0.5 / 4.0)
    trace = simulate(blad(PROFILE, skewed, 2), PROFILE)
    title = block_title(trace, metrics(trace))
    assert "epoch" in title and "GPU idle" in title and "events/s" not in title
