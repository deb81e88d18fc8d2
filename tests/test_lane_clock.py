"""The lanes' clock: what an op is timed by, and which tensors a GPU lane marks as its own.

The CUDA half runs only where torch sees a GPU (none on the machine these tests were
written on); the host half and the tensor walk run everywhere.
"""

import time

import numpy as np
import pytest
import torch

from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.lane_clock import CudaClock, HostClock, lane_clock, tensors
from tgpipe.executor.learner import Learner
from tgpipe.executor.memory import MemoryStore
from tgpipe.executor.model import TGNConfig, build_model
from tgpipe.executor.ops import OP_FUNCS, Worker, open_batch
from tgpipe.executor.stream import Stream

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def _batch_after(ops, device="cpu"):
    g = TemporalGraph(np.arange(40) % 5, 5 + np.arange(40) % 3, np.arange(40.0))
    stream = Stream(g, batch_size=8, device=device)
    model = build_model(TGNConfig(memory_dim=8, time_dim=4, embed_dim=8)).to(device)
    worker = Worker(stream, MemoryStore(g.n_nodes, 8, model.mail_dim, device), Learner(model))
    state = open_batch(stream, 0)
    for op in ops:
        OP_FUNCS[op](state, worker)
    return state


def test_every_tensor_of_a_batch_is_found_in_its_fields_rows_and_lists():
    state = _batch_after(
        ["SAMPLE", "FEAT", "MEM_FETCH", "MEM_ROOT", "MEM_WRITE", "MEM_SUPPORT", "FWD", "BWD"]
    )
    found = {id(t) for t in tensors((state, None))}
    assert id(state.mail_event) in found  # a field
    assert all(id(t) in found for t in state.root_rows)  # a NamedTuple in a field
    assert state.grads and all(id(g) in found for g in state.grads)  # a list in a field
    assert {id(t) for t in tensors({"a": [state.mail_event]})} == {id(state.mail_event)}
    assert list(tensors(None)) == [] and list(tensors(3.0)) == []


def test_the_host_clock_times_an_op_from_the_epochs_start():
    clock = lane_clock(torch.device("cpu"))
    assert type(clock) is HostClock
    clock.start()
    time.sleep(0.01)
    with clock.lane("compute"):
        start, end = clock.time(lambda: time.sleep(0.02), uses=())
    assert 0.01 <= start < 1.0 and end - start >= 0.02  # from `start`, not from any epoch


@GPU
def test_each_cuda_lane_has_its_own_stream_and_events_time_its_kernels():
    device = torch.device("cuda", 0)
    clock = lane_clock(device)
    assert type(clock) is CudaClock
    clock.start()
    a = torch.randn(2048, 2048, device=device)
    streams, spans = {}, {}
    for lane in ("fetch", "compute"):
        with clock.lane(lane):
            streams[lane] = torch.cuda.current_stream(device)
            spans[lane] = clock.time(lambda: a @ a @ a, uses=(a,))
    assert streams["fetch"] != streams["compute"] != torch.cuda.default_stream(device)
    (s1, e1), (s2, e2) = spans["fetch"], spans["compute"]
    assert 0 <= s1 < e1 <= s2 < e2  # one after the other, each waited for


@GPU
def test_a_batch_on_the_gpu_computes_what_it_computes_on_the_cpu():
    ops = ["SAMPLE", "FEAT", "MEM_FETCH", "MEM_ROOT", "MEM_WRITE", "MEM_SUPPORT", "FWD", "BWD"]
    cpu, gpu = _batch_after(ops), _batch_after(ops, torch.device("cuda", 0))
    assert gpu.grads[0].is_cuda
    assert abs(cpu.loss_value - gpu.loss_value) <= 1e-4
    for a, b in zip(cpu.grads, gpu.grads, strict=True):
        assert (a - b.cpu()).abs().max() <= 1e-4
