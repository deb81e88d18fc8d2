"""The demo's summary: a found schedule that is a family's own is recognised as it, and the
verdict compares what ran."""

from tgpipe.dag import load_profile
from tgpipe.dag.semantics import Semantics
from tgpipe.demo import _same, _verdict
from tgpipe.schedules.families import family, pipeline


def test_a_found_schedule_that_is_a_family_is_recognised_whatever_its_name():
    p = load_profile("gpu-illustrative")
    ring = family("pipetgl", p, 2, 12)
    again = pipeline(p, 2, 12, Semantics(0, 1, 1), name="pipeline(found)")
    assert again.name != ring.name and _same(again, ring)
    assert not _same(family("data_parallel", p, 2, 12), ring)
    assert not _same(pipeline(p, 2, 12, Semantics(0, 1, 1), prefetch=2), ring)


def _rows(*measured_ms):
    from tgpipe.executor.validate import Fidelity

    names = ["sequential", "data_parallel(2)", "pipetgl(2)", "found"]
    pairs = zip(names, measured_ms, strict=True)
    return [Fidelity(n, 2, (0, 0, 1), 0.01, m / 1e3) for n, m in pairs]


def _schedules(found):
    p = load_profile("gpu-illustrative")
    names = ("sequential", "data_parallel", "pipetgl")
    return [*(family(f, p, 1 if f == "sequential" else 2, 12) for f in names), found]


def test_a_found_family_is_shown_with_both_its_runs_against_the_other_families():
    p = load_profile("gpu-illustrative")
    found = pipeline(p, 2, 12, Semantics(0, 1, 1), name="pipeline(found)")
    lines = _verdict(_rows(20.0, 12.0, 11.0, 12.5), _schedules(found))
    assert "is pipetgl(2) itself, so it ran twice: 11.00 and 12.50 ms" in lines[0]
    assert "13.6 % apart" in lines[0]
    assert lines[1].startswith("one of its two runs was at least as fast as every other")
    assert "data_parallel(2): 12.00 ms" in lines[1]
    both = _verdict(_rows(20.0, 12.0, 11.0, 11.5), _schedules(found))[1]
    assert both.startswith("both runs were")


def test_a_found_schedule_of_its_own_is_compared_with_the_fastest_family():
    p = load_profile("gpu-illustrative")
    own = pipeline(p, 2, 12, Semantics(0, 1, 1), prefetch=2, name="pipeline(own)")
    (slower, _) = _verdict(_rows(20.0, 12.0, 11.0, 11.5), _schedules(own))
    assert "slower than the fastest family, pipetgl(2): 11.50 ms per batch against 11.00" in slower
    (faster, _) = _verdict(_rows(20.0, 12.0, 11.0, 10.5), _schedules(own))
    assert "at least as fast as every family: 10.50 ms" in faster
