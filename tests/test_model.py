"""TGN, its op functions, negatives, the learner and the scores."""

import numpy as np
import pytest
import torch

from tgpipe.dag.ops import OPS
from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.learner import Learner, snapshot_params
from tgpipe.executor.memory import MemoryRows, MemoryStore
from tgpipe.executor.model import TGNConfig, build_model
from tgpipe.executor.ops import (
    OP_FUNCS,
    Worker,
    average_grads,
    bwd,
    feat,
    fwd,
    grad_sync,
    mem_fetch,
    mem_root,
    mem_support,
    mem_write,
    open_batch,
    sample,
)
from tgpipe.executor.scores import average_precision, roc_auc
from tgpipe.executor.stream import TEST, TRAIN, VAL, Stream

torch.set_num_threads(1)

SMALL = TGNConfig(memory_dim=8, time_dim=4, embed_dim=8, neighbors=3)


def run_batch(state, stream, store, model):
    """Every op up to FWD, reading and writing `store` (which must be at the batch's version)."""
    for op in (sample, feat):
        op(state, stream)
    mem_fetch(state, store)
    mem_root(state, model)
    mem_write(state, store)
    mem_support(state, store, model)
    fwd(state, model)


# negatives ----------------------------------------------------------------------------


def test_negatives_are_a_pure_function_of_seed_epoch_phase_batch(random_graph):
    graph = random_graph(n_events=400, seed=1)
    a, b = Stream(graph, 50, seed=3), Stream(graph, 50, seed=3)
    first = a.negatives(TRAIN, 2, 5, 50)
    a.negatives(TRAIN, 0, 0, 50)  # other draws in between change nothing
    assert np.array_equal(first, a.negatives(TRAIN, 2, 5, 50))
    assert np.array_equal(first, b.negatives(TRAIN, 2, 5, 50))
    assert np.isin(first, graph.dst).all()
    others = [
        Stream(graph, 50, seed=4).negatives(TRAIN, 2, 5, 50),
        a.negatives(TRAIN, 1, 5, 50),
        a.negatives(TRAIN, 2, 6, 50),
        a.negatives(VAL, 2, 5, 50),
    ]
    assert not any(np.array_equal(first, o) for o in others)


def test_stream_batches_follow_the_split(random_graph):
    graph = random_graph(n_events=100)
    stream = Stream(graph, 30)
    bounds = [len(p) for p in graph.split()]
    assert stream.bounds[0] == (0, bounds[0]) and stream.bounds[2][1] == 100
    assert stream.events(TRAIN, 0) == (0, 30)
    assert stream.events(TEST, stream.n_batches(TEST) - 1)[1] == 100
    with pytest.raises(InputError, match="no val batch"):
        stream.events(VAL, stream.n_batches(VAL))


# roots, mails and memory writes -------------------------------------------------------------


def tiny_stream():
    # events: 0->5, 1->5, 0->6, 2->2 (a self-loop), then more so that the split has room
    src = np.array([0, 1, 0, 2] + [3] * 8)
    dst = np.array([5, 5, 6, 2] + [4] * 8)
    return Stream(TemporalGraph(src, dst, np.arange(12.0)), batch_size=4, neighbors=3)


def test_each_root_keeps_the_mail_of_its_last_event():
    stream = tiny_stream()
    state = open_batch(stream, 0)
    assert state.roots.tolist() == [0, 1, 2, 5, 6]
    # 0: event 2 (with 6); 1: event 1 (with 5); 2: its self-loop; 5: event 1 (with 1); 6: event 2
    assert state.mail_event.tolist() == [2, 1, 3, 1, 2]
    assert state.roots[state.mail_other.numpy()].tolist() == [6, 5, 2, 1, 0]


def test_mem_write_stores_memory_and_mails_as_documented():
    stream = tiny_stream()
    model = build_model(SMALL, seed=0)
    store = MemoryStore(stream.graph.n_nodes, 8, model.mail_dim)
    state = open_batch(stream, 0)
    run_batch(state, stream, store, model)
    mem = state.root_mem.detach()
    row = store.read(state.roots, 1)
    assert torch.equal(row.mem, mem)
    assert torch.equal(row.mem_ts, torch.zeros(5, dtype=torch.float64))  # the applied mails' time
    assert row.mail_ts.tolist() == [2.0, 1.0, 3.0, 1.0, 2.0]
    assert torch.equal(row.mail[0], torch.cat([mem[0], mem[4]]))  # node 0: [mem_0, mem_6]
    assert torch.equal(row.mail[3], torch.cat([mem[3], mem[1]]))  # node 5: [mem_5, mem_1]
    # the next update of node 0 sees dt = mail_ts - mem_ts = 2
    again = model.update_memory(row.take(torch.tensor([0])))
    by_hand = model.gru(
        torch.cat([row.mail[:1], model.memory_time(torch.tensor([2.0]))], dim=1), row.mem[:1]
    )
    assert torch.allclose(again, by_hand)


def test_edge_features_go_into_mails(random_graph):
    graph = random_graph(n_events=200, edge_dim=3, node_dim=2, seed=5)
    stream = Stream(graph, 40, neighbors=3)
    model = build_model(SMALL, edge_dim=3, node_dim=2)
    store = MemoryStore(graph.n_nodes, 8, model.mail_dim)
    state = open_batch(stream, 0)
    run_batch(state, stream, store, model)
    event = state.mail_event[0].item()
    assert np.array_equal(store.table.mail[state.roots[0], 16:].numpy(), graph.edge_feat[event])
    assert torch.isfinite(state.loss)


def test_memory_update_depends_on_the_rows_only():
    model = build_model(SMALL, seed=1)
    rng = np.random.default_rng(0)
    rows = MemoryRows(
        torch.randn(6, 8), torch.rand(6).double(), torch.randn(6, 16), torch.rand(6).double() + 1
    )
    alone = model.update_memory(rows.take(torch.tensor([2])))
    within = model.update_memory(rows.take(torch.from_numpy(rng.permutation(6))))
    assert torch.allclose(alone[0], within[(within - alone).abs().sum(1).argmin()], atol=1e-6)


def test_padding_does_not_change_embeddings(random_graph):
    stream = Stream(random_graph(n_events=300, n_nodes=100, seed=2), 60, neighbors=3)
    model = build_model(SMALL)
    store = MemoryStore(stream.graph.n_nodes, 8, model.mail_dim)
    for batch in range(2):
        state = open_batch(stream, batch)
        run_batch(state, stream, store, model)
    padded = ~state.x_mask
    assert padded.any() and state.x_mask.any()
    memory = torch.cat([state.root_mem, state.support_mem]).detach()
    args = (state.x_query, state.x_nbr, state.x_mask, state.x_slots, state.x_dt)
    z = model.embed(memory, *args)
    moved = state.x_nbr.clone()
    moved[padded] = len(memory) - 1
    z2 = model.embed(memory, state.x_query, moved, *args[2:])
    assert torch.equal(z, z2)
    # while a real neighbour's memory does count
    real = state.x_nbr[state.x_mask][0]
    memory[real] += 1.0
    assert not torch.equal(z, model.embed(memory, *args))


def test_support_is_neighbours_and_negatives_minus_roots(random_graph):
    stream = Stream(random_graph(n_events=300, seed=3), 60, neighbors=3)
    state = open_batch(stream, 2)
    sample(state, stream)
    expected = set(state.nbrs.nodes[state.nbrs.mask].tolist()) | set(state.neg.tolist())
    assert set(state.support.tolist()) == expected - set(state.roots.tolist())
    table = np.concatenate([state.roots, state.support])
    assert np.array_equal(table[state.query_row], state.queries)
    assert np.array_equal(table[state.nbr_row][state.nbrs.mask], state.nbrs.nodes[state.nbrs.mask])
    pairs = state.queries[state.pair_query]
    assert np.array_equal(pairs, np.concatenate([state.src, state.dst, state.neg]))


# model and learner ---------------------------------------------------------------------------


def test_initial_weights_depend_on_the_seed_only():
    torch.manual_seed(123)
    a = snapshot_params(build_model(SMALL, seed=7))
    torch.rand(10)
    b = snapshot_params(build_model(SMALL, seed=7))
    c = snapshot_params(build_model(SMALL, seed=8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_config_is_checked():
    with pytest.raises(InputError, match="multiple of heads"):
        TGNConfig(embed_dim=5, heads=2)
    with pytest.raises(InputError, match="memory_dim"):
        TGNConfig(memory_dim=0)


def test_learner_pack_round_trip_continues_identically():
    a = Learner(build_model(SMALL, seed=0), lr=0.01)
    grads = [torch.randn_like(p) for p in a.params]
    a.step(grads)
    b = Learner(build_model(SMALL, seed=1), lr=0.01)
    b.unpack(a.pack())
    a.step(grads)
    b.step(grads)
    assert torch.equal(a.pack(), b.pack()) and b.steps == 2
    assert a.packed_size() == a.pack().numel()
    fresh = Learner(build_model(SMALL, seed=0), lr=0.01)
    fresh.unpack(Learner(build_model(SMALL, seed=0), lr=0.01).pack())
    assert fresh.steps == 0


def test_learner_steps_as_adam_per_parameter_and_adopts_without_copying():
    """The learner's one flat Adam equals torch's Adam over the model's parameters; a
    learner that adopts a packed tensor steps it in place and leaves its old storage as
    it was (what a ring hands on)."""
    a = Learner(build_model(SMALL, seed=0), lr=0.01)
    model = build_model(SMALL, seed=0)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a.params]
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
        adam.step()
        a.step(grads)
    for p, q in zip(model.parameters(), a.model.parameters(), strict=True):
        assert torch.equal(p, q)
    old, handed = a.flat, a.pack()
    kept = old.clone()
    a.adopt(handed)
    a.step(grads)
    assert a.flat is handed and torch.equal(old, kept) and not torch.equal(handed, kept)
    assert a.steps == 4 and a.params[0].data_ptr() == handed.data_ptr()


def test_bwd_gives_one_gradient_per_parameter(random_graph):
    stream = Stream(random_graph(n_events=300, seed=6), 60, neighbors=3)
    model = build_model(SMALL)
    store = MemoryStore(stream.graph.n_nodes, 8, model.mail_dim)
    for batch in range(2):
        state = open_batch(stream, batch)
        run_batch(state, stream, store, model)
    with torch.no_grad():
        loss = state.loss.item()
    bwd(state, model)
    assert state.loss_value == loss
    assert [g.shape for g in state.grads] == [p.shape for p in model.parameters()]
    assert all(torch.isfinite(g).all() for g in state.grads)
    assert sum(float(g.abs().sum()) for g in state.grads) > 0


# gradient averaging --------------------------------------------------------------------------


def test_average_grads_is_the_mean():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    b = [torch.tensor([3.0, 6.0]), torch.tensor([[0.0]])]
    mean = average_grads([a, b])
    assert mean[0].tolist() == [2.0, 4.0] and mean[1].tolist() == [[2.0]]


def test_grad_sync_all_reduces_the_mean(monkeypatch):
    import torch.distributed as dist

    other = [torch.tensor([3.0, 6.0]), torch.tensor([[0.0]])]
    flat_other = torch.cat([g.reshape(-1) for g in other])

    def fake_all_reduce(tensor, group=None):
        tensor += flat_other  # a second rank's gradients

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    state = open_batch(tiny_stream(), 0)
    state.grads = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    expected = average_grads([state.grads, other])
    grad_sync(state)
    assert all(torch.equal(g, e) for g, e in zip(state.grads, expected, strict=True))


def test_grad_sync_is_a_no_op_without_torch_distributed():
    state = open_batch(tiny_stream(), 0)
    state.grads = [torch.tensor([1.0])]
    grad_sync(state)
    assert state.grads[0].tolist() == [1.0]


# the op table --------------------------------------------------------------------------------


def test_op_funcs_cover_the_catalog_and_run_a_batch():
    assert set(OP_FUNCS) == set(OPS)
    stream = tiny_stream()
    model = build_model(SMALL)
    worker = Worker(stream, MemoryStore(stream.graph.n_nodes, 8, model.mail_dim), Learner(model))
    state = open_batch(stream, 0)
    before = snapshot_params(model)
    for op in OPS:
        OP_FUNCS[op](state, worker)
    assert worker.store.version == 1 and worker.learner.steps == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# scores --------------------------------------------------------------------------------------


def test_scores_by_hand():
    # ranks 4 > 3 > 2 > 1 with labels 1 0 1 0: precision 1 at recall 1/2, 2/3 at recall 1
    assert average_precision([4, 3, 2, 1], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert roc_auc([4, 3, 2, 1], [1, 0, 1, 0]) == pytest.approx(3 / 4)
    # perfect and reversed rankings
    assert average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    # ties: one threshold for the tied pair, AUC counts the tie as one half
    assert average_precision([1, 1], [1, 0]) == 0.5
    assert roc_auc([1, 1], [1, 0]) == 0.5
    # [0.8 (1), 0.5 (1), 0.5 (0), 0.2 (0)]: thresholds 0.8 -> P=1 R=1/2; 0.5 -> P=2/3 R=1
    assert average_precision([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # pairs: (0.8 > 0.5, 0.8 > 0.2, 0.5 = 0.5, 0.5 > 0.2) -> 3.5 / 4
    assert roc_auc([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_scores_reject_bad_input():
    with pytest.raises(InputError, match="both positive and negative"):
        roc_auc([1, 2], [1, 1])
    with pytest.raises(InputError, match="0 or 1"):
        average_precision([1, 2], [1, 2])
    with pytest.raises(InputError, match="scores for"):
        average_precision([1, 2, 3], [1, 0])
