"""The snapshot workload: cutting, the two GCN orders, the training semantics, determinism."""

import numpy as np
import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.data import load_dataset
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.learner import Learner
from tgpipe.executor.snapshot_model import (
    Hidden,
    SnapshotConfig,
    build_snapshot_model,
    bwd,
    forward,
    open_snapshot,
    phase_steps,
    snapshot_groups,
    step,
)
from tgpipe.executor.snapshot_reference import train_groups, train_snapshots
from tgpipe.executor.snapshots import (
    SnapshotSequence,
    cut_snapshots,
    skewed_sequence,
    split_snapshots,
)
from tgpipe.executor.stream import TRAIN

torch.set_num_threads(1)

SMALL = SnapshotConfig(in_dim=16, hidden_dim=16, lr=1e-2)
DAY = 86400.0


@pytest.fixture(scope="module")
def wiki20k(wikipedia_csv):
    return load_dataset(wikipedia_csv).slice(0, 20_000)


@pytest.fixture(scope="module")
def seq():
    return skewed_sequence(24, n_nodes=120, mean_edges=150, alpha=0.8, seed=3)


def _close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- cutting


def test_cut_wikipedia_by_day_matches_numpy(wiki20k):
    seq = cut_snapshots(wiki20k, period=DAY)
    ts, src, dst = wiki20k.ts, wiki20k.src, wiki20k.dst
    day = ((ts - ts[0]) // DAY).astype(int)
    expected_days = sorted(set(day.tolist()))
    assert [s.window for s in seq] == expected_days
    assert sum(s.n_events for s in seq) == 20_000
    for snap, d in zip(seq, expected_days, strict=True):
        inside = (ts >= ts[0] + d * DAY) & (ts < ts[0] + (d + 1) * DAY)
        ends = zip(src[inside].tolist(), dst[inside].tolist(), strict=True)
        pairs = {(min(u, v), max(u, v)) for u, v in ends if u != v}
        nodes = np.union1d(src[inside], dst[inside])
        assert snap.n_vertices == len(nodes) and snap.n_edges == len(pairs)
        assert np.array_equal(snap.nodes, nodes)
        got = snap.nodes[snap.edge_index].T.tolist()
        assert {tuple(p) for p in got} == pairs
        assert (snap.edge_index[0] < snap.edge_index[1]).all()
    assert len(seq) == 5 and seq[0].n_edges > 500  # four days of edits and part of a fifth


def test_split_is_chronological_with_one_each():
    assert [len(p) for p in split_snapshots(31)] == [21, 5, 5]
    assert [len(p) for p in split_snapshots(3)] == [1, 1, 1]
    assert [len(p) for p in split_snapshots(1)] == [1, 0, 0]
    train, val, test = split_snapshots(10)
    assert train.stop == val.start and val.stop == test.start and test.stop == 10


def test_skewed_sequence_is_deterministic_and_skewed():
    a = skewed_sequence(40, n_nodes=500, mean_edges=200, seed=7)
    b = skewed_sequence(40, n_nodes=500, mean_edges=200, seed=7)
    sizes = np.array([s.n_edges for s in a])
    assert sizes.tolist() == [s.n_edges for s in b]
    assert all(np.array_equal(x.edge_index, y.edge_index) for x, y in zip(a, b, strict=True))
    assert sizes.max() > 3 * np.median(sizes)
    assert [s.n_edges for s in skewed_sequence(40, n_nodes=500, seed=8)] != sizes.tolist()


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize("node_dim", [0, 6])  # learned embeddings, given features
def test_the_two_gcn_orders_agree(node_dim):
    seq = skewed_sequence(16, n_nodes=120, mean_edges=150, node_dim=node_dim, seed=4)
    groups = snapshot_groups(phase_steps(seq)[TRAIN], 4)
    out = {}
    for order in ("agg_first", "dense_first"):
        model = build_snapshot_model(seq.n_nodes, SMALL, seq.node_dim, seed=1)
        out[order] = train_groups(seq, model, groups, group_size=4, order=order)
    (loss_a, grads_a), (loss_d, grads_d) = out.values()
    np.testing.assert_allclose(loss_a, loss_d, atol=1e-5)
    _close(grads_a, grads_d)
    assert any(g.abs().sum() > 0 for g in grads_a)


def test_a_group_start_does_not_depend_on_earlier_snapshots(seq):
    model = build_snapshot_model(seq.n_nodes, SMALL, seed=0)
    steps = range(0, 8)
    other = skewed_sequence(24, n_nodes=120, mean_edges=150, alpha=0.8, seed=99)
    changed = SnapshotSequence(
        seq.snapshots[:1] + other.snapshots[1:2] + seq.snapshots[2:], seq.n_nodes, 1.0
    )
    base, _ = train_groups(seq, model, snapshot_groups(steps, 4), group_size=4)
    new, _ = train_groups(changed, model, snapshot_groups(steps, 4), group_size=4)
    assert new[4:] == base[4:]  # group [4, 8) starts from zeros
    assert new[2] != base[2]  # inside group [0, 4), h carries snapshot 1 forward
    whole, _ = train_groups(seq, model, snapshot_groups(steps, 8), group_size=8)
    assert whole[4] != base[4]  # with one group of 8, position 4 reads h_3


def test_hidden_state_is_detached_between_snapshots(seq):
    """Position t's gradients equal those of t alone, from h_{t-1} given as plain data."""
    model = build_snapshot_model(seq.n_nodes, SMALL, seed=0)
    hidden = Hidden(seq.n_nodes, SMALL.hidden_dim)
    for t in range(4):
        before = hidden.table.clone()
        state = open_snapshot(seq, t, group_size=4)
        forward(state, model, hidden, seq)
        grads = bwd(state, model)
        assert not hidden.table.requires_grad
        alone = Hidden(seq.n_nodes, SMALL.hidden_dim)
        alone.table = before
        again = open_snapshot(seq, t, group_size=4)
        forward(again, model, alone, seq)
        assert again.loss_value is None and float(again.loss.detach()) == state.loss_value
        for g, h in zip(grads, bwd(again, model), strict=True):
            assert torch.equal(g, h)


def test_gradients_summed_over_any_assignment_equal_the_reference(seq):
    ref = train_snapshots(seq, group_size=3, epochs=1, config=SMALL, seed=5, evaluate=False)
    groups = snapshot_groups(phase_steps(seq)[TRAIN], 3)
    assert len(groups) >= 4
    model = build_snapshot_model(seq.n_nodes, SMALL, seed=5)
    mine = groups[1::2][::-1]  # rank 0: the odd groups, last first
    theirs = groups[0::2]  # rank 1: the even groups
    loss_0, grads_0 = train_groups(seq, model, mine, group_size=3, seed=5)
    loss_1, grads_1 = train_groups(seq, model, theirs, group_size=3, seed=5)
    total = [a + b for a, b in zip(grads_0, grads_1, strict=True)]
    _close(total, ref.grads)
    by_position = dict(zip([t for g in mine + theirs for t in g], loss_0 + loss_1, strict=True))
    assert [by_position[t] for t in sorted(by_position)] == ref.losses[0]
    learner = Learner(model, SMALL.lr)
    step(learner, total)
    _close(list(model.parameters()), ref.learner.params)


def test_reference_is_deterministic(seq):
    def run(seed):
        return train_snapshots(seq, group_size=4, epochs=2, config=SMALL, seed=seed)

    a, b, c = run(0), run(0), run(1)
    assert a.losses == b.losses and (a.val, a.test) == (b.val, b.test)
    assert torch.equal(a.learner.pack(), b.learner.pack())
    assert a.losses != c.losses


def test_training_reduces_the_loss_on_a_wikipedia_slice(wiki20k):
    seq = cut_snapshots(wiki20k, period=DAY / 4)  # 6-hour snapshots: 20 of them
    config = SnapshotConfig(in_dim=16, hidden_dim=16, lr=3e-2)
    result = train_snapshots(seq, group_size=4, epochs=15, config=config, order="dense_first")
    first, last = np.mean(result.losses[0]), np.mean(result.losses[-1])
    assert last < first - 0.2, (first, last)  # about 1.41 -> 0.92
    assert 0.6 < result.val[0] <= 1 and 0.6 < result.test[1] <= 1


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("period", [0, -1.0, float("nan"), float("inf"), "day"])
def test_bad_period_is_input_error(wiki20k, period):
    with pytest.raises(InputError, match="period") as info:
        cut_snapshots(wiki20k, period=period)
    assert "\n" not in str(info.value)


def test_bad_input_is_input_error(seq):
    empty = TemporalGraph(np.zeros(0), np.zeros(0), np.zeros(0), name="empty")
    with pytest.raises(InputError, match="no events"):
        cut_snapshots(empty)
    with pytest.raises(InputError, match="order"):
        open_snapshot(seq, 0, group_size=2, order="sideways")
    with pytest.raises(InputError, match="group size"):
        train_snapshots(seq, group_size=0, config=SMALL)
    with pytest.raises(InputError, match="epochs"):
        train_snapshots(seq, epochs=0, config=SMALL)
    short = SnapshotSequence(seq.snapshots[:3], seq.n_nodes, 1.0, name="short")
    with pytest.raises(InputError, match="at least 4"):
        train_snapshots(short, config=SMALL)
    with pytest.raises(InputError, match="in_dim"):
        SnapshotConfig(in_dim=0)


def test_named_sequences_growing_skewed_and_their_limits():
    from tgpipe.executor.snapshots import load_sequence

    skewed, growing = load_sequence("skewed:12"), load_sequence("growing:12")
    edges = [s.n_edges for s in growing]
    assert edges == sorted(edges) and sorted(edges) == sorted(s.n_edges for s in skewed)
    assert [s.n_edges for s in skewed] != edges  # skewed keeps time order, unsorted
    with pytest.raises(InputError, match="4 <= N <= 100,000"):
        load_sequence("skewed:100001")
    with pytest.raises(InputError, match="--limit-events is for data files"):
        load_sequence("growing:8", limit_events=100)
