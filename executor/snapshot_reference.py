"""The reference trainer of the snapshot workload: its training semantics, in one process.

It is the yardstick of distributed snapshot runs: a run that assigns groups of snapshots to
ranks must end with the weights, Adam state and per-snapshot losses this trainer computes
(up to the rounding of summing gradients in another grouping: tolerance 1e-5). It calls the
ops of `tgpipe.executor.snapshot_model`, one snapshot after the other, in position order,
under the semantics written there: the hidden state is reset at each group's start and
detached between snapshots, every snapshot of an epoch computes with the epoch's starting
weights, and the epoch's gradients are summed in position order into one Adam step.

`train_groups` is the unit a rank runs: some groups, their losses and their summed
gradients; the reference's epoch is `train_groups` over all groups, then STEP.

The GCN order may differ from group to group (`orders`, indexed by group number as
`tgpipe.dag.snapshot.SnapshotWorkload.order` indexes them): BLAD's pairing writes the second
worker's groups DENSE-first, and a run of such a schedule is compared with the reference
under the same orders. Evaluation runs with the first order.

Evaluation: after training, with the final weights, each validation (test) position t, whose
target snapshot t+1 is a validation (test) snapshot, is scored after running its group from
the group's start, as in training; AP and AUC are the means over positions of each
position's AP and AUC (positions with no positive are skipped).

Examples
--------
>>> from tgpipe.executor.snapshots import skewed_sequence
>>> seq = skewed_sequence(12, n_nodes=40, mean_edges=60, alpha=0.5, seed=1)
>>> cfg = SnapshotConfig(in_dim=8, hidden_dim=8)
>>> result = train_snapshots(seq, group_size=3, epochs=2, config=cfg)
>>> [len(x) for x in result.losses], result.learner.steps, 0 <= result.test[0] <= 1
([7, 7], 2, True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tgpipe.errors import InputError
from tgpipe.executor.learner import Learner
from tgpipe.executor.scores import average_precision, roc_auc
from tgpipe.executor.snapshot_model import (
    ORDERS,
    Hidden,
    SnapshotConfig,
    SnapshotGNN,
    build_snapshot_model,
    bwd,
    forward,
    open_snapshot,
    phase_steps,
    snapshot_groups,
    step,
    zero_grads,
)
from tgpipe.executor.snapshots import SnapshotSequence, check_length
from tgpipe.executor.stream import PHASES, TEST, TRAIN, VAL
from tgpipe.progress import Progress

__all__ = ["SnapshotResult", "evaluate_snapshots", "train_groups", "train_snapshots"]


@dataclass
class SnapshotResult:
    """What a reference snapshot run ends with."""

    order: str
    group_size: int
    losses: list[list[float]]  #: per epoch, per training position (in position order)
    seconds: list[float]  #: training time of each epoch
    learner: Learner  #: final weights and Adam state
    grads: list[torch.Tensor]  #: the last epoch's summed gradients (parameters() order)
    val: tuple[float, float] | None = None  #: (AP, AUC) after the last epoch
    test: tuple[float, float] | None = None
    orders: tuple[str, ...] = ()  #: the GCN order of each group (one entry: all)


def train_groups(
    seq: SnapshotSequence,
    model: SnapshotGNN,
    groups: list[range],
    *,
    group_size: int,
    epoch: int = 0,
    seed: int = 0,
    order: str = "agg_first",
    grads: list[torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    orders: Sequence[str] | None = None,
) -> tuple[list[float], list[torch.Tensor]]:
    """Forward and backward of every position of `groups`, in the order given, with `model`'s
    weights: each position's loss, and the gradients summed into `grads` (new zeros when
    None) in that order. Each group must start at a multiple of `group_size`. `orders`: the
    GCN order of group k is ``orders[k % len(orders)]`` (None: `order` for all)."""
    hidden = Hidden(seq.n_nodes, model.config.hidden_dim, device)
    grads = zero_grads(model) if grads is None else grads
    orders = _orders(order, orders)
    losses = []
    for group in groups:
        if group.start % group_size:
            raise ValueError(f"group {group} does not start a group of {group_size}")
        for t in group:
            state = open_snapshot(
                seq,
                t,
                group_size=group_size,
                epoch=epoch,
                seed=seed,
                order=orders[t // group_size % len(orders)],
                device=device,
            )
            forward(state, model, hidden, seq)
            bwd(state, model, grads)
            losses.append(state.loss_value)
            if progress:
                progress.update(note=f"loss {state.loss_value:.4f}")
    return losses, grads


def _orders(order: str, orders: Sequence[str] | None) -> tuple[str, ...]:
    """The per-group orders: `orders`, or `order` for every group."""
    if orders is None:
        return (order,)
    orders = tuple(orders)
    bad = [o for o in orders if o not in ORDERS]
    if not orders or bad:
        raise InputError(
            f"GCN orders must be one or more of {', '.join(ORDERS)}, got {', '.join(orders)}"
        )
    return orders


@torch.no_grad()
def evaluate_snapshots(
    seq: SnapshotSequence,
    model: SnapshotGNN,
    *,
    group_size: int,
    seed: int = 0,
    order: str = "agg_first",
    phases: tuple[int, ...] = (VAL, TEST),
    device: torch.device | str = "cpu",
) -> dict[int, tuple[float, float]]:
    """Mean per-position (AP, AUC) of each phase, each group run from its start."""
    steps = phase_steps(seq)
    scores = {}
    for phase in phases:
        aps, aucs = [], []
        hidden = Hidden(seq.n_nodes, model.config.hidden_dim, device)
        for group in snapshot_groups(steps[phase], group_size):
            for t in range(group.start - group.start % group_size, group.stop):
                state = open_snapshot(
                    seq,
                    t,
                    group_size=group_size,
                    phase=phase,
                    seed=seed,
                    order=order,
                    device=device,
                )
                forward(state, model, hidden, seq)
                if t in group and state.pos.shape[1]:
                    logits = torch.cat([state.pos_logit, state.neg_logit]).cpu().numpy()
                    labels = np.repeat([1, 0], state.pos.shape[1])
                    aps.append(average_precision(logits, labels))
                    aucs.append(roc_auc(logits, labels))
        if not aps:
            raise InputError(_no_targets(seq, phase))
        scores[phase] = (float(np.mean(aps)), float(np.mean(aucs)))
    return scores


def _no_targets(seq: SnapshotSequence, phase: int) -> str:
    return (
        f"{seq.name}: no {PHASES[phase]} snapshot has an edge whose ends were both active in "
        "the snapshot before it; use a longer period or more data"
    )


def _check(seq: SnapshotSequence, epochs: int, evaluate: bool) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"number of epochs must be an integer >= 1, got {epochs!r}")
    check_length(seq)
    for phase, steps in zip((VAL, TEST), phase_steps(seq)[1:], strict=True):
        has_targets = any(open_snapshot(seq, t, group_size=1).pos.shape[1] for t in steps)
        if evaluate and not has_targets:
            raise InputError(_no_targets(seq, phase))


def train_snapshots(
    seq: SnapshotSequence,
    *,
    group_size: int = 4,
    epochs: int = 1,
    config: SnapshotConfig | None = None,
    seed: int = 0,
    order: str = "agg_first",
    device: torch.device | str = "cpu",
    evaluate: bool = True,
    progress: bool = False,
    orders: Sequence[str] | None = None,
) -> SnapshotResult:
    """Train on the training positions of `seq` for `epochs` epochs (one Adam step each);
    with `evaluate`, validation and test AP/AUC after the last epoch. `orders`: one GCN
    order per training group (group k: ``orders[k % len(orders)]``), as a schedule's
    workload states them; None: `order` for every group. Evaluation uses the first."""
    config = config or SnapshotConfig()
    orders = _orders(order, orders)
    order = orders[0]
    _check(seq, epochs, evaluate)
    groups = snapshot_groups(phase_steps(seq)[TRAIN], group_size)
    model = build_snapshot_model(seq.n_nodes, config, seq.node_dim, seed).to(device)
    learner = Learner(model, config.lr)
    result = SnapshotResult(order, group_size, [], [], learner, [], orders=orders)
    n_train = sum(len(g) for g in groups)
    for epoch in range(epochs):
        bar = Progress(n_train, f"epoch {epoch}", "snapshot") if progress else None
        start = time.perf_counter()
        losses, grads = train_groups(
            seq,
            model,
            groups,
            group_size=group_size,
            epoch=epoch,
            seed=seed,
            device=device,
            progress=bar,
            orders=orders,
        )
        step(learner, grads)
        result.seconds.append(time.perf_counter() - start)
        result.losses.append(losses)
        result.grads = grads
    if evaluate:
        scores = evaluate_snapshots(
            seq, model, group_size=group_size, seed=seed, order=order, device=device
        )
        result.val, result.test = scores[VAL], scores[TEST]
    return result
