"""One rank of a distributed run: its lanes as threads (on a GPU each with a CUDA stream,
`tgpipe.executor.lane_clock`), its messages, its node memory.

`RankRunner` executes the `Program` that `tgpipe.executor.runtime.lower` gives this rank,
calling the op functions of `tgpipe.executor.ops` (the same code the reference trainer and
the profiler call). See `tgpipe.executor.runtime` for how the cross-rank edges travel. The
node memory is this rank's replica (``rows`` backend) or the machine's shared store
(``shared``, `tgpipe.executor.shared_store`); the runner uses either through one interface.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tgpipe.dag.semantics import Semantics
from tgpipe.executor.lane_clock import lane_clock, settle
from tgpipe.executor.lanes import LaneThreads, Mailbox
from tgpipe.executor.learner import Learner, load_weights
from tgpipe.executor.memory import POLL, Aborted, MemoryRows, MemoryStore
from tgpipe.executor.model import TGN, TGNConfig, build_model
from tgpipe.executor.ops import (
    BatchState,
    bwd,
    compute_guard,
    feat,
    fwd,
    grad_sync,
    mem_fetch,
    mem_root,
    mem_support,
    mem_write,
    open_batch,
    sample,
    step,
)
from tgpipe.executor.runtime import Message, Program, memory_readers, tag
from tgpipe.executor.shared_store import SharedStore, ring_depth
from tgpipe.executor.shared_weights import SharedSlots
from tgpipe.executor.stream import Stream
from tgpipe.executor.versions import memory_version, weight_version
from tgpipe.executor.weight_plan import MODEL_OPS, WeightPlan
from tgpipe.progress import Progress
from tgpipe.schedules.ir import Action, Schedule
from tgpipe.trace import TraceRow

__all__ = ["Aborted", "RankRunner"]

_READS = ("MEM_FETCH", "MEM_SUPPORT")


class _Store(MemoryStore):
    """The rank's replica: remembers what its own MEM_WRITEs wrote, to send it on (where
    another rank reads memory: else nothing, or an epoch's rows would pile up)."""

    shared = False  #: peers' writes arrive as messages

    def __init__(self, *args, sends: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.sends = sends
        self.outbox: dict[int, tuple[torch.Tensor, MemoryRows]] = {}
        self.abort: threading.Event | None = None

    def begin(self, position, state: dict | None = None, oldest: int = 0) -> None:
        """Start a segment (as `SharedStore.begin`): reset, or load a `state_dict`."""
        self.outbox.clear()
        if state is None:
            self.reset()
        else:
            self.load_state_dict(state)

    def wait_writable(self, batch: int, abort, timeout) -> None:
        """A replica takes writes in any order: nothing to wait for."""

    def write(self, batch, nodes, rows, *, mine: bool = True) -> None:
        super().write(batch, nodes, rows)
        if mine and self.sends:
            self.outbox[batch] = (torch.as_tensor(nodes, dtype=torch.int64), rows)


class _Versions(Mailbox):
    """Packed learners (weights + Adam state) by version: what weights travel as."""

    def __init__(self):
        super().__init__("weights of version")

    def state_dict(self) -> dict[int, torch.Tensor]:
        return {v: t.cpu() for v, t in self.state().items()}

    def load_state_dict(self, packed: dict[int, torch.Tensor]) -> None:
        for v, t in packed.items():
            self.put(v, t)


@dataclass
class EpochResult:
    losses: dict[int, float]  #: batch -> loss, for this rank's batches
    rows: list[TraceRow]  #: what ran when, seconds from the epoch's start


class RankRunner(LaneThreads):
    """Runs this rank's program for one epoch at a time."""

    def __init__(
        self,
        rank: int,
        schedule: Schedule,
        program: Program,
        stream: Stream,
        config: TGNConfig,
        *,
        groups: dict[tuple[int, ...], object],
        timeout: float = 300.0,
        shared_memory: int | None = None,
        shared_weights: int | None = None,
    ):
        """`shared_memory`: a descriptor of the machine's shared store file (see
        `tgpipe.executor.shared_store.open_run_file`); None: keep a replica, rows travel.
        `shared_weights`: a descriptor of the machine's learner slots file (`SharedSlots`),
        which weight messages then go through; None: they travel over gloo."""
        self.rank, self.schedule, self.program, self.stream = rank, schedule, program, stream
        self.semantics: Semantics = schedule.semantics
        self.config, self.timeout = config, timeout
        self.pg_memory = groups["memory"]
        self.pg_weights = groups["weights"]
        self.pg_group = {grp: groups.get(ranks) for grp, ranks in program.groups.items()}
        model = self._new_model()
        self.learner = Learner(model, config.lr)
        shape = (stream.graph.n_nodes, config.memory_dim, model.mail_dim)
        if shared_memory is not None:
            self.store = SharedStore(
                shared_memory,
                *shape,
                depth=ring_depth(self.semantics, schedule.n_ranks),
                max_rows=2 * stream.batch_size,
                readers=memory_readers(schedule),
                rank=rank,
                world=schedule.n_ranks,
                timeout=timeout,
            )
        else:
            self.store = _Store(*shape, stream.device, sends=bool(program.sends("memory")))
        self._compute = compute_guard(stream.device)
        self.clock = lane_clock(stream.device)  #: a CUDA stream per lane on a GPU
        self._models: dict[int, TGN] = {}  #: weight version -> a model holding it
        self._models_lock = threading.Lock()  #: GPU lanes load weights at once
        self._spare: list[TGN] = []  #: models of versions no batch needs any more
        self.plan = WeightPlan.of(schedule)  #: which weights are copied, which are not
        self.slots = None
        if shared_weights is not None:
            self.slots = SharedSlots(
                shared_weights,
                size=self.learner.packed_size(),
                world=schedule.n_ranks,
                rank=rank,
                timeout=timeout,
            )

    def _new_model(self) -> TGN:
        s = self.stream
        return build_model(self.config, s.edge_dim, s.node_dim, s.seed).to(s.device)

    # ---- one epoch, in segments -----------------------------------------------------------
    def run_epoch(self, epoch: int, progress: Progress | None = None) -> EpochResult:
        """One whole epoch of this rank's program (see `run_batches` for `progress`)."""
        self.begin_epoch(epoch)
        self.run_batches(0, self.schedule.n_batches, progress)
        return self.end_epoch()

    def begin_epoch(self, epoch: int) -> None:
        """Zero memory, the weights of the epoch's start, nothing run yet."""
        self.epoch = epoch
        self.store.begin((epoch, 0))
        self.versions = _Versions()
        if (self.rank, 0) in self.plan.first_loads:  # a batch here computes with a copy of it
            packed = self.learner.pack()
            settle(self.stream.device)
            self.versions.put(0, packed)
        self.learner_version = 0
        self._spare += self._models.values()
        self._models.clear()
        self.states: dict[int, BatchState] = {}
        self.states_lock = threading.Lock()
        self.losses: dict[int, float] = {}
        self.rows: list[TraceRow] = []
        mine = self.program.ops()
        self.done = {a: threading.Event() for a in mine}
        self.left: dict[int, int] = defaultdict(int)
        for a in mine:
            self.left[a.batch] += 1
        self.finished = {b: threading.Event() for b in self.left}
        self.reads_left: dict[int, int] = defaultdict(int)  #: batch -> its reads not done
        for a in mine:
            if a.op in _READS:
                self.reads_left[a.batch] += 1
        self.window = {b: w for (r, b), w in self.schedule.window_waits().items() if r == self.rank}
        self.unfinished = set(self.left)
        self.count_lock = threading.Lock()
        self.clock.start()

    def run_batches(self, lo: int, hi: int, progress: Progress | None = None) -> None:
        """Run batches lo..hi-1 and drain: every lane walks its steps of those batches in
        its order, and returns when they and their messages are done. The semantics do not
        change (every read and step waits for its version), so an epoch cut into segments
        computes what one run computes; between segments the state is a consistent cut that
        a checkpoint can save. `progress` counts every batch whose memory write this rank
        sees (its own and, on the replica, its peers'; on the shared store, every write)."""
        self.progress = progress
        # The runner's own long-lived bookkeeping (the DAG's predecessors, events, states)
        # made every full garbage collection long, and the ops that allocate most (FWD)
        # paid for it: ~12 % of a batch. Frozen for the segment, it is left out of them.
        # Only the young generations are collected first: a full collection of a process
        # that holds torch takes 0.1-0.15 s here (`tgpipe run` makes one between epochs).
        gc.collect(1)
        gc.freeze()
        self.abort = self.store.abort = threading.Event()
        if self.slots is not None:
            self.slots.abort = self.abort
        self.errors: list[BaseException] = []
        self.outgoing: queue.Queue = queue.Queue()

        def within(item: Action | Message) -> bool:
            batch = item.batch if isinstance(item, Action) else item.action.batch
            return lo <= batch < hi

        inbound: dict[tuple[int, str], list[Message]] = defaultdict(list)
        for m in filter(within, self.program.receives):
            inbound[m.peers[0], m.kind].append(m)
        workers = [
            (self._lane, (lane, list(filter(within, steps))), lane)
            for lane, steps in self.program.lanes.items()
        ]
        workers += [
            (self._receive, (msgs,), f"recv-{kind}-{src}")
            for (src, kind), msgs in sorted(inbound.items())
        ]
        threads = self._threads(workers)
        (sender,) = self._threads([(self._sender, (), "send")])
        stop = threading.Event()
        counter = threading.Thread(  # the shared store's writes: every rank's
            target=self._count_writes, args=(progress, stop), name=f"rank{self.rank}-progress"
        )
        for t in [*threads, sender]:
            t.start()
        if progress and self.store.shared:
            counter.start()
        lanes = len(self.program.lanes)
        for t in threads[:lanes]:
            t.join()
        for t in threads[lanes:]:  # receivers: once a thread failed, a peer may never send
            while t.is_alive() and not self.errors:  # (daemons: a blocked one is left)
                t.join(POLL)
        self.outgoing.put(None)
        sender.join()
        try:
            if self.errors:
                raise self.errors[0]
            self.store.wait_version(hi, self.abort)  # the peers' writes too: a consistent cut
        finally:
            gc.unfreeze()
            stop.set()
            if counter.is_alive():
                counter.join()

    def _count_writes(self, progress: Progress, stop: threading.Event) -> None:
        """Move the bar with the shared store's version until `stop`."""
        while True:
            progress.update(self.store.version - progress.done)
            if stop.wait(POLL):
                progress.update(self.store.version - progress.done)
                return

    def end_epoch(self) -> EpochResult:
        return EpochResult(dict(self.losses), list(self.rows))

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything this rank needs to go on from a cut between segments: its memory
        replica with the undo records that stale reads still need, its learner, the packed
        learners (weights + Adam state) that later batches compute or step from, and its
        losses so far. Sampling and negatives are pure functions of (seed, epoch, batch)."""
        return {
            "epoch": self.epoch,
            "store": self.store.state_dict(),
            "learner": self.learner.pack().cpu(),
            "learner_version": self.learner_version,
            "versions": self.versions.state_dict(),
            "losses": dict(self.losses),
        }

    def load_state_dict(self, state: dict, done_below: int) -> None:
        """Go on from a `state_dict` taken after batches 0..done_below-1 of its epoch."""
        self.begin_epoch(state["epoch"])
        oldest = memory_version(self.semantics, done_below)  # what batches from here read
        self.store.begin((state["epoch"], done_below), state["store"], oldest)
        self.learner.unpack(state["learner"])
        self.learner_version = state["learner_version"]
        device = self.stream.device
        self.versions.load_state_dict({v: t.to(device) for v, t in state["versions"].items()})
        self.losses = dict(state["losses"])
        for act, event in self.done.items():
            if act.batch < done_below:
                event.set()
        for b in [b for b in self.reads_left if b < done_below]:
            del self.reads_left[b]
        for b in [b for b in self.unfinished if b < done_below]:
            self.left[b] = 0
            self.unfinished.discard(b)
            self.finished[b].set()

    # ---- lanes --------------------------------------------------------------------------------
    def _lane(self, lane: str, steps: list[Action | Message]) -> None:
        with self.clock.lane(lane):
            for item in steps:
                if isinstance(item, Message):
                    self.outgoing.put(self._pack(item))  # the sender thread is the rank's port
                else:
                    self._op(lane, item)

    def _op(self, lane: str, act: Action) -> None:
        need = self.window.get(act.batch)
        if need is not None:
            self._wait(self.finished[need])
        for (op, j), _ in self.schedule_preds[act]:
            pred = Action(op, j)
            if pred in self.done:
                self._wait(self.done[pred])
        state = self._state(act.batch)
        ready = self._ready(act.op, state)  # waits are not the op's time

        def run() -> None:
            nonlocal ready
            if act.op in MODEL_OPS:  # loading a version's weights is its work (as simulated)
                ready = self._compute_model(state.batch)
            self._run_op(act.op, state, ready)

        with self._compute if act.op != "GRAD_SYNC" else contextlib.nullcontext():
            start, end = self.clock.time(run, uses=(state, ready), abort=self.abort)
        self.rows.append(TraceRow(self.rank, lane, act.op, act.batch, start, end))
        self.done[act].set()
        if act.op in _READS:
            self._read_one(act.batch)
        self._finish_one(act.batch)

    def _state(self, batch: int) -> BatchState:
        with self.states_lock:
            if batch not in self.states:
                self.states[batch] = open_batch(
                    self.stream, batch, epoch=self.epoch, semantics=self.semantics
                )
            return self.states[batch]

    def _finish_one(self, batch: int) -> None:
        with self.count_lock:
            self.left[batch] -= 1
            if self.left[batch]:
                return
            self.unfinished.discard(batch)
            with self.states_lock:
                self.states.pop(batch, None)
        self.finished[batch].set()

    def _read_one(self, batch: int) -> None:
        """One read of `batch` done; when its last is, the store may forget the versions
        that only this rank's finished reads needed (on the shared store, this rank's
        mark moves up, which frees undo slots for the writers)."""
        with self.count_lock:
            self.reads_left[batch] -= 1
            if self.reads_left[batch]:
                return
            del self.reads_left[batch]
            oldest = min(self.reads_left, default=self.schedule.n_batches)
            self.store.prune(memory_version(self.semantics, oldest))

    def _compute_model(self, batch: int) -> TGN:
        """A model holding the weights `batch` computes with: the learner's own where the
        plan says nothing steps it first (`WeightPlan`), else a pooled copy filled from the
        packed version."""
        version = weight_version(self.semantics, batch)
        if batch not in self.plan.loads:
            if self.learner_version != version:  # pragma: no cover - a WeightPlan bug
                raise RuntimeError(
                    f"batch {batch} needs weights {version}, the learner holds "
                    f"{self.learner_version}"
                )
            return self.learner.model
        with self._models_lock:
            model = self._models.get(version)
            if model is not None:
                return model
            packed = self.versions.get(version, self.abort, self.timeout)
            with self.count_lock:  # versions no unfinished batch of this rank computes with
                oldest = min(self.unfinished, default=self.schedule.n_batches)
            for old in [v for v in self._models if v < weight_version(self.semantics, oldest)]:
                self._spare.append(self._models.pop(old))
            model = self._spare.pop() if self._spare else self._new_model()
            load_weights(model, packed)
            settle(self.stream.device)  # loaded before another lane computes with it
            self._models[version] = model
        return model

    def _made(self, batch: int) -> int:
        """The weight version that the STEP of `batch` makes (its group's steps, done)."""
        return batch // self.semantics.g + 1

    def _ready(self, op: str, state: BatchState):
        """Wait until what `op` reads from other lanes and ranks is there: the memory
        version, the packed weights it computes with (loaded in the op's own time, by
        `_compute_model`); returns the packed learner a STEP starts from (None if this
        rank's learner holds it, and for every other op)."""
        if op in _READS:
            self.store.wait_version(state.mem_version, self.abort)
        if op == "MEM_WRITE":
            self.store.wait_writable(state.batch, self.abort, self.timeout)
        if op in MODEL_OPS:
            if state.batch in self.plan.loads:
                version = weight_version(self.semantics, state.batch)
                self.versions.get(version, self.abort, self.timeout)
            return None
        if op == "STEP" and state.batch in self.plan.takeovers:
            done = state.batch // self.semantics.g  # steps taken before this one
            adopt = state.batch in self.plan.adopted  # no load of this rank reads it later
            return self.versions.get(done, self.abort, self.timeout, take=adopt)
        return None

    def _run_op(self, op: str, state: BatchState, ready) -> None:
        b, stream, store = state.batch, self.stream, self.store
        if op == "SAMPLE":
            sample(state, stream)
        elif op == "FEAT":
            feat(state, stream)
        elif op == "MEM_FETCH":
            mem_fetch(state, store)
        elif op == "MEM_ROOT":
            mem_root(state, ready)
        elif op == "MEM_WRITE":
            mem_write(state, store)
            if self.progress and not store.shared:
                self.progress.update()
        elif op == "MEM_SUPPORT":
            mem_support(state, store, ready)
        elif op == "FWD":
            fwd(state, ready)
        elif op == "BWD":
            bwd(state, ready)
            self.losses[b] = state.loss_value
        elif op == "GRAD_SYNC":
            grp = b // self.semantics.g
            if len(self.program.groups[grp]) > 1:  # a short last group may have one batch
                grad_sync(state, self.pg_group[grp])
        elif op == "STEP":
            if ready is not None:  # taken over: a new storage, the old one stays as it was
                self.learner.adopt(ready if b in self.plan.adopted else ready.clone())
            step(self.learner, state.grads)
            self.learner_version = done = self._made(b)
            if b in self.plan.puts:  # someone reads this version
                shared = b in self.plan.shared  # the learner changes storage before it steps
                packed = self.learner.flat if shared else self.learner.pack()
                settle(self.stream.device)  # stepped and copied before another lane reads it
                self.versions.put(done, packed)
            self.versions.prune(done - self.semantics.s_w - 1)
        else:  # pragma: no cover - the catalog has no other op
            raise RuntimeError(f"no op {op}")

    # ---- messages -----------------------------------------------------------------------------
    def _pack(self, m: Message) -> tuple[Message, list[torch.Tensor]]:
        """The tensors that carry `m` (taken now, while they are current)."""
        a = m.action
        if m.kind == "memory" and self.store.shared:  # the rows are there: a token
            parts = [torch.zeros(1, dtype=torch.int64)]
        elif m.kind == "memory":  # each column at its own precision
            nodes, rows = self.store.outbox.pop(a.batch)
            values = torch.cat([rows.mem, rows.mail], dim=1)
            times = torch.stack([rows.mem_ts, rows.mail_ts], dim=1)
            parts = [torch.tensor([len(nodes)], dtype=torch.int64), nodes, values, times]
        else:
            parts = [self.versions.get(self._made(a.batch), self.abort, self.timeout)]
        return m, [t.detach().cpu().contiguous() for t in parts]

    def _sender(self) -> None:
        while (item := self.outgoing.get()) is not None:
            m, parts = item
            if m.kind == "weights" and self.slots is not None:  # the bytes in shared memory,
                version = self._made(m.action.batch)
                slot = self.slots.publish(
                    epoch=self.epoch, version=version, packed=parts[0], peers=m.peers
                )
                parts = [torch.tensor([slot])]  # a token over gloo: the peer blocks on it
            group = self.pg_memory if m.kind == "memory" else self.pg_weights
            works = [
                dist.isend(t, dst, group=group, tag=tag(m.action, k))
                for dst in m.peers
                for k, t in enumerate(parts)
            ]
            for w in works:
                w.wait()

    def _receive(self, messages: list[Message]) -> None:
        d, d_mail = self.store.dim, self.store.mail_dim
        size = self.learner.packed_size()
        for m in messages:
            src, a = m.peers[0], m.action
            if m.kind == "memory" and self.store.shared:  # its write is in: look again
                dist.recv(torch.empty(1, dtype=torch.int64), src, group=self.pg_memory, tag=tag(a))
                self.store.poke()
            elif m.kind == "memory":
                n = torch.empty(1, dtype=torch.int64)
                dist.recv(n, src, group=self.pg_memory, tag=tag(a, 0))
                nodes = torch.empty(int(n), dtype=torch.int64)
                dist.recv(nodes, src, group=self.pg_memory, tag=tag(a, 1))
                values = torch.empty(int(n), d + d_mail)
                dist.recv(values, src, group=self.pg_memory, tag=tag(a, 2))
                times = torch.empty(int(n), 2, dtype=torch.float64)
                dist.recv(times, src, group=self.pg_memory, tag=tag(a, 3))
                mem, mail = values.split([d, d_mail], dim=1)
                rows = MemoryRows(mem, times[:, 0].clone(), mail, times[:, 1].clone())
                rows = rows.to(self.store.device)
                self.store.write(a.batch, nodes, rows, mine=False)
                if self.progress:
                    self.progress.update()
            else:
                version = self._made(a.batch)
                if self.slots is not None:  # a blocking receive wakes at once, polling not
                    slot = torch.empty(1, dtype=torch.int64)
                    dist.recv(slot, src, group=self.pg_weights, tag=tag(a))
                    packed = self.slots.take(
                        epoch=self.epoch, version=version, sender=src, slot=int(slot)
                    )
                else:
                    packed = torch.empty(size)
                    dist.recv(packed, src, group=self.pg_weights, tag=tag(a))
                self.versions.put(version, packed.to(self.stream.device))
            if self.abort.is_set():
                raise Aborted()

    @property
    def schedule_preds(self):
        if not hasattr(self, "_preds"):
            from tgpipe.dag.build import predecessors

            self._preds = {
                Action(*k): v
                for k, v in predecessors(self.semantics, self.schedule.n_batches).items()
            }
        return self._preds

    def final_state(self) -> dict:
        """What the semantics check compares: memory table, packed learner."""
        return {"table": self.store.table, "learner": self.learner.pack()}
