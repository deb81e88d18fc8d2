"""The vertex partition's part ops: parts that swap their rows by hand (a dict for the
network) must add up to the reference's losses and gradients, in both GCN orders, with
learned embeddings and with given node features, for 2 and 3 parts. The runtime that sends
the same rows over gloo is checked in `test_snapshot_runtime`."""

import numpy as np
import pytest
import torch

from tgpipe.executor.snapshot_model import (
    Hidden,
    SnapshotConfig,
    build_snapshot_model,
    bwd,
    forward,
    open_snapshot,
    zero_grads,
)
from tgpipe.executor.snapshot_parts import PartPlan, PartState, part_of
from tgpipe.executor.snapshots import skewed_sequence

torch.set_num_threads(1)
CFG = SnapshotConfig(in_dim=8, hidden_dim=8)
GROUP = 3


def _parts_epoch(seq, model, order, parts):
    """Every training position of groups 0-1 through `parts` parts; returns (per-position
    loss, summed gradients, messages that crossed parts)."""
    hidden = [Hidden(seq.n_nodes, CFG.hidden_dim) for _ in range(parts)]
    grads, losses, net = zero_grads(model), [], {}

    def send(kind, part, rows):
        net.update({(kind, part.whole.t, part.p, q): r.clone() for q, r in rows.items()})

    def take(kind, part, sources):
        return {q: net[kind, part.whole.t, q, part.p] for q in sources}

    for t in range(2 * GROUP):
        whole = open_snapshot(seq, t, group_size=GROUP, order=order)
        plan = PartPlan.of(whole, parts)
        ps = [PartState(whole, plan, p) for p in range(parts)]
        for x in ps:
            x.load(seq.node_feat)
            if order == "agg_first":
                send("pre", x, x.make_pre(model))
        for x in ps:
            if order == "dense_first":
                send("pre", x, x.dense(model))
        for x in ps:
            x.agg(model, take("pre", x, plan.received("pre", x.p)))
            if order == "agg_first":
                x.dense(model)
        for x in ps:
            send("h", x, x.rnn(model, hidden[x.p]))
        for x in ps:
            send("dh", x, x.loss_grads(model, take("h", x, plan.received("h", x.p))))
        for x in ps:
            send("dpre", x, x.state_grads(model, take("dh", x, plan.sent("h", x.p))))
        for x in ps:
            returned = x.pre.requires_grad and plan.n_pos
            x.input_grads(model, take("dpre", x, plan.sent("pre", x.p)) if returned else {})
        losses.append(sum(x.loss_value for x in ps))
        for x in ps:
            for total, g in zip(grads, x.grads, strict=True):
                total.add_(g)
    return losses, grads, len(net)


@pytest.mark.parametrize("order", ["agg_first", "dense_first"])
@pytest.mark.parametrize("node_dim", [0, 5])
@pytest.mark.parametrize("parts", [2, 3])
def test_parts_add_up_to_the_reference(order, node_dim, parts):
    seq = skewed_sequence(10, n_nodes=60, mean_edges=80, node_dim=node_dim, seed=3)
    model = build_snapshot_model(seq.n_nodes, CFG, seq.node_dim)
    hidden, ref, ref_losses = Hidden(seq.n_nodes, CFG.hidden_dim), zero_grads(model), []
    for t in range(2 * GROUP):
        state = open_snapshot(seq, t, group_size=GROUP, order=order)
        forward(state, model, hidden, seq)
        bwd(state, model, ref)
        ref_losses.append(state.loss_value)
    losses, grads, sent = _parts_epoch(seq, model, order, parts)
    assert sent > 0  # rows did cross parts
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, grads, strict=True)) <= 1e-6
    assert any(float(g.abs().max()) > 0 for g in grads)


def test_a_plan_splits_rows_by_owner_and_names_every_crossing():
    seq = skewed_sequence(4, n_nodes=40, mean_edges=60, seed=1)
    whole = open_snapshot(seq, 1, group_size=2)
    plan = PartPlan.of(whole, 3)
    owner = part_of(whole.nodes, 3)
    assert sorted(np.concatenate(plan.own).tolist()) == list(range(len(whole.nodes)))
    assert all((owner[own] == p).all() for p, own in enumerate(plan.own))
    assert sorted(np.concatenate(plan.pairs).tolist()) == list(range(plan.n_pos))
    row, col = whole.adj
    for (p, q), rows in plan.agg_rows.items():  # exactly q's columns of p's rows
        assert p != q and (owner[rows] == q).all()
        assert set(rows) == set(col[(owner[row] == p) & (owner[col] == q)])
    for p in range(3):  # what p sends to q is what q receives from p, in the same order
        for q, pos in plan.sent("h", p).items():
            assert plan.own[p][pos].tolist() == plan.received("h", q)[p].tolist()
    kinds = {m[0] for p in range(3) for m in plan.messages(p, pre_grad=True)}
    assert kinds == {"pre", "h", "dh", "dpre"}
    assert all(m[0] != "dpre" for p in range(3) for m in plan.messages(p, pre_grad=False))
