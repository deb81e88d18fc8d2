"""Every Examples section in a docstring runs and says what it shows."""

import doctest
import importlib

import pytest

MODULES = [
    "tgpipe.dag.ops",
    "tgpipe.dag.semantics",
    "tgpipe.dag.profile",
    "tgpipe.dag.cluster",
    "tgpipe.dag.build",
    "tgpipe.dag.bounds",
    "tgpipe.dag.snapshot",
    "tgpipe.trace",
    "tgpipe.metrics",
    "tgpipe.gantt",
    "tgpipe.executor.graph",
    "tgpipe.executor.data",
    "tgpipe.executor.synthetic",
    "tgpipe.executor.download",
    "tgpipe.executor.sampler",
    "tgpipe.executor.memory",
    "tgpipe.executor.shared_store",
    "tgpipe.executor.model",
    "tgpipe.executor.stream",
    "tgpipe.executor.learner",
    "tgpipe.executor.weight_plan",
    "tgpipe.executor.shared_weights",
    "tgpipe.executor.versions",
    "tgpipe.executor.scores",
    "tgpipe.executor.ops",
    "tgpipe.executor.reference",
    "tgpipe.executor.profiler",
    "tgpipe.executor.checkpoint",
    "tgpipe.executor.validate",
    "tgpipe.executor.snapshots",
    "tgpipe.executor.snapshot_model",
    "tgpipe.executor.snapshot_reference",
    "tgpipe.executor.snapshot_runtime",
    "tgpipe.executor.snapshot_profiler",
    "tgpipe.executor.lanes",
    "tgpipe.executor.lane_clock",
    "tgpipe.schedules.ir",
    "tgpipe.schedules.families",
    "tgpipe.schedules.snapshot",
    "tgpipe.simulator.sim",
    "tgpipe.simulator.estimate",
    "tgpipe.simulator.contention",
    "tgpipe.simulator.copies",
    "tgpipe.progress",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
