"""What a weight ring costs the ranks themselves: the copies of the learner and its weights.

A link moves a packed learner (weights and Adam moments) from rank to rank, and the
simulator charges the link for it; but the ranks copy it too, on the cores that compute
(`tgpipe.executor.rank` does what this module charges):

- a STEP that takes over the learner from another rank (no STEP of the group before it ran
  on this rank) first unpacks it: a copy of the packed bytes (STEP's bytes);
- a STEP whose result another rank reads (a param edge of the DAG that leaves the rank), or
  any STEP under stale weights (``s_w`` > 0: the batches that read the version run later,
  from a packed copy), packs it: another copy;
- a rank that computes with a version it did not step itself (``s_w`` > 0, or no STEP of
  the group that made it ran here) loads that version's weights into a model, once per
  version: a copy of the weights (GRAD_SYNC's bytes, as many as the gradients), charged to
  MEM_ROOT of the version's first batch on the rank (the runtime loads in whichever of that
  batch's ops computes first: MEM_SUPPORT, where a schedule runs it first).

Each copy costs `CostProfile.copy_time`; a profile without ``copy_bandwidth`` (the built-in
GPU ones) charges nothing. Data parallel and sequential schedules step on every rank and
copy nothing.

Examples
--------
>>> import dataclasses
>>> from tgpipe.dag import load_profile
>>> from tgpipe.schedules.families import data_parallel, pipetgl
>>> p = dataclasses.replace(load_profile("gpu-illustrative"), copy_bandwidth=1e9)
>>> weight_copies(data_parallel(p, 2, 8), p)
{}
>>> ring = weight_copies(pipetgl(p, 2, 8), p)
>>> round(ring["STEP", 3] * 1e3, 3) == round(2 * p.ops["STEP"].bytes / 1e6, 3)  # ms
True
"""

from __future__ import annotations

from collections import defaultdict

from tgpipe.dag.profile import CostProfile
from tgpipe.executor.versions import weight_version
from tgpipe.schedules.ir import Action, Schedule, requirements

__all__ = ["weight_copies"]


def weight_copies(schedule: Schedule, profile: CostProfile) -> dict[Action, float]:
    """Seconds of copying that each action of an M-TGNN schedule does besides its op (module
    doc); empty when nothing is copied."""
    if not profile.copy_bandwidth or schedule.workload is not None:
        return {}
    _, s_w, g = schedule.semantics
    place = schedule.placement()
    preds = requirements(schedule)
    rank = {act: where[0] for act, where in place.items()}
    packed = profile.copy_time(profile.ops["STEP"].bytes)
    weights = profile.copy_time(profile.ops["GRAD_SYNC"].bytes)
    extra: dict[Action, float] = defaultdict(float)
    stepped = {(rank[a], a.batch // g) for a in place if a.op == "STEP"}  # (rank, group)
    packs = {a for a in place if a.op == "STEP"} if s_w else set()  # stale readers: packed
    for act, needs in preds.items():
        for pred, kind in needs:
            if kind == "param" and rank[pred] != rank[act]:
                packs.add(Action(*pred))  # for another rank (once, however many read it)
    for act in packs:
        extra[act] += packed
    for act in place:  # the group before stepped on no STEP of this rank: taken over
        if act.op == "STEP" and act.batch >= g and (rank[act], act.batch // g - 1) not in stepped:
            extra[act] += packed
    loaded = set()
    for act in sorted((a for a in place if a.op == "MEM_ROOT"), key=lambda a: a.batch):
        b, r = act.batch, rank[act]
        version = weight_version(schedule.semantics, b)
        own = version == 0 or (r, version - 1) in stepped  # this rank's learner holds it
        if (s_w or not own) and (r, version) not in loaded:
            loaded.add((r, version))
            extra[act] += weights
    return dict(extra)
