"""What weights cost the ranks themselves: the copies of the learner and its weights.

A link moves a packed learner (weights and Adam moments) from rank to rank, and the
simulator charges the link for it; the ranks may also copy it, on the cores that compute.
`tgpipe.executor.weight_plan.WeightPlan` says which copies the runtime makes; this module
charges them:

- a STEP that takes over a learner which one of its rank's loads still reads copies it
  (STEP's bytes); one that keeps its result while the learner is stepped in place next
  copies it too;
- a rank that computes with a version it may not use in place loads that version's weights
  into a model, once per version: a copy of the weights (GRAD_SYNC's bytes, as many as the
  gradients), charged to MEM_ROOT of the version's first batch on the rank (the runtime
  loads in whichever of that batch's ops computes first: MEM_SUPPORT, where a schedule runs
  it first).

Each copy costs `CostProfile.copy_time`; a profile without ``copy_bandwidth`` (the built-in
GPU ones) charges nothing. Sequential, data parallel, MSPipe and the PipeTGL ring copy
nothing.

Examples
--------
>>> import dataclasses
>>> from tgpipe.dag import load_profile
>>> from tgpipe.dag.semantics import Semantics
>>> from tgpipe.schedules.families import pipeline, pipetgl
>>> p = dataclasses.replace(load_profile("gpu-illustrative"), copy_bandwidth=1e9)
>>> weight_copies(pipetgl(p, 2, 8), p)
{}
>>> lagged = weight_copies(pipeline(p, 1, 4, Semantics(0, 1, 1)), p)
>>> round(lagged["STEP", 0] * 1e3, 3) == round(p.ops["STEP"].bytes / 1e6, 3)  # ms
True
"""

from __future__ import annotations

from collections import defaultdict

from tgpipe.dag.profile import CostProfile
from tgpipe.executor.weight_plan import WeightPlan
from tgpipe.schedules.ir import Action, Schedule

__all__ = ["weight_copies"]


def weight_copies(schedule: Schedule, profile: CostProfile) -> dict[Action, float]:
    """Seconds of copying that each action of an M-TGNN schedule does besides its op (module
    doc); empty when nothing is copied."""
    if not profile.copy_bandwidth or schedule.workload is not None:
        return {}
    plan = WeightPlan.of(schedule)
    packed = profile.copy_time(profile.ops["STEP"].bytes)
    extra: dict[Action, float] = defaultdict(float)
    for copied in (plan.takeovers - plan.adopted, plan.puts - plan.shared):
        for b in copied:
            extra[Action("STEP", b)] += packed
    for b in plan.first_loads.values():
        extra[Action("MEM_ROOT", b)] += profile.copy_time(profile.ops["GRAD_SYNC"].bytes)
    return dict(extra)
