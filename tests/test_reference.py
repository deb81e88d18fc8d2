"""The reference trainer against the semantics' definition, written out plainly.

`spec_epoch` is an independent statement of the contract: full copies of the memory after
every group (V_k) and of the weights after every step (theta_k), a fresh model for every
group, nothing versioned or pruned. The reference must agree with it bit for bit.
"""

import numpy as np
import pytest
import torch

from tgpipe.dag.semantics import Semantics, data_parallel, mspipe, pipetgl, sequential
from tgpipe.errors import InputError
from tgpipe.executor.learner import Learner, copy_params, snapshot_params
from tgpipe.executor.memory import MemoryStore
from tgpipe.executor.model import TGNConfig, build_model
from tgpipe.executor.ops import (
    average_grads,
    bwd,
    feat,
    fwd,
    mem_fetch,
    mem_root,
    mem_support,
    mem_write,
    open_batch,
    sample,
)
from tgpipe.executor.reference import Reference, train
from tgpipe.executor.stream import TRAIN, Stream
from tgpipe.executor.versions import memory_version, weight_version

torch.set_num_threads(1)

SMALL = TGNConfig(memory_dim=16, time_dim=8, embed_dim=16, neighbors=5, lr=1e-3)


def spec_epoch(stream, semantics, learner, epoch=0):
    """One epoch by the definition; returns (losses, memory table after the last write)."""
    s_mem, s_w, g = semantics
    n = stream.n_batches(TRAIN)
    live = MemoryStore(stream.graph.n_nodes, SMALL.memory_dim, learner.model.mail_dim)
    versions = [live.table.clone()]  # V_0, V_1, ...: the memory after each group
    thetas = [snapshot_params(learner.model)]  # theta_0, theta_1, ...: after each step
    losses = []
    for group in range(-(-n // g)):
        model = build_model(SMALL, seed=99)
        copy_params(model, thetas[max(0, group - s_w)])
        snapshot = MemoryStore(live.n_nodes, live.dim, live.mail_dim)
        snapshot.table = versions[max(0, group - s_mem)].clone()
        grads = []
        for b in range(group * g, min(n, group * g + g)):
            state = open_batch(stream, b, epoch=epoch)
            state.mem_version = 0  # read the snapshot as it is
            sample(state, stream)
            feat(state, stream)
            mem_fetch(state, snapshot)
            mem_root(state, model)
            mem_write(state, live)  # writes go to the live memory, in batch order
            mem_support(state, snapshot, model)
            fwd(state, model)
            bwd(state, model)
            losses.append(state.loss_value)
            grads.append(state.grads)
        learner.step(average_grads(grads))
        versions.append(live.table.clone())
        thetas.append(snapshot_params(learner.model))
    return losses, versions[-1]


def spec_train(stream, semantics, epochs):
    learner = Learner(build_model(SMALL, seed=stream.seed), SMALL.lr)
    runs = [spec_epoch(stream, semantics, learner, epoch) for epoch in range(epochs)]
    return [r[0] for r in runs], runs[-1][1], learner


@pytest.fixture
def stream(wiki_slice):
    return Stream(wiki_slice, 200, seed=1, neighbors=SMALL.neighbors)


@pytest.mark.parametrize(
    "semantics",
    [sequential(), Semantics(1, 0, 1), pipetgl(3), data_parallel(2), mspipe(2, k=2)],
    ids=str,
)
def test_reference_is_the_definition(stream, semantics):
    ref = Reference(stream, semantics, SMALL)
    losses = [ref.train_epoch(epoch) for epoch in range(2)]
    spec_losses, spec_table, spec_learner = spec_train(stream, semantics, epochs=2)
    assert losses == spec_losses
    for got, want in zip(ref.store.table, spec_table, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(ref.learner.pack(), spec_learner.pack())
    assert ref.learner.steps == 2 * -(-stream.n_batches(TRAIN) // semantics.g)


def test_stale_memory_changes_only_the_reads(stream):
    seq = Reference(stream, sequential(), SMALL)
    stale = Reference(stream, Semantics(1, 0, 1), SMALL)
    a, b = seq.train_epoch(), stale.train_epoch()
    assert a[0] == b[0]  # both read V_0 and theta_0
    assert a[1] != b[1]  # batch 1 reads V_1 or V_0
    assert [memory_version(Semantics(1, 0, 1), i) for i in range(4)] == [0, 0, 1, 2]
    assert [weight_version(Semantics(1, 0, 1), i) for i in range(4)] == [
        weight_version(sequential(), i) for i in range(4)
    ]


def test_a_group_of_two_steps_with_the_mean_gradient(wiki_slice):
    # two training batches: one group, one step from theta_0 with both batches reading V_0
    stream = Stream(wiki_slice, 1050, seed=2, neighbors=SMALL.neighbors)
    assert stream.n_batches(TRAIN) == 2
    ref = Reference(stream, data_parallel(2), SMALL)
    ref.train_epoch()
    model = build_model(SMALL, seed=2)
    learner = Learner(model, SMALL.lr)
    grads = []
    for b in range(2):
        store = MemoryStore(stream.graph.n_nodes, 16, model.mail_dim)  # V_0: all zeros
        state = open_batch(stream, b)
        state.mem_version = 0
        for op in (sample, feat):
            op(state, stream)
        mem_fetch(state, store)
        mem_root(state, model)
        mem_support(state, store, model)
        fwd(state, model)
        bwd(state, model)
        grads.append(state.grads)
    mean = [(a + b) / 2 for a, b in zip(*grads, strict=True)]
    learner.step(mean)
    assert torch.equal(ref.learner.pack(), learner.pack())
    only_first = Learner(build_model(SMALL, seed=2), SMALL.lr)
    only_first.step(grads[0])
    assert not torch.equal(ref.learner.pack(), only_first.pack())


def test_runs_are_deterministic(wiki_slice):
    a = train(wiki_slice, pipetgl(2), batch_size=200, seed=3, config=SMALL)
    b = train(wiki_slice, pipetgl(2), batch_size=200, seed=3, config=SMALL)
    assert a.losses == b.losses and a.test == b.test and a.val == b.val
    assert torch.equal(a.learner.pack(), b.learner.pack())
    assert all(torch.equal(x, y) for x, y in zip(a.store.table, b.store.table, strict=True))
    c = train(wiki_slice, pipetgl(2), batch_size=200, seed=4, config=SMALL)
    assert c.losses != a.losses


def test_loss_decreases_and_evaluation_scores(wiki_slice):
    result = train(wiki_slice, batch_size=200, epochs=4, config=SMALL, validate_each_epoch=True)
    means = [np.mean(epoch) for epoch in result.losses]
    assert means[-1] < means[0] - 0.05
    assert len(result.val) == 4 and len(result.seconds) == 4
    ap, auc = result.test
    assert 0.5 < ap <= 1 and 0.5 < auc <= 1


def test_evaluation_leaves_the_training_memory_alone(stream):
    ref = Reference(stream, sequential(), SMALL)
    ref.train_epoch()
    before = ref.store.table.clone()
    version = ref.store.version
    scores = ref.evaluate()
    assert ref.store.version == version
    assert all(torch.equal(x, y) for x, y in zip(ref.store.table, before, strict=True))
    assert set(scores) == {1, 2}


def test_bad_arguments(wiki_slice):
    with pytest.raises(InputError, match="epochs"):
        train(wiki_slice, epochs=0)
    with pytest.raises(InputError, match="neighbours"):
        Reference(Stream(wiki_slice, 200, neighbors=3), config=SMALL)
    with pytest.raises(InputError, match="g must"):
        Reference(Stream(wiki_slice, 200, neighbors=5), Semantics(0, 0, 0), SMALL)
