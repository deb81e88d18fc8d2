"""The snapshot runtime, checked number for number against the one-process reference.

Real ranks (separate processes on gloo, started by ``tgpipe run --workload snapshot``) run
snapshot partition (a group's hidden state crosses from rank 0 to rank 1), BLAD with
pairing (groups differ in GCN order; two workers per rank) and vertex partition (rows and
their gradients cross ranks inside every position; also 3 ranks, both orders) on the real
data, and must end
with the weights, Adam state and per-position losses of `train_snapshots` under the same
group size and orders, and a trace with one row per action. In-process tests cover the
hidden-state handover between lanes of one rank and the per-group orders of the reference.
"""

import subprocess
import sys

import pytest
import torch

from tgpipe.cli import main
from tgpipe.dag.profile import load_profile
from tgpipe.errors import InputError
from tgpipe.executor.data import load_dataset
from tgpipe.executor.snapshot_model import SnapshotConfig, snapshot_workload
from tgpipe.executor.snapshot_reference import train_snapshots
from tgpipe.executor.snapshot_runtime import SnapshotRunner, check_runnable, handovers
from tgpipe.executor.snapshots import cut_snapshots, skewed_sequence
from tgpipe.schedules.ir import Action, Schedule, validate
from tgpipe.schedules.snapshot import snapshot_family
from tgpipe.trace import Trace

TOLERANCE = 1e-5
EPOCHS, GROUP = 2, 4
PROFILE = "snapshot-gpu-illustrative"


def _tgpipe(*argv, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "tgpipe", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def wiki_seq(wikipedia_csv):
    return cut_snapshots(load_dataset(wikipedia_csv), 86400.0)


def _reference(seq, orders):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same sums in the same order
    try:
        return train_snapshots(seq, group_size=GROUP, epochs=EPOCHS, orders=orders, evaluate=False)
    finally:
        torch.set_num_threads(threads)


def _run(wikipedia_csv, schedule, tmp_path, nproc=2):
    dump, trace_file = tmp_path / "dump", tmp_path / "trace.json"
    run = _tgpipe(
        "run",
        "--workload",
        "snapshot",
        "--schedule",
        schedule,
        "--data",
        wikipedia_csv,
        "--group",
        GROUP,
        "--nproc",
        nproc,
        "--epochs",
        EPOCHS,
        "--no-evaluate",
        "--timeout",
        60,
        "--trace",
        trace_file,
        "--dump",
        dump,
    )
    assert run.returncode == 0, run.stderr
    assert f"epoch {EPOCHS - 1}:" in run.stdout and "snapshots/s" in run.stdout
    return dump, trace_file


def _check(schedule, wiki_seq, dump, trace_file):
    """Every rank's weights and Adam state, the per-position losses and the trace against
    the reference under the schedule's orders."""
    orders = schedule.workload.orders
    n = schedule.n_ranks
    dumped = {r: torch.load(f"{dump}.rank{r}") for r in range(n)}
    assert all(tuple(d["orders"]) == orders for d in dumped.values())
    ref = _reference(wiki_seq, orders)
    diffs = {r: float((d["learner"] - ref.learner.pack()).abs().max()) for r, d in dumped.items()}
    assert max(diffs.values()) <= TOLERANCE, diffs
    assert all(int(d["learner"][-1]) == ref.learner.steps == EPOCHS for d in dumped.values())
    losses = dumped[0]["losses"]
    assert [len(x) for x in losses] == [len(x) for x in ref.losses] == [20] * EPOCHS
    pairs = zip(sum(losses, []), sum(ref.losses, []), strict=True)
    worst = max(abs(a - b) for a, b in pairs)
    assert worst <= TOLERANCE, worst
    trace = Trace.load(trace_file)
    placed = schedule.placement()
    assert sorted(Action(r.op, r.batch) for r in trace.rows) == sorted(placed)
    assert all((r.rank, r.lane) == placed[Action(r.op, r.batch)][:2] for r in trace.rows)
    assert trace.meta["source"] == "measured" and trace.meta["workload"] == "snapshot"
    assert trace.meta["n_ranks"] == n and trace.meta["schedule"] == schedule.name


@pytest.mark.parametrize("family", ["snapshot_partition", "blad", "vertex_partition"])
def test_ranks_end_where_the_reference_ends(family, wikipedia_csv, wiki_seq, tmp_path):
    dump, trace_file = _run(wikipedia_csv, family, tmp_path)
    schedule = snapshot_family(
        family, load_profile(PROFILE), snapshot_workload(wiki_seq, GROUP), n_ranks=2
    )
    orders = schedule.workload.orders
    crossing = [h for h in handovers(schedule, wiki_seq) if h.src[0] != h.dst[0]]
    if family == "blad":  # pairing: the second worker's groups are DENSE-first
        assert len(set(orders)) == 2 and not crossing
    elif family == "snapshot_partition":  # a group crosses from rank 0 to rank 1
        assert crossing and len(crossing[0].ids) > 0
    else:  # every part's hidden rows stay on its rank; rows cross inside each position
        assert schedule.workload.parts == 2 and not crossing
    _check(schedule, wiki_seq, dump, trace_file)


def test_a_vertex_partition_of_three_ranks_in_both_orders(wikipedia_csv, wiki_seq, tmp_path):
    orders = ("dense_first", "agg_first", "dense_first", "agg_first", "dense_first")
    w = snapshot_workload(wiki_seq, GROUP, orders=orders)
    schedule = snapshot_family("vertex_partition", load_profile(PROFILE), w, n_ranks=3)
    dump, trace_file = _run(wikipedia_csv, _save(schedule, tmp_path / "vp3.txt"), tmp_path, 3)
    _check(schedule, wiki_seq, dump, trace_file)


def _save(schedule, path):
    schedule.save(path)
    return path


def test_bad_input_is_one_line_and_status_2(wikipedia_csv, wiki_seq, tmp_path, capsys):
    """Refused in the launching process, before any rank starts: one line, status 2 (one
    case through a real process, the others through the same `main` in this one)."""
    profile = load_profile(PROFILE)
    bad = tmp_path / "bad.txt"
    bad.write_text("# tgpipe schedule\nname x\nrank zero gpu: LOAD0\n")
    other = snapshot_workload(skewed_sequence(24, seed=3), GROUP)
    other_data = _save(snapshot_family("blad", profile, other, 2), tmp_path / "other.txt")
    mine = _save(
        snapshot_family("blad", profile, snapshot_workload(wiki_seq, GROUP), 2),
        tmp_path / "mine.txt",
    )
    vp = snapshot_family("vertex_partition", profile, snapshot_workload(wiki_seq, GROUP), 2)
    one_rank = _save(_on_one_rank(vp), tmp_path / "one_rank.txt")
    common = ["run", "--workload", "snapshot", "--data", wikipedia_csv, "--group", GROUP]
    run = _tgpipe(*common, "--schedule", bad)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("tgpipe run: error: ") and "bad.txt" in run.stderr
    cases = {
        "other data": (["--schedule", other_data], "another snapshot sequence"),
        "too few ranks": (["--schedule", mine, "--nproc", 1], "use --nproc 2"),
        "parts on one rank": (["--schedule", one_rank], "all on different ranks"),
        "group": (["--schedule", mine, "--group", 2], "use --group 4"),
    }
    for case, (argv, says) in cases.items():
        assert main([str(a) for a in [*common, *argv]]) == 2, case
        out, err = capsys.readouterr()
        assert not out and err.count("\n") == 1 and says in err, (case, err)
        assert err.startswith("tgpipe run: error: "), (case, err)


def test_a_group_continues_on_another_lane_of_the_rank():
    """A hand-made schedule: group 0 starts on gpu and goes on on gpu2, between which gpu2
    ran group 1 (its table held another group): the table is handed over between lanes."""
    seq = skewed_sequence(14, n_nodes=60, mean_edges=50, seed=4)
    cfg = SnapshotConfig(in_dim=8, hidden_dim=8)
    w = snapshot_workload(seq, GROUP, cfg, orders=("agg_first", "dense_first", "agg_first"))
    assert w.n_positions == 9 and w.n_groups == 3

    def chain(u):
        return [Action(op, u) for op in ("AGG", "DENSE")[:: 1 if w.order(u) == "agg_first" else -1]]

    def units(us):
        return [a for u in us for a in (*chain(u), Action("RNN", u), Action("BWD", u))]

    lanes = {
        (0, "gpu"): (*units([0, 1]), *units([8]), Action("STEP", 0)),
        (0, "gpu2"): tuple(units([4, 5, 6, 7, 2, 3])),
        (0, "h2d"): tuple(Action("LOAD", u) for u in range(9)),
        (0, "net"): (Action("GRAD_SYNC", 0),),
    }
    base = snapshot_family("blad", load_profile(PROFILE), w, 1)
    schedule = Schedule("by hand", base.semantics, 1, w.n_units, lanes, workload=w)
    validate(schedule)
    moved = handovers(schedule, seq)
    assert [(h.unit, h.src, h.dst) for h in moved] == [(2, (0, "gpu"), (0, "gpu2"))]
    assert moved[0].ids.tolist() == sorted(set(seq[0].nodes) | set(seq[1].nodes))
    runner = SnapshotRunner(0, schedule, seq, cfg)
    for epoch in range(EPOCHS):
        result = runner.run_epoch(epoch)
    ref = train_snapshots(seq, group_size=GROUP, epochs=EPOCHS, config=cfg, orders=w.orders)
    assert float((runner.learner.pack() - ref.learner.pack()).abs().max()) <= TOLERANCE
    assert [result.losses[u] for u in range(9)] == pytest.approx(ref.losses[-1], abs=TOLERANCE)
    assert len(result.rows) == len(schedule.placement())


def test_reference_orders_are_backwards_compatible():
    seq = skewed_sequence(12, n_nodes=40, mean_edges=60, alpha=0.5, seed=1)
    cfg = SnapshotConfig(in_dim=8, hidden_dim=8)
    one = train_snapshots(seq, group_size=3, config=cfg, order="dense_first", evaluate=False)
    same = train_snapshots(seq, group_size=3, config=cfg, orders=["dense_first"], evaluate=False)
    mixed = train_snapshots(
        seq, group_size=3, config=cfg, orders=("dense_first", "agg_first"), evaluate=False
    )
    assert torch.equal(one.learner.pack(), same.learner.pack())
    assert one.losses[0][:3] == mixed.losses[0][:3]  # group 0: dense_first in both
    assert one.orders == ("dense_first",) and mixed.order == "dense_first"
    with pytest.raises(InputError, match="GCN orders"):
        train_snapshots(seq, group_size=3, config=cfg, orders=("sideways",))


def _on_one_rank(vp):
    """vertex_partition(2)'s two ranks as the two workers of rank 0."""
    lanes = {
        (0, lane if r == 0 else {"gpu": "gpu2", "h2d": "h2d2"}.get(lane, lane)): acts
        for (r, lane), acts in vp.lanes.items()
        if (r, lane) != (1, "net")
    }
    lanes[0, "h2d"] = tuple(sorted(lanes[0, "h2d"] + lanes.pop((0, "h2d2"))))
    steps = [a for a in lanes[0, "gpu2"] if a.op == "STEP"]
    lanes[0, "gpu2"] = tuple(a for a in lanes[0, "gpu2"] if a.op != "STEP")
    assert steps == [Action("STEP", 1)]
    return Schedule("by hand", vp.semantics, 1, vp.workload.n_units, lanes, workload=vp.workload)


def test_vertex_partitions_that_would_deadlock_and_mtgnn_schedules_are_refused():
    w = snapshot_workload(skewed_sequence(12, n_nodes=40, mean_edges=60, seed=1), 3)
    vp = snapshot_family("vertex_partition", load_profile(PROFILE), w, 2)
    assert check_runnable(vp) is vp.workload
    with pytest.raises(InputError, match="position 0 must each run on one rank, all on diff"):
        check_runnable(_on_one_rank(vp))
    lanes = dict(vp.lanes)
    lanes[1, "gpu"] = (*lanes[1, "gpu"][4:8], *lanes[1, "gpu"][:4], *lanes[1, "gpu"][8:])
    swapped = Schedule("swapped", vp.semantics, 2, vp.n_batches, lanes, workload=vp.workload)
    with pytest.raises(InputError, match="lane gpu of rank 1 takes positions out of order"):
        check_runnable(swapped)
    from tgpipe.schedules.families import family

    with pytest.raises(InputError, match="M-TGNN schedule"):
        check_runnable(family("sequential", load_profile("gpu-illustrative"), 1, 4))
