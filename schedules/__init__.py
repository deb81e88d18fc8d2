"""Schedules: the IR that places every DAG node on a rank and a lane, and its families."""

from tgpipe.schedules.families import (
    FAMILIES,
    build_lanes,
    data_parallel,
    disttgl,
    family,
    mspipe,
    pipeline,
    pipetgl,
    sequential,
)
from tgpipe.schedules.ir import Action, Schedule, action_resources, requirements, validate

__all__ = [
    "FAMILIES",
    "Action",
    "Schedule",
    "action_resources",
    "build_lanes",
    "data_parallel",
    "disttgl",
    "family",
    "mspipe",
    "pipeline",
    "pipetgl",
    "requirements",
    "sequential",
    "validate",
]
