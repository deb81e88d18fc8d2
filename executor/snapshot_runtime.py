"""One rank of a snapshot schedule run for real: its lanes as threads, its messages.

`SnapshotRunner` executes this rank's lanes of a snapshot `Schedule` (`tgpipe.schedules.
snapshot`) with the ops of `tgpipe.executor.snapshot_model`, the very code that the
one-process reference (`tgpipe.executor.snapshot_reference`) calls, so that a run can be
checked number for number against it. As in the M-TGNN runtime (`tgpipe.executor.rank`),
each lane is a thread that walks its actions in the schedule's order and waits, before each,
for its DAG predecessors (`SnapshotWorkload.predecessors`): those on this rank through
events, those on other ranks through what they send. ``gpu`` and ``gpu2`` are BLAD's two
workers of one GPU: two threads computing at once with one model (each position computes
with the epoch's starting weights, so they share them read-only until STEP).

The edges that cross lanes or ranks carry:

- ``hidden`` (RNN(t-1) -> RNN(t) inside a group): each compute lane keeps its own hidden
  table (`Hidden`), valid for the group it last ran. When RNN(t) does not follow RNN(t-1) on
  its lane (the group continues on another lane or rank, as at the border of two blocks of
  snapshot partition), the table RNN(t) must start from is handed over. The rows of the
  vertices of position t alone would not do: later positions of the group read rows that
  earlier positions wrote. The table after RNN(t-1) is zero except on the vertices of
  positions group start..t-1 (it was reset at the group's start), so those rows, in sorted
  id order, are exactly the table: both ends know which ids they are from the sequence, only
  the values travel (a gloo send on this rank's sender thread, one posted receive per
  message; a queue between two lanes of one rank). The receiving lane zeroes its table and
  writes them in.
- ``group`` (every BWD -> every GRAD_SYNC): this rank's gradients are summed, in position
  order, as its BWDs finish (an ordered accumulator; workers finish out of order), and
  GRAD_SYNC r is the all-reduce (SUM) of that partial sum over the schedule's ranks; the
  all-reduce itself waits for the other ranks' BWDs. STEP is one Adam step with the result,
  the same on every rank.
- ``data``: a position's ops run on one rank (LOAD on ``h2d``, the rest on a worker lane).

A vertex partition (``parts`` > 1: every rank computes its part of each position, as
`tgpipe.executor.snapshot_parts` defines it) moves rows instead of tables: the rows of
``pre`` (X or X W) that other parts' AGG reads, the h rows that other parts' link pairs
read, and in BWD the gradients of both, back to their parts. Every message of the epoch is
known from the sequence alone, so each rank posts a receive for every message it will get
at the epoch's start (``irecv``; the op that needs it waits on it, outside the compute
lock). Sizing them means preparing every position there, before the trace's clock starts:
that time is in the epoch's but in no op's row (a whole-snapshot LOAD prepares its own).
The parts of one position must run on different ranks and every lane must take
positions in order: BWD's three rounds wait for the other parts' rounds, which no DAG edge
shows (`check_runnable`).

Each action becomes a `TraceRow` (rank, lane, op, unit, start, end): the op's own time, not
its waits, in seconds from the epoch's start, to compare with the simulator's trace (a
part's BWD row spans its three rounds and the exchanges between them).

Examples
--------
One rank, BLAD's two workers with pairing (so groups differ in GCN order), checked against
the reference under the same orders:

>>> import torch
>>> from tgpipe.dag.profile import load_profile
>>> from tgpipe.executor.snapshot_model import SnapshotConfig, snapshot_workload
>>> from tgpipe.executor.snapshot_reference import train_snapshots
>>> from tgpipe.executor.snapshots import skewed_sequence
>>> from tgpipe.schedules.snapshot import blad
>>> seq = skewed_sequence(16, n_nodes=60, mean_edges=50, seed=2)
>>> cfg = SnapshotConfig(in_dim=8, hidden_dim=8)
>>> w = snapshot_workload(seq, 2, cfg)
>>> schedule = blad(load_profile("snapshot-gpu-illustrative"), w, 1)
>>> runner = SnapshotRunner(0, schedule, seq, cfg)
>>> result = runner.run_epoch(0)
>>> ref = train_snapshots(seq, group_size=2, config=cfg, orders=schedule.workload.orders,
...                       evaluate=False)
>>> len(set(schedule.workload.orders)), len(result.rows) == len(schedule.placement())
(2, True)
>>> float((runner.learner.pack() - ref.learner.pack()).abs().max()) <= 1e-5
True
"""

from __future__ import annotations

import contextlib
import datetime
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from tgpipe.dag.snapshot import UNIT_OPS, SnapshotWorkload
from tgpipe.errors import InputError
from tgpipe.executor.lanes import LaneThreads, Mailbox
from tgpipe.executor.learner import Learner
from tgpipe.executor.memory import POLL
from tgpipe.executor.ops import compute_guard
from tgpipe.executor.snapshot_model import (
    OP_FUNCS,
    Hidden,
    SnapshotConfig,
    SnapshotState,
    build_snapshot_model,
    bwd,
    grad_sync,
    open_snapshot,
    step,
    zero_grads,
)
from tgpipe.executor.snapshot_parts import PART_MESSAGES, PartPlan, PartState, part_of
from tgpipe.executor.snapshots import SnapshotSequence
from tgpipe.schedules.ir import Action, Schedule
from tgpipe.trace import TraceRow

__all__ = ["Handover", "SnapshotEpoch", "SnapshotRunner", "check_runnable", "handovers"]


def check_runnable(schedule: Schedule) -> SnapshotWorkload:
    """The schedule's snapshot workload, or InputError (one line) if the runner cannot run it."""
    w = schedule.workload
    if w is None:
        raise InputError(
            f"schedule {schedule.name!r} is an M-TGNN schedule: the snapshot workload needs a "
            "snapshot schedule (vertex_partition, snapshot_partition, blad or such a file)"
        )
    if w.parts > 1:
        _check_parts(schedule, w)
    return w


def _check_parts(schedule: Schedule, w: SnapshotWorkload) -> None:
    """A vertex partition runs if each unit is on one rank, the parts of a position on
    different ranks, and every lane takes positions in order (module doc)."""
    ranks: dict[int, set[int]] = {}
    for (rank, lane), acts in schedule.lanes.items():
        units = [a.batch for a in acts if a.op in UNIT_OPS]
        for u in units:
            ranks.setdefault(u, set()).add(rank)
        if any(w.position(a) > w.position(b) for a, b in zip(units, units[1:], strict=False)):
            raise InputError(
                f"schedule {schedule.name!r}: lane {lane} of rank {rank} takes positions out "
                "of order; a vertex partition runs each lane's positions in order"
            )
    for t in range(w.n_positions):
        where = [ranks.get(t * w.parts + p, set()) for p in range(w.parts)]
        if any(len(r) != 1 for r in where) or len(set().union(*where)) != w.parts:
            raise InputError(
                f"schedule {schedule.name!r}: the parts of position {t} must each run on one "
                "rank, all on different ranks, for the executor to run a vertex partition"
            )


@dataclass(frozen=True)
class Handover:
    """The hidden table that RNN(`unit`) starts from, made elsewhere by the RNN of the
    position before (unit - parts: the same part)."""

    unit: int
    src: tuple[int, str]  #: (rank, lane) of RNN(unit - parts)
    dst: tuple[int, str]  #: (rank, lane) of RNN(unit)
    ids: np.ndarray  #: sorted vertex ids whose rows travel (all the table holds)


def handovers(schedule: Schedule, seq: SnapshotSequence) -> list[Handover]:
    """Every hidden edge RNN(t-1) -> RNN(t) (of one part) whose table must travel: those
    where RNN(t) does not come right after RNN(t-1) among the RNNs of its lane (module doc)."""
    w = check_runnable(schedule)
    place = schedule.placement()
    previous: dict[int, Action | None] = {}  # unit -> the RNN before it on its lane
    for acts in schedule.lanes.values():
        last = None
        for act in acts:
            if act.op == "RNN":
                previous[act.batch] = last
                last = act
    found = []
    for u in range(w.n_units):
        t = w.position(u)
        before = Action("RNN", u - w.parts)
        if t % w.group == 0 or previous.get(u) == before:
            continue
        first = t - t % w.group
        ids = np.unique(np.concatenate([seq[p].nodes for p in range(first, t)]))
        ids = ids[part_of(ids, w.parts) == u % w.parts]  # a part's table holds its rows
        found.append(Handover(u, place[before][:2], place[Action("RNN", u)][:2], ids))
    return found


@dataclass
class SnapshotEpoch:
    """What one rank's epoch ends with."""

    losses: dict[int, float]  #: unit -> loss, for this rank's units
    rows: list[TraceRow]  #: what ran when, seconds from the epoch's start


class SnapshotRunner(LaneThreads):
    """Runs this rank's lanes of a snapshot schedule, one epoch at a time (module doc).

    `p2p`: the process group of point-to-point messages (hidden tables, a vertex
    partition's rows); `sync`: the group of the schedule's
    ranks that GRAD_SYNC all-reduces over (None: the default group; without
    torch.distributed, or with one rank, no message is needed)."""

    def __init__(
        self,
        rank: int,
        schedule: Schedule,
        seq: SnapshotSequence,
        config: SnapshotConfig | None = None,
        *,
        seed: int = 0,
        p2p=None,
        sync=None,
        timeout: float = 300.0,
        device: torch.device | str = "cpu",
    ):
        self.w = check_runnable(schedule)
        self.rank, self.schedule, self.seq = rank, schedule, seq
        self.config = config or SnapshotConfig()
        self.seed, self.p2p, self.sync, self.timeout = seed, p2p, sync, timeout
        self.device = torch.device(device)
        self._compute = compute_guard(self.device)  # two workers on one CPU: one op at a time
        model = build_snapshot_model(seq.n_nodes, self.config, seq.node_dim, seed)
        self.learner = Learner(model.to(self.device), self.config.lr)
        self.lanes = {lane: acts for (r, lane), acts in schedule.lanes.items() if r == rank}
        self.place = schedule.placement()
        self.preds = self.w.predecessors(schedule.n_ranks)
        self.handovers = handovers(schedule, seq)
        self.sends = {h.unit: h for h in self.handovers if h.src[0] == rank}
        self.receives = {h.unit: h for h in self.handovers if h.dst[0] == rank}
        self.my_units = sorted(
            a.batch for acts in self.lanes.values() for a in acts if a.op == "BWD"
        )
        self.unit_rank = {  # a unit's ops all run on one rank (check_runnable for parts)
            a.batch: r for (r, _), acts in schedule.lanes.items() for a in acts if a.op == "BWD"
        }

    # ---- one epoch ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> SnapshotEpoch:
        """Every lane of this rank through the epoch; returns when they and their messages are
        done (the learner has taken its STEP)."""
        self.epoch = epoch
        self.abort = threading.Event()
        self.errors: list[BaseException] = []
        self.done = {a: threading.Event() for acts in self.lanes.values() for a in acts}
        self.states: dict[int, SnapshotState] = {}
        self.states_lock = threading.Lock()
        dim = self.config.hidden_dim
        self.hidden = {  # one table per lane that runs RNNs: the group it last ran
            lane: Hidden(self.seq.n_nodes, dim, self.device)
            for lane, acts in self.lanes.items()
            if any(a.op == "RNN" for a in acts)
        }
        self.mailbox = Mailbox("the hidden state for RNN")
        self.outgoing: queue.Queue = queue.Queue()
        self.losses: dict[int, float] = {}
        self.rows: list[TraceRow] = []
        self.grad_lock = threading.Lock()
        self.partial = zero_grads(self.learner.model)
        self.pending: dict[int, list[torch.Tensor]] = {}
        self.next_grad = 0  # index into my_units of the next gradient to add
        self.synced: list[torch.Tensor] | None = None
        self.rows_box = Mailbox("the vertex-partition rows")
        self.parts = self._open_parts() if self.w.parts > 1 else {}
        self.t0 = time.perf_counter()
        workers = [(self._lane, (lane, acts), lane) for lane, acts in self.lanes.items()]
        workers += [
            (self._receive, (h,), f"recv-RNN{u}")
            for u, h in sorted(self.receives.items())
            if h.src[0] != self.rank
        ]
        threads = self._threads(workers)
        (sender,) = self._threads([(self._sender, (), "send")])
        for t in [*threads, sender]:
            t.start()
        for t in threads:  # after a failure, a thread blocked in gloo may never return
            while t.is_alive() and not self.abort.is_set():
                t.join(POLL)
        if not self.abort.is_set():
            self.outgoing.put(None)
            sender.join()
        if self.errors:
            raise self.errors[0]
        return SnapshotEpoch(dict(self.losses), sorted(self.rows, key=lambda r: r.start))

    # ---- lanes -------------------------------------------------------------------------------
    def _lane(self, lane: str, acts: tuple[Action, ...]) -> None:
        for act in acts:
            for pred, _ in self.preds[act]:
                # other ranks' actions come as messages (hidden) or with the all-reduce (group)
                if self.place[pred][0] == self.rank:
                    self._wait(self.done[pred])
            if act.op == "RNN" and act.batch in self.receives:
                self._install(lane, act.batch)
            if self.w.parts > 1 and act.op in UNIT_OPS:
                start, end = self._run_part(lane, act)
            else:
                with self._compute if act.op != "GRAD_SYNC" else contextlib.nullcontext():
                    start = time.perf_counter()
                    self._run_op(lane, act)
                    end = time.perf_counter()
            self.rows.append(
                TraceRow(self.rank, lane, act.op, act.batch, start - self.t0, end - self.t0)
            )
            if act.op == "RNN" and act.batch + self.w.parts in self.sends:
                self._hand_over(lane, self.sends[act.batch + self.w.parts])
            self.done[act].set()

    def _state(self, unit: int) -> SnapshotState:
        """The unit's state, prepared by its first op, LOAD, in LOAD's time (as profiled)."""
        with self.states_lock:
            if unit not in self.states:
                self.states[unit] = self._open(unit)
            return self.states[unit]

    def _open(self, unit: int) -> SnapshotState:
        """The state of `unit`'s whole position before any op, in this epoch."""
        return open_snapshot(
            self.seq,
            self.w.position(unit),
            group_size=self.w.group,
            epoch=self.epoch,
            seed=self.seed,
            order=self.w.order(unit),
            device=self.device,
        )

    def _run_op(self, lane: str, act: Action) -> None:
        op, unit, model = act.op, act.batch, self.learner.model
        if op == "GRAD_SYNC":
            self.synced = grad_sync(self.partial, self.sync)
        elif op == "STEP":
            step(self.learner, self.synced)
        elif op == "BWD":
            state = self._state(unit)
            grads = bwd(state, model)
            self.losses[unit] = state.loss_value
            with self.states_lock:
                del self.states[unit]
            self._add_grads(unit, grads)
        else:
            OP_FUNCS[op](self._state(unit), model, self.hidden.get(lane), self.seq)

    def _add_grads(self, unit: int, grads: list[torch.Tensor]) -> None:
        """Add the gradients of this rank's units to its partial sum in position order,
        whatever order the workers finish them in."""
        with self.grad_lock:
            self.pending[unit] = grads
            while self.next_grad < len(self.my_units):
                ready = self.pending.pop(self.my_units[self.next_grad], None)
                if ready is None:
                    return
                for total, g in zip(self.partial, ready, strict=True):
                    total.add_(g)
                self.next_grad += 1

    # ---- hidden state handed over -------------------------------------------------------
    def _hand_over(self, lane: str, h: Handover) -> None:
        """The rows of the table RNN(h.unit) starts from, to its lane (here or elsewhere)."""
        rows = self.hidden[lane].table[torch.from_numpy(h.ids).to(self.device)].cpu().clone()
        if h.dst[0] == self.rank:
            self.mailbox.put(h.unit, rows)
        else:
            self.outgoing.put((rows, h.dst[0], h.unit))

    def _install(self, lane: str, unit: int) -> None:
        h = self.receives[unit]
        rows = self.mailbox.get(unit, self.abort, self.timeout, take=True)
        table = self.hidden[lane].table
        table.zero_()
        table[torch.from_numpy(h.ids).to(self.device)] = rows.to(self.device)

    def _sender(self) -> None:
        """This rank's port: sends the handed-over tables and the parts' rows one at a time
        (the receivers have posted every receive at the epoch's start, so any order
        completes)."""
        while (item := self.outgoing.get()) is not None:
            rows, dst, tag = item
            dist.send(rows.contiguous(), dst, group=self.p2p, tag=tag)

    def _receive(self, h: Handover) -> None:
        rows = torch.empty(len(h.ids), self.config.hidden_dim)
        dist.recv(rows, h.src[0], group=self.p2p, tag=h.unit)
        self.mailbox.put(h.unit, rows)

    # ---- vertex partition --------------------------------------------------------------------
    def _open_parts(self) -> dict[int, PartState]:
        """This rank's parts of the epoch, and a posted receive for every message they will
        get (module doc)."""
        P, model, found = self.w.parts, self.learner.model, {}
        for unit in self.my_units:
            t, p = divmod(unit, P)
            whole = self._open(unit)
            part = found[unit] = PartState(whole, PartPlan.of(whole, P), p)
            for kind, q, _, n in self._messages(part):
                width = self.config.hidden_dim
                if kind in ("pre", "dpre") and whole.order == "agg_first":
                    width = model.weight.shape[0]  # X's rows
                rows = torch.empty(n, width)
                src = self.unit_rank[t * P + q]
                work = dist.irecv(rows, src, group=self.p2p, tag=self._tag(kind, t, q, p))
                self.rows_box.put((kind, t, q, p), (work, rows))
        return found

    def _messages(self, part: PartState) -> list[tuple[str, int, int, int]]:
        pre_grad = self.learner.model.embedding is not None or part.order == "dense_first"
        return part.plan.messages(part.p, pre_grad)

    def _tag(self, kind: str, t: int, src: int, dst: int) -> int:
        """A message's tag: above the handovers' (units), one per (kind, position, parts)."""
        P = self.w.parts
        return (
            self.w.n_units
            + ((PART_MESSAGES.index(kind) * self.w.n_positions + t) * P + src) * P
            + dst
        )

    def _send_rows(self, kind: str, part: PartState, rows: dict[int, torch.Tensor]) -> None:
        t = part.whole.t
        for q, r in rows.items():
            dst = self.unit_rank[t * self.w.parts + q]
            self.outgoing.put((r.detach().cpu(), dst, self._tag(kind, t, part.p, q)))

    def _take_rows(self, kind: str, part: PartState) -> dict[int, torch.Tensor]:
        """The `kind` messages of `part`, by the part they come from, once they are here."""
        found = {}
        for k, q, p, _ in self._messages(part):
            if k == kind:
                work, rows = self.rows_box.get((k, part.whole.t, q, p), self.abort, self.timeout)
                work.wait(datetime.timedelta(seconds=self.timeout))
                found[q] = rows.to(self.device)
        return found

    def _run_part(self, lane: str, act: Action) -> tuple[float, float]:
        """One op of a part: its inputs waited for outside the compute lock, then the op,
        then what it sends; BWD in its three rounds. Returns the op's (start, end)."""
        part, model, op = self.parts[act.batch], self.learner.model, act.op
        needs = {"AGG": "pre", "BWD": "h"}.get(op)  # rows from the other parts
        received = self._take_rows(needs, part) if needs else {}
        sent: tuple[str, dict] = ("", {})
        with self._compute:
            start = time.perf_counter()
            if op == "LOAD":
                part.load(self.seq.node_feat)
                if part.order == "agg_first":
                    sent = ("pre", part.make_pre(model))
            elif op == "AGG":
                part.agg(model, received)
            elif op == "DENSE":
                sent = ("pre", part.dense(model))
            elif op == "RNN":
                sent = ("h", part.rnn(model, self.hidden[lane]))
            else:
                sent = ("dh", part.loss_grads(model, received))
            end = time.perf_counter()
        self._send_rows(sent[0], part, sent[1])
        if op == "BWD":
            returned = self._take_rows("dh", part)
            with self._compute:
                self._send_rows("dpre", part, part.state_grads(model, returned))
            returned = self._take_rows("dpre", part)
            with self._compute:
                part.input_grads(model, returned)
                end = time.perf_counter()
            self.losses[act.batch] = part.loss_value
            del self.parts[act.batch]
            self._add_grads(act.batch, part.grads)
        return start, end
