"""The profile's op seconds come from the runtime, on both memory backends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tgpipe.dag import OPS
from tgpipe.executor.model import TGNConfig
from tgpipe.executor.rank import RankRunner
from tgpipe.executor.runtime_timing import time_in_runtime
from tgpipe.executor.stream import TRAIN, Stream

SMALL = TGNConfig(memory_dim=8, time_dim=4, embed_dim=8)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-store", "replica"])
def test_every_op_of_the_batches_after_the_warm_up_across_epochs(wiki_slice, shared):
    stream = Stream(wiki_slice, 600)
    n = stream.n_batches(TRAIN)
    seconds, batches = time_in_runtime(stream, SMALL, n - 1, 3, shared=shared)
    assert batches == [(0, n - 1), (1, 0), (1, 1)]  # the warm-up ends inside epoch 0
    assert set(seconds) == set(OPS) - {"GRAD_SYNC"}  # one rank: nothing to all-reduce
    assert all(len(s) == 3 and min(s) > 0 for s in seconds.values())


def test_an_op_is_timed_as_the_runtime_runs_it(wiki_slice, monkeypatch):
    """What the runner spends inside an op (here a pause in FWD) is in that op's seconds."""
    run_op = RankRunner._run_op

    def slow_fwd(self, op, state, ready):
        run_op(self, op, state, ready)
        if op == "FWD":
            time.sleep(0.02)

    monkeypatch.setattr(RankRunner, "_run_op", slow_fwd)
    seconds, _ = time_in_runtime(Stream(wiki_slice, 600), SMALL, 1, 2, shared=True)
    assert min(seconds["FWD"]) >= 0.02 > max(seconds["BWD"])


def test_the_pause_before_an_op_is_counted_as_its_own(wiki_slice, monkeypatch):
    """The runtime's dispatch of an op (here a pause before BWD, outside its trace row) is
    in its seconds: a run pays it, and the simulator has no other place for it."""
    ready = RankRunner._ready

    def slow_dispatch(self, op, state):
        if op == "BWD":
            time.sleep(0.02)
        return ready(self, op, state)

    monkeypatch.setattr(RankRunner, "_ready", slow_dispatch)
    seconds, _ = time_in_runtime(Stream(wiki_slice, 600), SMALL, 1, 2, shared=True)
    assert min(seconds["BWD"]) >= 0.02 > max(seconds["FWD"])


def test_a_dispatch_is_counted_only_where_the_rank_was_what_the_op_waited_for():
    from tgpipe.dag.build import predecessors
    from tgpipe.dag.semantics import Semantics
    from tgpipe.executor.runtime_timing import op_seconds
    from tgpipe.trace import TraceRow

    rows = [  # pipetgl(2): batch 1's MEM_FETCH on rank 1 reads batch 0's write on rank 0
        TraceRow(0, "gpu", "MEM_ROOT", 0, 0.0, 0.2),
        TraceRow(0, "d2h", "MEM_WRITE", 0, 0.25, 0.5),  # 0.05 of dispatch: its own
        TraceRow(1, "cpu", "SAMPLE", 1, 0.0, 0.1),
        TraceRow(1, "h2d", "MEM_FETCH", 1, 0.6, 0.7),  # waited for rank 0: the message's
        TraceRow(1, "net", "GRAD_SYNC", 1, 0.8, 0.9),
    ]
    seconds = op_seconds(rows, predecessors(Semantics(0, 1, 1), 2))
    assert seconds["MEM_WRITE", 0] == pytest.approx(0.3)
    assert seconds["MEM_FETCH", 1] == pytest.approx(0.1)
    assert seconds["GRAD_SYNC", 1] == pytest.approx(0.1)  # an all-reduce waits inside
    assert seconds["MEM_ROOT", 0] == seconds["SAMPLE", 1] * 2 == pytest.approx(0.2)
    # without the cross-rank edge the rank itself was the wait
    assert op_seconds(rows, {})["MEM_FETCH", 1] == pytest.approx(0.6)


def test_an_all_reduce_beside_the_ops_neither_hides_their_dispatch_nor_gets_one():
    from tgpipe.dag.build import predecessors
    from tgpipe.dag.semantics import Semantics
    from tgpipe.executor.runtime_timing import op_seconds
    from tgpipe.trace import TraceRow

    rows = [  # data_parallel(2), rank 0: batch 0's all-reduce runs while batch 2 starts
        TraceRow(0, "gpu", "BWD", 0, 0.0, 1.0),
        TraceRow(0, "net", "GRAD_SYNC", 0, 1.0, 1.5),
        TraceRow(0, "cpu", "SAMPLE", 2, 1.1, 1.2),  # 0.1 of dispatch after BWD
        TraceRow(0, "gpu", "STEP", 0, 1.6, 1.7),  # 0.1 after the all-reduce it waits for
        TraceRow(1, "net", "GRAD_SYNC", 1, 1.2, 1.5),
    ]
    seconds = op_seconds(rows, predecessors(Semantics(0, 0, 2), 4))
    assert seconds["SAMPLE", 2] == pytest.approx(0.2)
    assert seconds["STEP", 0] == pytest.approx(0.2)
    assert seconds["GRAD_SYNC", 0] == pytest.approx(0.5)  # its own length: it waits inside


def test_a_write_waits_for_the_write_before_it_and_a_trace_is_one_epoch():
    from tgpipe.executor.runtime_timing import op_seconds
    from tgpipe.trace import TraceRow

    rows = [
        TraceRow(0, "d2h", "MEM_WRITE", 0, 0.0, 0.5),
        TraceRow(1, "gpu", "MEM_ROOT", 1, 0.0, 0.1),
        TraceRow(1, "d2h", "MEM_WRITE", 1, 0.5, 0.6),  # the store took it after batch 0's
    ]
    assert op_seconds(rows, {})["MEM_WRITE", 1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="several epochs"):
        op_seconds([*rows, rows[0]._replace(start=1.0, end=1.5)], {})


def test_a_replica_that_no_other_rank_reads_keeps_no_rows_to_send(wiki_slice):
    """One rank on the replica (as a profile on several machines, or `--memory rows` with
    one reader): nothing sends its writes, so none may wait in its outbox."""
    from tgpipe.executor.runtime import lower
    from tgpipe.schedules.families import sequential

    stream = Stream(wiki_slice, 600)
    schedule = sequential(None, 1, stream.n_batches(TRAIN))
    (program,) = lower(schedule).values()
    groups = {"memory": None, "weights": None}
    runner = RankRunner(0, schedule, program, stream, SMALL, groups=groups)
    runner.begin_epoch(0)
    runner.run_batches(0, 3)
    assert runner.store.version == 3 and runner.store.outbox == {}


def _data_parallel_rank(rank: int, port: int, out) -> None:
    """One of two ranks that time the ops in data parallel; rank 1's FWD takes 0.2 s more."""
    import torch.distributed as dist

    from tgpipe.executor.data import load_dataset

    if rank == 1:
        run_op = RankRunner._run_op

        def slow_fwd(self, op, state, ready):
            run_op(self, op, state, ready)
            if op == "FWD":
                time.sleep(0.2)

        RankRunner._run_op = slow_fwd
    store = dist.TCPStore("127.0.0.1", port, 2, rank == 0)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    stream = Stream(load_dataset("synthetic:300,3000"), 600)
    try:
        out.put((rank, *time_in_runtime(stream, SMALL, 1, 6, shared=True, kv=store)))
    finally:
        dist.destroy_process_group()


def test_ranks_time_their_own_batches_of_data_parallel_without_their_waits_for_others(
    monkeypatch,
):
    """Each rank times the batches data parallel gives it (rank 0 the even ones), and an op
    that waited for the other rank is timed from its own start: rank 0's reads do not hold
    the 0.2 s that they wait for rank 1 (its slow FWD delays the writes they read)."""
    import multiprocessing

    from tgpipe.executor.launch import free_port

    # the children import this module as tests.test_runtime_timing: from the checkout's root
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    ctx = multiprocessing.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_data_parallel_rank, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = {r: (seconds, batches) for r, seconds, batches in (out.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    for rank, (seconds, batches) in got.items():
        assert batches and all(b % 2 == rank for _, b in batches)
        assert set(seconds) == set(OPS) - {"GRAD_SYNC"}
        assert all(len(s) == len(batches) for s in seconds.values())
    assert min(got[1][0]["FWD"]) >= 0.2
    # rank 0's reads wait for rank 1's late writes: not in their seconds (it was 0.19-0.21 s
    # when only rank 0's rows were read)
    assert max(got[0][0]["MEM_FETCH"]) < 0.1
