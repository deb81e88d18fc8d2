"""The discrete-event simulator: a schedule, a cost profile, and SimPy in between.

Think of each rank as a small workshop with a few workbenches (its lanes: ``gpu``, ``gpu2``,
``h2d``, ``d2h``, ``cpu``, ``net``). Every bench works through its own to-do list in order.
A job may start when its bench is free, when every job it depends on is finished (and, if that job
was done in another workshop, when the result has been delivered), and when the tools it
needs are free: the tools are SimPy resources, some private to a rank (the GPU, each copy
engine, the network port), some shared by every rank of a machine (its CPU cores, its
network card). The job then holds its tools for its cost from the profile and records a
trace row.

Deliveries between ranks are processes too: a message waits for its source action, holds
the sender's port (the machine's network card across machines) for bytes / bandwidth, then
arrives after the link's latency. A memory edge through the shared host store on one machine
sends only a token (latency); a learner handed to a rank of one machine (`CostProfile.slots`)
is copied into shared memory on the sender's port, once for every peer, and out by each
peer after the latency. Where ranks compute on CPUs those copies run on the rank's own core
beside its ops (the runtime's sender and receiver threads), so the op a rank is running
when one of its copies ends takes longer by that copy (`_interfere`); so do gloo's threads
while a GRAD_SYNC runs, and an op beside it moves at the speed the all-reduce leaves it
(`CostProfile.allreduce_core`, `_on_core`). A GRAD_SYNC is a
collective: every member waits until all have arrived (and, where the profile measured a
`jitter`, for the expected slowest of those that arrive together: `_slowest_member`), then
all hold their ports for the all-reduce time.

Costs: a job costs its op's cost in the profile, times its batch's measured scale where the
profile has one (`CostProfile.batch_cost`: batches differ, and a synchronous group waits for
its slowest), plus the weight copies a schedule makes its ranks do where the profile has a copy
bandwidth (`tgpipe.simulator.copies`); a snapshot epoch's job costs what its snapshot's size says
(`SnapshotWorkload.cost`), and its GPU jobs run on the rank's `SharedDevice`, where the two
worker lanes ``gpu`` and ``gpu2`` slow each other only where they compete. A replay gives
each job its own measured seconds (`simulate(..., costs=...)`).

A resource that only one lane of the schedule ever uses cannot be contended (a lane runs one
action at a time), so it is not requested: that keeps the simulation fast without changing
any time. A run that cannot finish raises `Deadlock`, naming the waiting actions and what
each waits for.

Examples
--------
>>> from tgpipe.dag import load_profile
>>> from tgpipe.schedules.families import sequential
>>> p = load_profile("gpu-illustrative")
>>> trace = simulate(sequential(p, 1, 4), p)
>>> len(trace.rows), trace.meta["source"]
(36, 'simulated')
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from functools import cache

import simpy

from tgpipe.dag.bounds import lower_bound
from tgpipe.dag.build import edge_bytes
from tgpipe.dag.cluster import PER_RANK_RESOURCES
from tgpipe.dag.profile import CostProfile
from tgpipe.dag.snapshot import GPU_OPS, snapshot_bound
from tgpipe.errors import InputError
from tgpipe.schedules.ir import Action, Schedule, action_resources, requirements, validate
from tgpipe.simulator.contention import SharedDevice, Usage
from tgpipe.simulator.copies import weight_copies
from tgpipe.trace import Trace, TraceRow

__all__ = ["Deadlock", "expected_max", "simulate"]


def _through(syncs: list[tuple[float, float]], now: float, work: float, share: float) -> float:
    """When `work` seconds of an op started at `now` end, at 1 - `share` of its speed inside
    the all-reduces `syncs` (none starts later than `now`) and at full speed outside.

    >>> _through([(0.0, 4.0)], 1.0, 1.0, 0.5)  # at half speed: 1 s of work takes 2
    3.0
    >>> _through([(0.0, 4.0)], 3.0, 2.0, 0.5)  # 0.5 s of work by 4, the rest after it
    5.5
    >>> _through([(0.0, 4.0)], 1.0, 1.0, 1.0)  # the whole core: nothing until it ends
    5.0
    """
    for begin, end in syncs:
        if end <= now:
            continue
        now = max(now, begin)
        if share < 1.0 and now + work / (1.0 - share) <= end:
            return now + work / (1.0 - share)
        work -= (end - now) * (1.0 - share)
        now = end
    return now + work


@cache
def expected_max(k: int) -> float:
    """E[max of k independent standard normal draws] (0 for k = 1; 0.564 for 2, 1.029 for 4,
    1.424 for 8), by the trapezoid rule over the density of the maximum."""
    if k <= 1:
        return 0.0
    x = [-8 + 16 * i / 4000 for i in range(4001)]
    f = [v * k * math.exp(-v * v / 2) / math.sqrt(2 * math.pi) * _phi(v) ** (k - 1) for v in x]
    return (sum(f) - (f[0] + f[-1]) / 2) * 16 / 4000


def _phi(v: float) -> float:
    return 0.5 * (1 + math.erf(v / math.sqrt(2)))


class Deadlock(InputError):
    """The run stopped with actions left; the message names them and what they wait for."""


def simulate(
    schedule: Schedule,
    profile: CostProfile,
    *,
    check: bool = True,
    costs: Mapping[Action, float] | None = None,
) -> Trace:
    """Run `schedule` on the machine that `profile` describes; return its Trace.

    `check=False` skips `validate` (the search validates its candidates once itself).
    `costs` gives some actions their own seconds instead of their op's cost in the profile:
    a replay of a measured run (`tgpipe.executor.validate.measured_costs`), which separates
    the model's error from the profile's.
    """
    preds = validate(schedule) if check else requirements(schedule)
    return _Run(schedule, profile, preds, costs or {}).run()


class _Run:
    def __init__(
        self, schedule: Schedule, profile: CostProfile, preds: dict, costs: Mapping[Action, float]
    ):
        self.s, self.p = schedule, profile
        self.env = env = simpy.Environment()
        self.cluster = cluster = schedule.cluster
        self.placement = schedule.placement()
        self.preds = preds
        self.done = {act: env.event() for act in self.placement}
        inter = cluster.machines > 1
        self.cost = {op: profile.cost(op, schedule.n_ranks, inter=inter) for op in profile.ops}
        w = self.workload = schedule.workload
        if (w is None) != (profile.workload == "mtgnn"):
            raise InputError(
                f"profile {profile.name!r} is for the {profile.workload} workload, schedule "
                f"{schedule.name!r} for the {'mtgnn' if w is None else 'snapshot'} one; give a "
                "profile of the schedule's workload"
            )
        n = schedule.n_ranks
        base = {}
        if w is not None:  # every action costs what its unit's size says
            base = {a: w.cost(profile, a.op, a.batch, n, inter) for a in self.placement}
        elif profile.batch_scale:  # batches differ as measured
            base = {a: profile.batch_cost(a.op, a.batch, n, inter) for a in self.placement}
        for a, seconds in weight_copies(schedule, profile).items():  # copies of weights
            base[a] = base.get(a, self.cost[a.op]) + seconds
        self.costs = base | dict(costs)  # a replay's own seconds include its copies
        self.measured = set(costs)  # ... and its all-reduces their waits (no jitter added)
        self.computing: dict[int, Action] = {}  #: a CPU rank -> the op on its core now
        self.stretch: dict[int, float] = defaultdict(float)  #: ... its copies' time, to add
        #: a CPU rank -> its all-reduces (start, end) that its next ops may overlap
        self.syncing: dict[int, list[tuple[float, float]]] = defaultdict(list)
        #: ... the share of its core each uses (a snapshot epoch's one all-reduce: none)
        self.sync_core = 0.0 if w is not None else profile.allreduce_core(n, inter)
        # a snapshot epoch on GPUs: the GPU ops of a rank's workers share its GPU
        self.devices = {}
        if w is not None and profile.compute == "gpu":
            self.devices = {r: SharedDevice(env, capacity=2) for r in range(schedule.n_ranks)}
        self.rows: list[TraceRow] = []
        self.waiting_on: dict[tuple[int, str], tuple[Action, object]] = {}
        # resources: per rank, per machine; requested only where two lanes share one
        users = defaultdict(set)
        for rank, lane, _, act in schedule.actions():
            for kind in self._resources(act, lane):
                users[self._resource_key(rank, kind)].add((rank, lane))
        self.resources = {}
        for key, lanes in users.items():
            capacity = profile.cpu_cores if key[0] == "cpu" else 1
            if len(lanes) > 1 or capacity > 1:
                self.resources[key] = simpy.Resource(env, capacity)
        self.ports: dict[object, simpy.Resource] = {}  # link ports, on first use
        # messages: one per (source action, destination rank), sent when the source ends
        self.sends: dict[Action, dict[int, str]] = defaultdict(dict)
        self.arrivals: dict[tuple[Action, int], simpy.Event] = {}
        for act, (dst, _, _) in self.placement.items():
            for pred, kind in preds[act]:
                src = self.placement[pred][0]
                if src != dst:
                    self.sends[pred][dst] = kind
                    self.arrivals[pred, dst] = env.event()
        # prefetch window: per (rank, batch) count of actions left, and a finish event
        self.left: dict[tuple[int, int], int] = defaultdict(int)
        for rank, _, _, act in schedule.actions():
            self.left[rank, act.batch] += 1
        self.finished = {key: env.event() for key in self.left}
        self.window = schedule.window_waits()
        # collectives: group -> arrivals count and the event that releases all members
        self.members = defaultdict(int)
        for act in self.placement:
            if act.op == "GRAD_SYNC":
                self.members[self._sync_group(act)] += 1
        self.arrived = defaultdict(int)
        self.arrivals_at: dict[int, list[float]] = defaultdict(list)
        self.all_arrived = {grp: env.event() for grp in self.members}

    def _shares_gpu(self, act: Action, lane: str) -> bool:
        """Whether `act` runs on its rank's shared GPU (a snapshot epoch's GPU op)."""
        return bool(self.devices) and act.op in GPU_OPS and lane in ("gpu", "gpu2")

    def _resources(self, act: Action, lane: str) -> tuple[str, ...]:
        if self._shares_gpu(act, lane):
            return ()
        return action_resources(act.op, lane, self.p.compute)

    def _sync_group(self, act: Action) -> int:
        """The all-reduce a GRAD_SYNC belongs to: its synchronous group; a snapshot epoch
        has one."""
        return 0 if self.workload is not None else act.batch // self.s.semantics.g

    def _resource_key(self, rank: int, kind: str) -> tuple:
        if kind in PER_RANK_RESOURCES:
            return (kind, rank)
        return (kind, self.cluster.machine(rank))

    def run(self) -> Trace:
        for key, acts in self.s.lanes.items():
            if acts:
                self.env.process(self._lane(key, acts))
        self.env.run()
        if len(self.rows) != len(self.placement):
            raise Deadlock(self._explain())
        s = self.s
        meta = {
            "schedule": s.name,
            "semantics": list(s.semantics),
            "source": "simulated",
            "n_ranks": s.n_ranks,
            "batch_size": self.p.batch_size,
            "profile": self.p.name,
            "memory": s.memory,
        }
        if self.workload is None:
            meta["bound"] = lower_bound(
                self.p, s.semantics, s.n_ranks, gpus_per_machine=s.gpus_per_machine, memory=s.memory
            ).per_batch
        else:  # the epoch's bound, per unit as the metrics count batches
            epoch = snapshot_bound(self.workload, self.p, s.n_ranks).seconds
            meta |= {"workload": "snapshot", "bound": epoch / s.n_batches, "bound_epoch": epoch}
        return Trace(sorted(self.rows, key=lambda r: (r.start, r.rank)), meta)

    # ---- processes ---------------------------------------------------------------------------
    def _lane(self, key: tuple[int, str], acts: tuple[Action, ...]):
        env, rank, lane = self.env, key[0], key[1]
        for act in acts:
            for event in self._waits(rank, act):
                if not event.processed:
                    self.waiting_on[key] = (act, event)
                    yield event
            self.waiting_on.pop(key, None)
            if act.op == "GRAD_SYNC":
                yield from self._collective_arrive(key, act)
            cost = self.costs.get(act, self.cost[act.op])
            if self._shares_gpu(act, lane):
                c = self.p.ops[act.op]
                start, _ = yield from self.devices[rank].run(cost, Usage(c.compute, c.memory))
            else:
                held, kinds = [], self._resources(act, lane)
                for kind in kinds:
                    res = self.resources.get(self._resource_key(rank, kind))
                    if res is not None:
                        req = res.request()
                        yield req
                        held.append((res, req))
                start = env.now
                on_core = self.p.compute == "cpu" and "gpu" in kinds
                if on_core:  # a CPU rank's op: one at a time, on the rank's core
                    self.computing[rank] = act
                    yield from self._on_core(rank, act, cost)
                    del self.computing[rank]
                else:
                    if act.op == "GRAD_SYNC" and self.sync_core:  # its threads use the core
                        self.syncing[rank].append((start, start + cost))
                    yield env.timeout(cost)
                for res, req in held:
                    res.release(req)
            self.rows.append(TraceRow(rank, lane, act.op, act.batch, start, env.now))
            self.done[act].succeed()
            self._send_all(act, rank)
            self.left[rank, act.batch] -= 1
            if self.left[rank, act.batch] == 0:
                self.finished[rank, act.batch].succeed()

    def _waits(self, rank: int, act: Action) -> list[simpy.Event]:
        events = []
        need = self.window.get((rank, act.batch))
        if need is not None:
            events.append(self.finished[rank, need])
        for pred, _ in self.preds[act]:
            if self.placement[pred][0] == rank:
                events.append(self.done[pred])
            else:
                events.append(self.arrivals[pred, rank])
        return events

    def _send_all(self, act: Action, src: int) -> None:
        """Start the messages that carry `act`'s result to the other ranks that need it."""
        published = None
        for dst, kind in self.sends.get(act, {}).items():
            arrived = self.arrivals[act, dst]
            same_machine = self.cluster.same_machine(src, dst)
            if self.workload is None:
                nbytes = edge_bytes(self.p, act.op, kind)
            else:
                nbytes = self.workload.edge_bytes(self.p, act, kind)
            if kind == "param" and self.p.slots(self.s.memory, self.cluster.machines):
                copy_in, latency, copy_out = self.p.slot_handoff(nbytes)
                if published is None:  # one copy in, on the sender's port, for every peer
                    published = self.env.process(self._publish(src, copy_in))
                self.env.process(self._take(published, latency, copy_out, dst, arrived))
                continue
            machines = self.cluster.machines
            total = self.p.edge_delay(kind, nbytes, False, same_machine, self.s.memory, machines)
            link = self.p.intra if same_machine else self.p.inter
            if total > link.latency:  # bytes to move: hold a port
                self.env.process(self._transfer(src, same_machine, total, link, arrived))
            else:  # a token: latency alone
                self.env.timeout(total).callbacks.append(lambda _, a=arrived: a.succeed())

    def _transfer(self, src, same_machine, total, link, arrived):
        port = ("port", src) if same_machine else ("nic", self.cluster.machine(src))
        with self._port(port).request() as req:
            yield req
            yield self.env.timeout(total - link.latency)  # bytes / bandwidth
        yield self.env.timeout(link.latency)
        arrived.succeed()

    def _port(self, key) -> simpy.Resource:
        """A sender's port (``("port", rank)``) or a machine's card (``("nic", machine)``)."""
        return self.ports.setdefault(key, simpy.Resource(self.env, 1))

    def _publish(self, src, copy):
        """A learner copied into its shared slot by the sender's thread (its port)."""
        with self._port(("port", src)).request() as req:
            yield req
            yield self.env.timeout(copy)
        self._interfere(src, copy)

    def _take(self, published, latency, copy, dst, arrived):
        """A peer's copy out of the slot, once the copy in is done and the token (its
        `latency`) says so."""
        yield published
        yield self.env.timeout(latency + copy)
        self._interfere(dst, copy)
        arrived.succeed()

    def _on_core(self, rank: int, act: Action, work: float):
        """`act` does `work` seconds on its CPU rank's core, which the rank's other threads
        share: it ends later by the copies that end meanwhile (`_interfere`), and it moves at
        1 - `sync_core` of its speed while the rank's all-reduce runs (gloo's threads,
        `CostProfile.allreduce_core`). A replayed op's measured seconds hold all that."""
        share = 0.0 if act in self.measured else self.sync_core
        syncs = self.syncing[rank]  # (start, end), in order: each is added as it starts
        while work > 1e-12:
            start, known = self.env.now, len(syncs)
            yield self.env.timeout(_through(syncs, start, work, share) - start)
            work = self.stretch.pop(rank, 0.0)  # copies that ended meanwhile
            work += (
                share
                * sum(  # all-reduces that started meanwhile
                    max(0.0, min(end, self.env.now) - begin) for begin, end in syncs[known:]
                )
            )
        self.syncing[rank] = [(b, e) for b, e in syncs if e > self.env.now]

    def _interfere(self, rank: int, seconds: float) -> None:
        """A copy of `seconds` by a thread of `rank` beside its ops has just ended: on a CPU
        rank it shared the core with the op running there, which takes that much longer (a
        replayed op's measured seconds already hold it; an idle core lost nothing)."""
        op = self.computing.get(rank)  # set on CPU ranks only
        if op is not None and op not in self.measured:
            self.stretch[rank] += seconds

    def _collective_arrive(self, key, act: Action):
        group = self._sync_group(act)
        self.arrived[group] += 1
        self.arrivals_at[group].append(self.env.now)
        if self.arrived[group] == self.members[group]:
            arrivals = self.arrivals_at.pop(group)
            late = 0.0 if act in self.measured else self._slowest_member(arrivals)
            release = self.all_arrived[group]
            if late:
                self.env.timeout(late).callbacks.append(lambda _, e=release: e.succeed())
            else:
                release.succeed()
        event = self.all_arrived[group]
        if not event.processed:
            self.waiting_on[key] = (act, event)
            yield event
            self.waiting_on.pop(key, None)

    def _slowest_member(self, arrivals: list[float]) -> float:
        """How much later than the last computed arrival a synchronous group starts its
        all-reduce: each member (one batch's GRAD_SYNC) comes after work that varies run to
        run by the profile's `jitter` (sigma), and the group waits for its slowest; the
        members that arrive within 2 sigma of the last compete for slowest, and the
        expected slowest of k is `expected_max`(k) sigma later than a typical one."""
        if not self.p.jitter or self.workload is not None:
            return 0.0
        sigma = self.p.jitter
        last = max(arrivals)
        return expected_max(sum(last - t <= 2 * sigma for t in arrivals)) * sigma

    def _explain(self) -> str:
        names = {id(e): str(a) for a, e in self.done.items()}
        names.update({id(e): f"{a} to reach rank {d}" for (a, d), e in self.arrivals.items()})
        names.update(
            {id(e): f"batch {b} to finish on rank {r}" for (r, b), e in self.finished.items()}
        )
        names.update(
            {id(e): f"all members of all-reduce group {g}" for g, e in self.all_arrived.items()}
        )
        stuck = [
            f"rank {r} {lane}: {act} waits for {names.get(id(ev), 'an event')}"
            for (r, lane), (act, ev) in sorted(self.waiting_on.items())
        ]
        left = len(self.placement) - len(self.rows)
        return (
            f"schedule {self.s.name!r} deadlocked with {left} action(s) left: "
            + "; ".join(stuck[:6])
            + ("; ..." if len(stuck) > 6 else "")
        )
