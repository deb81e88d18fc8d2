"""The Gantt chart and the Chrome trace, checked against small traces worked out by hand."""

import json
import re
import subprocess
import sys

import plotly.offline
import pytest

from tgpipe.dag.ops import ALL_OPS, OPS
from tgpipe.gantt import (
    BUBBLE_COLOUR,
    OP_COLOURS,
    chrome_trace,
    gantt_figure,
    gpu_gaps,
    write_chrome_trace,
    write_gantt,
)
from tgpipe.metrics import gpu_busy, metrics
from tgpipe.trace import Trace, TraceRow

MS = 1e-3

# Two ranks, three batches; times in ms. The whole run is [0, 9] ms.
#   rank 0 gpu: FWD0 1-3, BWD0 4-6, FWD2 6-7, BWD2 7.5-9  -> idle 0-1, 3-4, 7-7.5
#   rank 1 gpu: FWD1 2-4, BWD1 5-8                         -> idle 0-2, 4-5, 8-9
HAND_ROWS = [
    (0, "cpu", "SAMPLE", 0, 0.0, 1.0),
    (0, "gpu", "FWD", 0, 1.0, 3.0),
    (0, "gpu", "BWD", 0, 4.0, 6.0),
    (0, "gpu", "FWD", 2, 6.0, 7.0),
    (0, "gpu", "BWD", 2, 7.5, 9.0),
    (1, "h2d", "MEM_FETCH", 1, 0.0, 2.0),
    (1, "gpu", "FWD", 1, 2.0, 4.0),
    (1, "gpu", "BWD", 1, 5.0, 8.0),
    (1, "net", "GRAD_SYNC", 1, 8.0, 9.0),
]
HAND_BUBBLES = {
    ("r0 gpu", 0.0, 1.0),
    ("r0 gpu", 3.0, 4.0),
    ("r0 gpu", 7.0, 7.5),
    ("r1 gpu", 0.0, 2.0),
    ("r1 gpu", 4.0, 5.0),
    ("r1 gpu", 8.0, 9.0),
}


def hand(name="hand", source="simulated", shift=0.0, **meta):
    rows = [
        TraceRow(k, lane, op, b, (s + shift) * MS, (e + shift) * MS)
        for k, lane, op, b, s, e in HAND_ROWS
    ]
    return Trace(
        rows,
        {
            "schedule": name,
            "source": source,
            "n_ranks": 2,
            "batch_size": 600,
            "semantics": [0, 1, 1],
        }
        | meta,
    )


def render(template, customdata):
    """The hover text that plotly.js shows for one point (d3's .3f and d are Python's too)."""

    def field(m):
        value, fmt = customdata[int(m.group(1))], m.group(2)
        return format(int(value) if fmt == "d" else float(value), fmt)

    return re.sub(r"%\{customdata\[(\d+)\]:([^}]*)\}", field, template).replace(
        "<extra></extra>", ""
    )


def ticks(fig, trace):
    axis = fig.layout["yaxis" + trace.yaxis[1:]]
    return dict(zip(axis.tickvals, axis.ticktext, strict=True))


def drawn(fig, name):
    """(row label, start ms, end ms) of the bars that the WebGL traces named `name` draw."""
    out = set()
    for t in fig.data:
        if t.name != name or t.mode != "lines":
            continue
        labels = ticks(fig, t)
        x, y = list(t.x), list(t.y)
        assert len(x) % 3 == 0
        for i in range(0, len(x), 3):
            assert x[i + 2] != x[i + 2]  # NaN separates the bars
            assert y[i] == y[i + 1]
            out.add((labels[y[i]], round(x[i], 9), round(x[i + 1], 9)))
    return out


def hovers(fig, name):
    """Every hover text of the traces named `name`, with where it sits (row label, x ms)."""
    out = {}
    for t in fig.data:
        if t.name == name and t.mode == "markers":
            labels = ticks(fig, t)
            for x, y, cd in zip(t.x, t.y, t.customdata, strict=True):
                out[render(t.hovertemplate, cd)] = (labels[y], round(x, 9))
    return out


def test_every_action_is_drawn_with_its_hover():
    fig = gantt_figure(hand())
    bars = set()
    for op in OPS:
        bars |= {(op, *bar) for bar in drawn(fig, op)}
    assert bars == {(op, f"r{k} {lane}", s, e) for k, lane, op, _, s, e in HAND_ROWS}
    texts = {}
    for op in OPS:
        texts |= hovers(fig, op)
    assert len(texts) == len(HAND_ROWS)
    assert texts["<b>BWD2</b> · rank 0 · gpu<br>start 7.500 ms<br>duration 1.500 ms"] == (
        "r0 gpu",
        8.25,  # the middle of the bar
    )
    assert texts["<b>MEM_FETCH1</b> · rank 1 · h2d<br>start 0.000 ms<br>duration 2.000 ms"] == (
        "r1 h2d",
        1.0,
    )


def test_rows_grouped_by_rank_only_lanes_with_activity():
    fig = gantt_figure(hand())
    assert list(fig.layout.yaxis.ticktext) == ["r0 gpu", "r0 cpu", "r1 gpu", "r1 h2d", "r1 net"]


def test_bubbles_are_the_gpu_gaps_worked_out_by_hand():
    fig = gantt_figure(hand())
    assert drawn(fig, "GPU bubble") == HAND_BUBBLES
    texts = hovers(fig, "GPU bubble")
    assert texts["<b>GPU bubble</b> · rank 0<br>start 7.000 ms<br>idle 0.500 ms"] == (
        "r0 gpu",
        7.25,
    )
    assert len(texts) == len(HAND_BUBBLES)
    assert {t.line.color for t in fig.data if t.name == "GPU bubble" and t.mode == "lines"} == {
        BUBBLE_COLOUR
    }


def test_gpu_gaps_merge_overlaps_clip_and_add_up_with_metrics():
    rows = [
        TraceRow(0, "gpu", "FWD", 0, 1.0, 3.0),
        TraceRow(0, "gpu", "MEM_ROOT", 0, 2.0, 4.0),  # overlaps FWD
        TraceRow(0, "gpu", "BWD", 0, 6.0, 7.0),
        TraceRow(1, "cpu", "SAMPLE", 0, 0.0, 10.0),  # rank 1 never uses its GPU
    ]
    t = Trace(rows)
    assert gpu_gaps(t, 0) == [(0.0, 1.0), (4.0, 6.0), (7.0, 10.0)]
    assert gpu_gaps(t, 0, 2.0, 6.5) == [(4.0, 6.0)]
    assert gpu_gaps(t, 0, 0.0, 0.5) == [(0.0, 0.5)]
    assert gpu_gaps(t, 1) == [(0.0, 10.0)]
    # bubbles + busy time = the window, as the metrics count it
    t = hand()
    start, end = metrics(t).window
    for rank in (0, 1):
        idle = sum(e - s for s, e in gpu_gaps(t, rank, start, end))
        assert idle + gpu_busy(t, rank, start, end) == pytest.approx(end - start)


def test_a_rank_without_gpu_work_still_shows_its_idle_gpu():
    t = Trace([TraceRow(0, "gpu", "FWD", 0, 0.0, 2 * MS), TraceRow(1, "cpu", "SAMPLE", 1, 0, MS)])
    fig = gantt_figure(t)
    assert list(fig.layout.yaxis.ticktext) == ["r0 gpu", "r1 gpu", "r1 cpu"]
    assert drawn(fig, "GPU bubble") == {("r1 gpu", 0.0, 2.0)}


def test_titles_show_the_metrics():
    # whole run as window (3 batches): period 9/3 = 3 ms, 600 / 3 ms = 200,000 events/s,
    # GPU idle 2.5 ms on rank 0 and 4 ms on rank 1 of 9: mean 36.1 %; bound 2.5 ms: gap +20 %
    fig = gantt_figure(hand(), bounds=2.5 * MS)
    title = fig.layout.annotations[0].text
    assert title == (
        "<b>hand</b> (simulated) · period 3.000 ms/batch · 200,000 events/s · GPU bubble 36.1% "
        "· gap +20.0% · s_mem=0 s_w=1 g=1"
    )
    m = metrics(hand(), 2.5 * MS)
    assert (m.period, m.throughput, m.bubble, m.gap) == pytest.approx((3 * MS, 2e5, 6.5 / 18, 0.2))
    # no bound, no gap; a bound in the trace's metadata is used
    assert "gap" not in gantt_figure(hand()).layout.annotations[0].text
    assert "gap +20.0%" in gantt_figure(hand(bound=2.5 * MS)).layout.annotations[0].text


def test_stacked_traces_share_one_time_axis():
    traces = [hand("a"), hand("a", source="measured", shift=0.5), hand("b")]
    fig = gantt_figure(traces, bounds=[2.5 * MS, None, 3 * MS])
    titles = [a.text for a in fig.layout.annotations]
    assert [t.split(" · ")[0] for t in titles] == [
        "<b>a</b> (simulated)",
        "<b>a</b> (measured)",
        "<b>b</b> (simulated)",
    ]
    assert "gap" in titles[0] and "gap" not in titles[1] and "gap +0.0%" in titles[2]
    # zooming one block zooms all: the three x axes are one
    assert {fig.layout[a].matches or a.replace("axis", "") for a in ("xaxis", "xaxis2")} == {"x3"}
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3"}
    # each block: its own rows, the same bars (the measured one half a ms later)
    by_axis = {}
    for t in fig.data:
        if t.name == "FWD" and t.mode == "lines":
            by_axis[t.xaxis] = sorted(round(x, 9) for x in t.x if x == x)
    assert by_axis["x"] == by_axis["x3"]
    assert by_axis["x2"] == [x + 0.5 for x in by_axis["x"]]
    with pytest.raises(ValueError, match="2 bounds for 3 traces"):
        gantt_figure(traces, bounds=[1, 2])


def test_one_colour_per_op_same_everywhere_one_legend_entry():
    assert set(OP_COLOURS) == set(ALL_OPS)  # both workloads' ops
    assert len(set(OP_COLOURS.values())) == len(ALL_OPS)
    fig = gantt_figure([hand("a"), hand("b")])
    for t in fig.data:
        if t.name in OPS:
            drawn_colour = t.line.color if t.mode == "lines" else t.marker.color
            assert drawn_colour == OP_COLOURS[t.name]
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert sorted(shown) == sorted({"GPU bubble", *(op for _, _, op, *_ in HAND_ROWS)})


def test_plotly_trace_count_does_not_grow_with_the_run():
    def ring(n):
        rows = []
        for b in range(n):
            for j, op in enumerate(("MEM_ROOT", "FWD", "BWD")):
                rows.append(TraceRow(b % 4, "gpu", op, b, b + j * 0.3, b + j * 0.3 + 0.2))
        return Trace(rows, {"n_ranks": 4})

    assert len(gantt_figure(ring(8)).data) == len(gantt_figure(ring(400)).data) == 8


def test_html_is_one_self_contained_file(tmp_path):
    out = write_gantt([hand("a"), hand("b")], tmp_path / "g.html", title="My title")
    html = out.read_text()
    js = plotly.offline.get_plotlyjs()
    assert js[:2000] in html and js[-2000:] in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "My title" in html
    assert [p.name for p in tmp_path.iterdir()] == ["g.html"]  # no temporary left


def test_chrome_trace_events_and_metadata(tmp_path):
    traces = [hand("a"), hand("b", source="measured")]
    path = write_chrome_trace(traces, tmp_path / "c.json")
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == 2 * len(HAND_ROWS)
    meta = {(e["name"], e["pid"], e.get("tid")): e["args"] for e in events if e["ph"] == "M"}
    names = {pid: a["name"] for (n, pid, _), a in meta.items() if n == "process_name"}
    assert names == {
        1: "a (simulated): rank 0",
        2: "a (simulated): rank 1",
        3: "b (measured): rank 0",
        4: "b (measured): rank 1",
    }
    threads = {(pid, a["name"]) for (n, pid, _), a in meta.items() if n == "thread_name"}
    assert threads == {
        (pid + off, lane)
        for off in (0, 2)
        for pid, lane in [(1, "gpu"), (1, "cpu"), (2, "gpu"), (2, "h2d"), (2, "net")]
    }
    bwd2 = [e for e in xs if e["name"] == "BWD2"]
    assert bwd2[0] == {
        "name": "BWD2",
        "cat": "BWD",
        "ph": "X",
        "ts": 7500.0,
        "dur": 1500.0,
        "pid": 1,
        "tid": bwd2[0]["tid"],
        "args": {"op": "BWD", "batch": 2},
    }
    assert meta[("thread_name", 1, bwd2[0]["tid"])] == {"name": "gpu"}
    assert bwd2[1]["pid"] == 3
    for e, (k, lane, op, b, s, end) in zip(xs, HAND_ROWS + HAND_ROWS, strict=True):
        assert e["name"] == f"{op}{b}" and e["args"] == {"op": op, "batch": b}
        assert (e["ts"], e["dur"]) == pytest.approx((s * 1e3, (end - s) * 1e3))
        assert meta[("thread_name", e["pid"], e["tid"])] == {"name": lane}
        assert names[e["pid"]].endswith(f"rank {k}")
    assert chrome_trace(hand())["traceEvents"][0]["ph"] == "M"


# ---- the command line ----------------------------------------------------------------------


def tgpipe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_draws_saved_traces(tmp_path):
    hand("pipetgl").save(tmp_path / "a.json")
    hand("pipetgl", source="measured").save(tmp_path / "b.json")
    r = tgpipe(
        "gantt",
        "a.json",
        "b.json",
        "-o",
        "g.html",
        "--chrome",
        "c.json",
        "--title",
        "Ring",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "pipetgl (measured)" in r.stdout and "period 3.000 ms/batch" in r.stdout
    html = (tmp_path / "g.html").read_text()
    texts = [json.loads(f'"{t}"') for t in re.findall(r'"text":"((?:[^"\\]|\\.)*)"', html)]
    assert "Ring" in texts
    assert any(t.startswith("<b>pipetgl</b> (measured) · period 3.000 ms/batch") for t in texts)
    events = json.loads((tmp_path / "c.json").read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 2 * len(HAND_ROWS)


def test_cli_help():
    r = tgpipe("gantt", "--help")
    assert r.returncode == 0 and "usage: tgpipe gantt" in r.stdout and "--chrome" in r.stdout


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "cannot read trace"),
        ("{", "is not valid JSON"),
        ('{"rows": [[0, "gpu", "FOO", 0, 0, 1]]}', "row 0"),
        ('{"rows": []}', "has no rows"),
    ],
)
def test_cli_bad_trace_one_line_exit_2(tmp_path, content, message):
    if content is not None:
        (tmp_path / "t.json").write_text(content)
    r = tgpipe("gantt", "t.json", "-o", "g.html", "--chrome", "c.json", cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "g.html").exists() and not (tmp_path / "c.json").exists()


def test_cli_unwritable_output_leaves_nothing(tmp_path):
    hand().save(tmp_path / "a.json")
    r = tgpipe("gantt", "a.json", "-o", "g.html", "--chrome", "no/dir/c.json", cwd=tmp_path)
    assert r.returncode == 2 and "cannot write" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_cli_needs_an_output():
    r = tgpipe("gantt", "a.json")
    assert r.returncode == 2 and "-o/--out" in r.stderr


def test_names_are_escaped_in_titles_not_in_chrome():
    t = hand("a<b")
    assert gantt_figure(t).layout.annotations[0].text.startswith("<b>a&lt;b</b> (simulated)")
    assert chrome_trace(t)["traceEvents"][0]["args"]["name"] == "a<b (simulated): rank 0"
