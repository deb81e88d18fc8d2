"""tgpipe profile: op costs of real batches, links between real ranks, a profile that loads."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tgpipe.cli import main
from tgpipe.dag import OPS, load_profile
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.learner import Learner
from tgpipe.executor.model import TGNConfig, build_model
from tgpipe.executor.profiler import (
    link_from,
    measure_loopback,
    measure_ops,
    median_spread,
)
from tgpipe.executor.stream import Stream

SMALL = TGNConfig(memory_dim=8, time_dim=4, embed_dim=8)


def profile(folder, *args) -> subprocess.CompletedProcess:
    """`tgpipe profile` on a small synthetic stream, as a user runs it."""
    r = subprocess.run(
        [sys.executable, "-m", "tgpipe", "profile", "--data", "synthetic:300,3000", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One real run of the command on 2 gloo ranks."""
    folder = tmp_path_factory.mktemp("profile")
    r = profile(folder, "--warmup", "1", "--repeat", "5", "-o", "p.json")
    return r, folder / "p.json"


def test_the_profile_loads_back_measured_with_every_op(measured):
    r, path = measured
    p = load_profile(path)
    assert p.to_dict() == json.loads(path.read_text())
    assert p.source == "measured" and p.name == "p" and p.batch_size == 600
    assert p.device and p.cpu_cores >= 1 and "tgpipe profile" in p.note
    assert "by the runtime itself on data parallel over all ranks" in p.note  # CPU, 2 ranks
    assert "a shared memory store" in p.note  # every rank on one machine
    assert list(p.ops) == list(OPS)
    for op, cost in p.ops.items():
        assert cost.median > 0 and cost.spread >= 0, op
    assert p.meta["repeat"] == 5 and p.meta["train_batches"] == 4  # 2,100 events
    assert all(op in r.stdout for op in OPS) and "wrote profile p.json" in r.stdout


def test_two_ranks_measure_the_link_and_the_allreduce(measured):
    r, path = measured
    p = load_profile(path)
    assert p.intra.latency > 0 and p.intra.bandwidth > 1e6
    assert "rank 0 with rank 1 over gloo" in p.meta["links"]["intra"]["how"]
    assert p.inter == p.intra  # one machine
    a = p.meta["allreduce"]
    assert a["ranks"] == 2 and a["median"] > 0 and a["bytes"] == p.ops["GRAD_SYNC"].bytes
    assert p.cost("GRAD_SYNC", 2) == a["median"] == p.allreduce[2]  # kept, and used
    link_model = dataclasses.replace(p, allreduce={})
    assert a["predicted"] == pytest.approx(link_model.cost("GRAD_SYNC", 2))
    # what a handed learner costs each end's core, from the runtime's calls
    assert len(p.handoff_cpu) == 2 and all(0 < t < 0.1 for t in p.handoff_cpu)
    assert "a learner handed on costs its sender's core" in r.stdout
    # what the all-reduce costs an op beside it on a rank's core, printed and kept
    assert p.allreduce_cpu == ({2: a["cpu"]} if a["cpu"] else {}) and 0 <= a["cpu"] < 0.1
    assert "an op beside it takes" in r.stdout


def test_one_rank_still_writes_a_profile_with_a_loopback_link(tmp_path):
    profile(tmp_path, "--nproc", "1", "--warmup", "0", "--repeat", "2", "-o", "one.json")
    p = load_profile(tmp_path / "one.json")
    assert p.intra.latency > 0 and p.inter == p.intra and "allreduce" not in p.meta
    assert "TCP loopback" in p.meta["links"]["intra"]["how"] and "TCP loopback" in p.note
    assert "by the runtime itself on the sequential schedule" in p.note


def test_two_machines_profile_the_link_between_them_and_time_the_ops_on_replicas(tmp_path):
    """torchrun --nnodes 2 on loopback: each "machine" times its ops in the runtime on a
    memory replica (as runs across machines use) and rank 0 measures the link between."""
    from tgpipe.executor.launch import free_port

    port = str(free_port())
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
            + ["--nproc-per-node", "1", "--node-rank", str(node), "--master-addr", "127.0.0.1"]
            + ["--master-port", port, "-m", "tgpipe", "profile"]
            + ["--data", "synthetic:300,3000", "--warmup", "1", "--repeat", "3"]
            + ["-o", str(tmp_path / f"p{node}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        errors = [p.communicate(timeout=120)[1] for p in launchers]
    finally:
        for p in launchers:
            p.kill()
    assert [p.returncode for p in launchers] == [0, 0], errors[0][-2000:]
    p = load_profile(tmp_path / "p0.json")
    assert (
        "by the runtime itself on data parallel over all ranks (lane threads, a memory replica"
        in p.note
    )
    assert "rank 0 with rank 1 over gloo" in p.meta["links"]["inter"]["how"]
    assert all(p.ops[op].median > 0 for op in OPS)


def test_bytes_are_those_of_the_catalog_and_the_model(measured):
    p = load_profile(measured[1])
    moving = {op for op in OPS if OPS[op].moves_bytes}
    assert {op for op, c in p.ops.items() if c.bytes} == moving
    n_params = sum(q.numel() for q in build_model(TGNConfig()).parameters())
    assert p.ops["GRAD_SYNC"].bytes == 4 * n_params  # float32 gradients
    assert p.ops["STEP"].bytes == 4 * (3 * n_params + 1)  # weights, Adam moments, step
    assert p.ops["MEM_WRITE"].bytes == p.ops["MEM_FETCH"].bytes  # the roots' rows


def test_simulate_and_search_take_the_measured_profile(measured, tmp_path, capsys):
    path = str(measured[1])
    assert main(["simulate", "--profile", path, "--gpus", "2", "--batches", "20"]) == 0
    assert "p (measured)" in capsys.readouterr().out
    best = str(tmp_path / "best.txt")
    assert main(["search", "--profile", path, "--gpus", "2", "-o", best]) == 0


def test_ops_are_timed_on_real_batches_in_training_order(wiki_slice):
    stream = Stream(wiki_slice, 600)  # 4 training batches: the 6 measured wrap to epoch 1
    m = measure_ops(stream, SMALL, 2, 6)
    assert m.batches == [(0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert all(len(s) == 6 and min(s) > 0 for s in m.seconds.values())
    rows = m.bytes["MEM_FETCH"]
    assert rows > 0 and rows % (4 * 8 + 8 + 4 * 16 + 8) == 0  # whole rows of the store
    learner = Learner(build_model(SMALL))
    assert m.bytes["STEP"] == learner.pack().numel() * 4
    assert m.bytes["GRAD_SYNC"] == sum(t.numel() * 4 for t in m.grads)
    assert set(m.costs()) == set(OPS)


def test_without_ranks_grad_sync_still_has_a_time():
    g = TemporalGraph(np.arange(90) % 6, 6 + np.arange(90) % 4, np.arange(90.0))
    m = measure_ops(Stream(g, 30), SMALL, 0, 2)
    assert min(m.seconds["GRAD_SYNC"]) > 0
    assert len(m.grads) == len(list(build_model(SMALL).parameters()))


def test_median_spread_ignores_the_odd_slow_run():
    assert median_spread([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 1.0)


def test_link_reproduces_both_measurements():
    link, detail = link_from([2e-4] * 5, [4.2e-3] * 5, 10**6)
    assert link.latency == pytest.approx(1e-4)
    assert link.time(8) == pytest.approx(1e-4, rel=1e-3)
    assert link.time(10**6) == pytest.approx(2.1e-3)
    assert detail["large_message_bytes"] == 10**6 and detail["round_trips"] == [5, 5]
    noisy, _ = link_from([2e-3] * 3, [1e-3] * 3, 10**6)  # large faster than small: noise
    assert noisy.bandwidth == pytest.approx(2e9)


def test_one_rank_measures_the_tcp_loopback():
    link, detail = measure_loopback()
    assert link.latency > 0 and link.bandwidth > 1e6
    assert detail["round_trips"][0] > 0


def test_an_op_beside_a_call_takes_longer_by_the_calls_core_time_not_its_wait():
    """`time_beside` with the process on one core: a call whose thread computes for 4 ms
    (torch, which lets go of Python's lock, as gloo's threads do) slows an op beside it by
    about that or more (the two threads also take turns at Python's lock); one that sleeps
    4 ms (as a rank waiting for a peer's bytes) by far less."""
    import time

    import torch

    from tgpipe.executor.profiler import time_beside

    a = torch.rand(160, 160)

    def busy() -> None:
        end = time.perf_counter() + 4e-3
        while time.perf_counter() < end:
            a @ a

    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        os.sched_setaffinity(0, {min(cores)})
        torch.set_num_threads(1)
        slower = time_beside(busy, 4e-3, 10, barrier=lambda: None)
        slept = time_beside(lambda: time.sleep(4e-3), 4e-3, 10, barrier=lambda: None)
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
    assert slower > 2e-3  # at least half of the call's 4 ms
    assert slept < slower / 4


def test_an_allreduce_that_costs_an_op_nothing_keeps_no_share_of_the_core(hand):
    """`tgpipe profile` keeps what an all-reduce costs an op beside it where it measured
    more than nothing, on CPU ranks of one machine; a 0 is in meta alone, and the profile
    loads back."""
    from tgpipe.dag import CostProfile
    from tgpipe.executor.profile_cli import _with_allreduce

    cpu = dataclasses.replace(hand(), compute="cpu")
    kept = _with_allreduce(cpu, [3e-3, 4e-3], 1e-3, 2, [0, 0])
    assert kept.allreduce == {2: 3.5e-3} and kept.allreduce_cpu == {2: 1e-3}
    for beside, nodes in ((0.0, [0, 0]), (None, [0, 0]), (1e-3, [0, 1])):
        p = _with_allreduce(cpu, [3e-3, 4e-3], beside, 2, nodes)
        assert p.allreduce_cpu == {}
        assert CostProfile.from_dict(p.to_dict()) == p
