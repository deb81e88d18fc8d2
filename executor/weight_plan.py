"""Which weight copies a schedule's ranks make: one definition for the runtime
(`tgpipe.executor.rank`) and the simulator that charges them (`tgpipe.simulator.copies`).

A rank's `Learner` is one flat tensor (weights, Adam moments, step count) that its model
views. What a batch computes with, and what a STEP starts from, is either that learner as it
is or a copy:

- *own*: a batch computes with the learner's own model when the STEP that made its weight
  version ran on its rank (or the version is the epoch's first) and no other STEP of that
  rank comes between that one and the batch's own group: nothing changes the learner before
  the batch's backward is done. Otherwise the rank *loads* the version into a pooled model,
  once per (rank, version): a copy of the weights.
- *take-over*: a STEP whose rank did not step the group before starts from the packed
  learner that arrived. It *adopts* that tensor as its storage (no copy) unless one of the
  rank's loads still reads it; then it adopts a copy.
- *put*: a STEP whose result another rank reads (a param edge that leaves the rank), or any
  STEP under stale weights (``s_w`` > 0), keeps its result as a packed version. That is the
  learner's storage itself (*shared*, no copy) when the rank's next STEP is a take-over, or
  there is none: within the epoch the storage is never changed again. Otherwise a copy.

In a PipeTGL ring every batch is own, every take-over adopts and every put is shared: the
ring moves the learner without copying it on either side.

Examples
--------
>>> from tgpipe.dag import load_profile
>>> from tgpipe.dag.semantics import Semantics
>>> from tgpipe.schedules.families import pipeline, pipetgl
>>> p = load_profile("gpu-illustrative")
>>> ring = WeightPlan.of(pipetgl(p, 2, 6))
>>> sorted(ring.takeovers), ring.copies()
([1, 2, 3, 4, 5], (0, 0, 0))
>>> lagged = WeightPlan.of(pipeline(p, 1, 6, Semantics(0, 1, 1)))  # one rank, stale weights
>>> sorted(lagged.loads), lagged.copies()  # batch b>0 computes with a version STEP(b-1) may pass
([1, 2, 3, 4, 5], (5, 0, 5))
"""

from __future__ import annotations

from dataclasses import dataclass

from tgpipe.dag.semantics import Semantics
from tgpipe.executor.runtime import lower
from tgpipe.executor.versions import weight_version
from tgpipe.schedules.ir import Schedule

__all__ = ["WeightPlan"]

#: Ops that compute with a model holding their batch's weight version: the DAG's weight
#: readers and BWD, which differentiates FWD's graph.
MODEL_OPS = ("MEM_ROOT", "MEM_SUPPORT", "FWD", "BWD")


@dataclass(frozen=True)
class WeightPlan:
    """The copies of one M-TGNN schedule, by batch (a batch runs whole on one rank)."""

    loads: frozenset[int]  #: batches that compute with a loaded copy (not own)
    takeovers: frozenset[int]  #: STEPs (by batch) that start from another rank's learner
    adopted: frozenset[int]  #: of those, the ones that adopt it without a copy
    puts: frozenset[int]  #: STEPs whose result is kept as a packed version
    shared: frozenset[int]  #: of those, the ones kept without a copy
    #: (rank, version) loaded into a model -> the first batch that loads it (where it copies)
    first_loads: dict[tuple[int, int], int]

    @classmethod
    def of(cls, schedule: Schedule) -> WeightPlan:
        semantics: Semantics = schedule.semantics
        _, s_w, g = semantics
        place = schedule.placement()
        rank = {act.batch: where[0] for act, where in place.items()}
        steps = {act.batch for act in place if act.op == "STEP"}
        stepped: dict[int, set[int]] = {}  # rank -> groups it steps
        for b in steps:
            stepped.setdefault(rank[b], set()).add(b // g)

        def own(b: int) -> bool:
            v, r = weight_version(semantics, b), rank[b]
            maker = b - g * (1 + s_w)  # the STEP that made version v (DAG's param edge)
            if maker >= 0 and rank.get(maker) != r:
                return False
            return not any(v <= grp < b // g for grp in stepped.get(r, ()))

        loads = {b for b in rank if not own(b)}
        first: dict[tuple[int, int], int] = {}
        for b in sorted(loads):
            first.setdefault((rank[b], weight_version(semantics, b)), b)
        takeovers = {b for b in steps if b >= g and b // g - 1 not in stepped[rank[b]]}
        adopted = {b for b in takeovers if (rank[b], b // g) not in first}
        if s_w:
            puts = set(steps)
        else:  # the STEPs whose result a weights message carries to other ranks
            puts = {m.action.batch for p in lower(schedule).values() for m in p.sends("weights")}

        def next_is_takeover(b: int) -> bool:
            later = [grp for grp in stepped[rank[b]] if grp > b // g]
            return not later or min(later) - 1 not in stepped[rank[b]]

        shared = {b for b in puts if next_is_takeover(b)}
        return cls(
            frozenset(loads),
            frozenset(takeovers),
            frozenset(adopted),
            frozenset(puts),
            frozenset(shared),
            first,
        )

    def copies(self) -> tuple[int, int, int]:
        """How many weight loads, take-over copies and put copies the plan makes."""
        return (
            len(self.first_loads),
            len(self.takeovers - self.adopted),
            len(self.puts - self.shared),
        )
