"""The runtime: a Schedule run for real, one process per rank, on torch.distributed.

**Lowering.** `lower` turns a schedule into one program per rank: its lanes, each an ordered
list of steps, plus the receives its peers' messages need. A step is an op of the DAG or a
message; the cross-rank edges of the DAG become messages:

- *memory*, with the ``rows`` backend (ranks on several machines): every rank keeps a replica
  of the node memory (a versioned `MemoryStore`). Each MEM_WRITE is followed by a send of the
  rows it wrote to every other rank; each rank posts a receive for every write of every peer
  and applies it. The store applies writes in batch order whatever order they arrive in, and
  a read waits until the store holds the version its semantics name, and rebuilds that
  version if later writes are already in: every read is exactly the one the reference
  trainer makes. With the ``shared`` backend (ranks on one machine) all ranks map one
  versioned store in shared host memory (`tgpipe.executor.shared_store`) with the same
  semantics, and a memory message is a token: it wakes the peers' waits for that version at
  once, where they would otherwise look again only after their next pause (up to 2 ms).
- *weights*: a STEP whose result a batch on another rank needs (the next step of a ring; the
  weights a stale batch computes with) is followed by a send of the packed learner (weights,
  Adam moments, step count), so a ring is exactly "sequential steps with stale gradients".
  The receiver files it under its version; a step or a weight reader waits for its version.
  With the ``shared`` backend the packed learner goes through shared host memory instead of
  gloo (`tgpipe.executor.shared_weights`: a copy in, a copy out, where a TCP transfer on
  loopback cost both cores more), and a rank copies weights of its own only where
  `tgpipe.executor.weight_plan` says it must (in a ring, never).
- *group*: GRAD_SYNC is an all-reduce over the ranks of its synchronous group.

**Running.** Each lane is a thread that walks its steps in order. An op waits for its DAG
predecessors on its own rank and for the prefetch window; memory, weights and gradients
from other ranks arrive through the waits above. Messages travel on their own process groups
(one for memory rows or tokens, one for weights, one per synchronous group's all-reduce),
with tags that name the batch, so that lanes never contend for one channel. On GPUs each
lane thread also has a CUDA stream of its own (`tgpipe.executor.lane_clock`) and the
all-reduce runs on NCCL; memory and weights still travel as CPU tensors (host memory or
gloo), as on CPUs.

Batches must run whole on one rank (every family does), the batches of a synchronous
group on distinct ranks, and a rank's all-reduces on one lane in group order (ranks call a
process group's collectives in one order).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

from tgpipe.dag.build import predecessors
from tgpipe.errors import InputError
from tgpipe.schedules.ir import Action, Schedule

__all__ = ["Message", "Program", "lower", "memory_readers", "process_group_sets", "tag"]

#: Tags, unique within a process group: four per batch for memory rows (size, node ids,
#: float32 columns, float64 times); the packed learner of a weight message uses the first.
_TAGS = 4


class Message(NamedTuple):
    """A send or a receive that a cross-rank edge needs: what (the action whose result
    travels), which kind (``memory`` rows or ``weights``), and the peer ranks."""

    kind: str
    action: Action
    peers: tuple[int, ...]


@dataclass
class Program:
    """One rank's part of a lowered schedule."""

    rank: int
    lanes: dict[str, list[Action | Message]]  #: lane -> ops, each send right after its op
    receives: list[Message]  #: every message this rank receives, in posting order
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: group -> its ranks

    def ops(self) -> list[Action]:
        return [s for steps in self.lanes.values() for s in steps if isinstance(s, Action)]

    def sends(self, kind: str) -> list[Message]:
        """The messages of `kind` this rank sends (``weights``: a packed learner each;
        ``memory``: a write's rows, or a token)."""
        return [
            s
            for steps in self.lanes.values()
            for s in steps
            if isinstance(s, Message) and s.kind == kind
        ]


def memory_readers(schedule: Schedule) -> list[int]:
    """The ranks that read node memory (those that need its writes)."""
    place = schedule.placement()
    return sorted({place[a][0] for a in place if a.op in ("MEM_FETCH", "MEM_SUPPORT")})


def lower(schedule: Schedule) -> dict[int, Program]:
    """One `Program` per rank of the schedule (see the module doc), the same for either
    node memory backend: a memory message carries rows or a token."""
    place = schedule.placement()
    preds = predecessors(schedule.semantics, schedule.n_batches)
    rank_of = {act: loc[0] for act, loc in place.items()}
    g = schedule.semantics.g
    # batches run whole on one rank; a group's batches on distinct ranks
    home: dict[int, int] = {}
    for act, rank in rank_of.items():
        if home.setdefault(act.batch, rank) != rank:
            raise InputError(
                f"batch {act.batch} runs on ranks {home[act.batch]} and {rank}: the runtime "
                "needs every op of a batch on one rank"
            )
    groups: dict[int, tuple[int, ...]] = {}
    for b, rank in sorted(home.items()):
        members = groups.get(b // g, ())
        if rank in members:
            raise InputError(
                f"two batches of synchronous group {b // g} run on rank {rank}: the runtime "
                "needs each batch of a group on its own rank"
            )
        groups[b // g] = (*members, rank)
    readers = memory_readers(schedule)  # rows, or with the shared store a token
    weight_to: dict[Action, set[int]] = defaultdict(set)
    for act, plist in preds.items():
        for (op, j), kind in plist:
            src = Action(op, j)
            if rank_of[src] != rank_of[Action(*act)]:
                if kind == "param":
                    weight_to[src].add(rank_of[Action(*act)])
                elif kind == "data":
                    raise InputError(f"{act} and its input {src} run on different ranks")
    _check_all_reduces(schedule)
    programs = {r: Program(r, {}, [], {}) for r in range(schedule.n_ranks)}
    sends: dict[int, list[Message]] = defaultdict(list)
    for (rank, lane), acts in sorted(schedule.lanes.items()):
        steps: list[Action | Message] = []
        for act in acts:
            steps.append(act)
            if act.op == "MEM_WRITE":
                peers = tuple(r for r in readers if r != rank)
                if peers:
                    steps.append(Message("memory", act, peers))
            if act.op == "STEP" and weight_to.get(act):
                steps.append(Message("weights", act, tuple(sorted(weight_to[act]))))
            if isinstance(steps[-1], Message):
                sends[rank].append(steps[-1])
        programs[rank].lanes[lane] = steps
    for src, messages in sorted(sends.items()):
        for m in messages:
            for dst in m.peers:
                programs[dst].receives.append(Message(m.kind, m.action, (src,)))
    for p in programs.values():
        p.groups = {grp: ranks for grp, ranks in groups.items() if p.rank in ranks}
    return programs


def _check_all_reduces(schedule: Schedule) -> None:
    """A rank's all-reduces run on one lane, in group order: ranks that share a process
    group must call its collectives in one order, and two lanes' order is nobody's."""
    for rank in range(schedule.n_ranks):
        syncs = [
            (lane, act.batch)
            for (r, lane), acts in sorted(schedule.lanes.items())
            if r == rank
            for act in acts
            if act.op == "GRAD_SYNC"
        ]
        lanes = sorted({lane for lane, _ in syncs})
        if len(lanes) > 1:
            raise InputError(
                f"rank {rank} runs GRAD_SYNC on lanes {', '.join(lanes)}: the runtime needs "
                "a rank's all-reduces on one lane"
            )
        batches = [b for _, b in syncs]
        for before, after in pairwise(batches):
            if after < before:
                raise InputError(
                    f"rank {rank} runs GRAD_SYNC out of batch order ({before} before {after}): "
                    "the runtime needs a rank's all-reduces in the order of their groups"
                )


def tag(action: Action, part: int = 0) -> int:
    """The message tag of one part of `action`'s result."""
    return action.batch * _TAGS + part


def process_group_sets(schedule: Schedule) -> list[tuple[int, ...]]:
    """The distinct rank sets of the schedule's synchronous groups, in a fixed order (every
    rank creates the process groups in this order)."""
    sets = set()
    for p in lower(schedule).values():
        sets.update(ranks for ranks in p.groups.values() if len(ranks) > 1)
    return sorted(sets, key=lambda ranks: (len(ranks), ranks))
