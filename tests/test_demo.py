"""The demo's summary: a found schedule that is a family's own is recognised as it."""

from tgpipe.dag import load_profile
from tgpipe.dag.semantics import Semantics
from tgpipe.demo import _same
from tgpipe.schedules.families import family, pipeline


def test_a_found_schedule_that_is_a_family_is_recognised_whatever_its_name():
    p = load_profile("gpu-illustrative")
    ring = family("pipetgl", p, 2, 12)
    again = pipeline(p, 2, 12, Semantics(0, 1, 1), name="pipeline(found)")
    assert again.name != ring.name and _same(again, ring)
    assert not _same(family("data_parallel", p, 2, 12), ring)
    assert not _same(pipeline(p, 2, 12, Semantics(0, 1, 1), prefetch=2), ring)
