import pytest

from tgpipe.errors import InputError
from tgpipe.metrics import gpu_busy, metrics, steady_window
from tgpipe.trace import Trace, TraceRow


def _pipeline(n, period, busy, ranks=1):
    rows = [TraceRow(b % ranks, "gpu", "FWD", b, b * period, b * period + busy) for b in range(n)]
    return Trace(rows, {"batch_size": 600, "n_ranks": ranks})


def test_period_throughput_bubbles_by_hand():
    m = metrics(_pipeline(100, 2.0, 1.5), bound=1.5)
    assert m.period == pytest.approx(2.0)
    assert m.throughput == pytest.approx(300.0)
    assert m.bubbles == pytest.approx((0.25,))
    assert m.gap == pytest.approx(2.0 / 1.5 - 1)
    assert m.makespan == pytest.approx(99 * 2.0 + 1.5)


def test_warmup_is_left_out():
    rows = _pipeline(100, 1.0, 1.0).rows
    # a slow first batch shifts everything but leaves the steady-state period alone
    rows = [r._replace(start=r.start + 50, end=r.end + 50) if r.batch else r for r in rows]
    assert metrics(Trace(rows)).period == pytest.approx(1.0)


def test_overlapping_rows_are_not_counted_twice():
    rows = [TraceRow(0, "gpu", "FWD", 0, 0, 2), TraceRow(0, "gpu", "BWD", 0, 1, 3)]
    assert gpu_busy(Trace(rows), 0, 0, 4) == 3


def test_short_run_uses_whole_run():
    start, end, n = steady_window(_pipeline(3, 1.0, 1.0))
    assert (start, end, n) == (0.0, 3.0, 3)


def test_trace_round_trip(tmp_path):
    t = _pipeline(5, 1.0, 0.5, ranks=2)
    t.save(tmp_path / "t.json")
    assert Trace.load(tmp_path / "t.json") == t


@pytest.mark.parametrize(
    "text,message",
    [
        ("{", "not valid JSON"),
        ('{"x": 1}', "not a tgpipe trace"),
        ('{"rows": [[0, "gpu", "FOO", 0, 0, 1]]}', "row 0"),
        ('{"rows": [[0, "gpu", "FWD", 0, 2, 1]]}', "end >= start"),
    ],
)
def test_bad_trace(tmp_path, text, message):
    (tmp_path / "t.json").write_text(text)
    with pytest.raises(InputError, match=message):
        Trace.load(tmp_path / "t.json")
