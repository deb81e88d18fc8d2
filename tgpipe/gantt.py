"""Gantt charts of traces, and their export to Chrome/Perfetto trace JSON.

The chart is what a user looks at to see where GPU time goes: one row per rank and lane, a bar
per action coloured by its op, and the idle gaps of every rank's ``gpu`` lane drawn as light
red *bubbles*. Several traces (schedules, or one schedule simulated and measured) stack on one
shared time axis, each block titled with its metrics from `tgpipe.metrics`, so that they
compare at a glance. The HTML file holds plotly.js itself and opens offline.

Why WebGL: a 1,000-batch run on 8 ranks has ~10,000 actions per trace. Drawn as SVG bars (one
DOM node each) several such traces make the browser crawl. Here each (op, lane) of a trace is
one ``Scattergl`` trace whose bars are thick line segments ``start, end, NaN`` (the NaN breaks
the line), plus an invisible marker at the middle of each bar that carries its hover from
binary ``customdata`` (compact: no per-bar strings in the file). A block holds about twenty
plotly traces however long the run is (``bench/bench_gantt.py`` measures both ways).

The Chrome export (`chrome_trace`) opens in chrome://tracing and https://ui.perfetto.dev:
one process per (trace, rank), one thread per lane, a complete event per action.

Examples
--------
>>> from tgpipe.trace import Trace, TraceRow
>>> t = Trace([TraceRow(0, "gpu", "FWD", 0, 0.0, 1.0), TraceRow(0, "gpu", "BWD", 0, 1.5, 2.0)])
>>> gpu_gaps(t, 0)
[(1.0, 1.5)]
>>> [e["name"] for e in chrome_trace([t])["traceEvents"] if e["ph"] == "X"]
['FWD0', 'BWD0']
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tgpipe.dag.ops import ALL_OPS, LANES
from tgpipe.files import atomic_write
from tgpipe.metrics import Metrics, gpu_idle, gpu_spans, metrics
from tgpipe.trace import Trace, TraceRow

__all__ = [
    "BUBBLE_COLOUR",
    "OP_COLOURS",
    "block_title",
    "chrome_trace",
    "gantt_figure",
    "gantt_html",
    "gpu_gaps",
    "write_chrome_trace",
    "write_gantt",
]

#: One colour per op, the same in every chart. Grouped by what the op uses: CPU work
#: olive/brown, copies blue/cyan/orange, GPU compute purple/green, network grey. No red: red
#: is for bubbles.
OP_COLOURS: dict[str, str] = {
    "SAMPLE": "#bcbd22",
    "FEAT": "#17becf",
    "MEM_FETCH": "#1f77b4",
    "MEM_ROOT": "#9467bd",
    "MEM_WRITE": "#ff7f0e",
    "MEM_SUPPORT": "#c5b0d5",
    "FWD": "#2ca02c",
    "BWD": "#98df8a",
    "GRAD_SYNC": "#7f7f7f",
    "STEP": "#8c564b",
    # the snapshot workload's own ops
    "LOAD": "#aec7e8",
    "AGG": "#ffbb78",
    "DENSE": "#e377c2",
    "RNN": "#c49c94",
}
_UNKNOWN_COLOUR = "#000000"

#: Idle time of a gpu lane.
BUBBLE_COLOUR = "rgba(214, 39, 40, 0.4)"
_BUBBLE_LABEL = "#f3b0b0"
_WINDOW_COLOUR = "rgba(31, 119, 180, 0.07)"
_RANK_BAND = "rgba(0, 0, 0, 0.045)"

ROW_PX = 18  #: height of one (rank, lane) row
BAR_PX = 12  #: thickness of a bar (a WebGL line width, in pixels)
_TITLE_PX = 46  #: space above each block for its title
_TOP_PX, _BOTTOM_PX = 120, 50
_EPS = 1e-9  #: gaps shorter than this (seconds) are float noise, not bubbles


def gpu_gaps(
    trace: Trace, rank: int, start: float | None = None, end: float | None = None
) -> list[tuple[float, float]]:
    """Idle intervals (seconds) of the rank's GPU (its ``gpu`` and ``gpu2`` lanes) inside
    [start, end].

    By default [start, end] is the whole run (first start to last end over all ranks), so
    that a rank that waits for its first batch shows that wait as a bubble. Overlapping actions
    are merged, as `tgpipe.metrics.gpu_busy` does: the gaps and the busy time add up to the
    window.
    """
    if start is None:
        start = min((r.start for r in trace.rows), default=0.0)
    if end is None:
        end = max((r.end for r in trace.rows), default=0.0)
    spans = gpu_spans(trace, rank)
    gaps, cursor = [], start
    for s, e in spans:
        if s >= end:
            break
        if s - cursor > _EPS:
            gaps.append((cursor, s))
        cursor = max(cursor, e)
    if end - cursor > _EPS:
        gaps.append((cursor, end))
    return gaps


def _label(trace: Trace, bold: bool = False) -> str:
    """``name (source)``, escaped: plotly reads titles as HTML."""
    name = html.escape(str(trace.name))
    name = f"<b>{name}</b>" if bold else name
    source = trace.meta.get("source")
    return f"{name} ({html.escape(str(source))})" if source else name


def _semantics_text(value: object) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 3:
        s_mem, s_w, g = value
        return f"s_mem={s_mem} s_w={s_w} g={g}"
    return str(value)


def block_title(trace: Trace, m: Metrics | None) -> str:
    """The title of a trace's block: its name, source and metrics (None: an empty trace)."""
    parts = [_label(trace, bold=True)]
    if m is None:
        return parts[0] + " · no actions"
    if trace.meta.get("workload") == "snapshot":  # one epoch: no steady state, no events
        parts += [f"epoch {m.makespan * 1e3:.3f} ms", f"GPU idle {gpu_idle(trace) * 100:.1f}%"]
        if trace.meta.get("bound_epoch"):
            parts.append(f"gap {(m.makespan / trace.meta['bound_epoch'] - 1) * 100:+.1f}%")
        return " · ".join(parts)
    parts.append(f"period {m.period * 1e3:.3f} ms/batch")
    parts.append(f"{m.throughput:,.0f} events/s" if math.isfinite(m.throughput) else "throughput ∞")
    parts.append(f"GPU bubble {m.bubble * 100:.1f}%")
    if m.gap is not None:
        parts.append(f"gap {m.gap * 100:+.1f}%")
    if "semantics" in trace.meta:
        parts.append(_semantics_text(trace.meta["semantics"]))
    return " · ".join(parts)


def _rows_of(trace: Trace) -> list[tuple[int, str]]:
    """(rank, lane) rows to draw, grouped by rank: every rank's gpu lane, other lanes if used."""
    used = {(r.rank, r.lane) for r in trace.rows}
    ranks = range(max(trace.n_ranks, 1 + max((r for r, _ in used), default=-1)))
    lanes = (*LANES, *sorted({lane for _, lane in used} - set(LANES)))
    return [(k, lane) for k in ranks for lane in lanes if lane == "gpu" or (k, lane) in used]


def _add_bars(
    fig: go.Figure,
    k: int,
    name: str,
    colour: str,
    label_colour: str,
    starts: np.ndarray,
    ends: np.ndarray,
    ys: np.ndarray,
    customdata: np.ndarray,
    hovertemplate: str,
    showlegend: bool,
) -> None:
    """Bars [starts, ends] (seconds) on rows `ys` of block k: a WebGL trace that draws them as
    line segments start, end, NaN (the NaN breaks the line) and an invisible marker trace, one
    point per bar at its middle, that carries the hover (`customdata` by `hovertemplate`)."""
    n = len(starts)
    starts, ends = np.asarray(starts, float) * 1e3, np.asarray(ends, float) * 1e3
    x = np.empty(3 * n)
    x[0::3], x[1::3], x[2::3] = starts, ends, np.nan
    ys = np.asarray(ys).astype(np.int16)
    common = {"name": name, "legendgroup": name}
    fig.add_trace(
        go.Scattergl(
            **common,
            showlegend=showlegend,
            mode="lines",
            x=x,
            y=np.repeat(ys, 3),
            line={"color": colour, "width": BAR_PX},
            hoverinfo="skip",
        ),
        row=k,
        col=1,
    )
    fig.add_trace(
        go.Scattergl(
            **common,
            showlegend=False,
            mode="markers",
            x=(starts + ends) / 2,
            y=ys,
            marker={"color": colour, "opacity": 0, "size": BAR_PX},
            customdata=customdata,
            hovertemplate=hovertemplate,
            hoverlabel={"bgcolor": label_colour},
        ),
        row=k,
        col=1,
    )


#: Hover of a bar, from customdata [batch, rank, start ms, duration ms]; op and lane are known
#: per plotly trace.
_BAR_HOVER = (
    "<b>{op}%{{customdata[0]:d}}</b> · rank %{{customdata[1]:d}} · {lane}"
    "<br>start %{{customdata[2]:.3f}} ms<br>duration %{{customdata[3]:.3f}} ms<extra></extra>"
)
#: Hover of a bubble, from customdata [rank, start ms, idle ms].
_BUBBLE_HOVER = (
    "<b>GPU bubble</b> · rank %{customdata[0]:d}"
    "<br>start %{customdata[1]:.3f} ms<br>idle %{customdata[2]:.3f} ms<extra></extra>"
)


def _bounds_list(bounds, n: int) -> list[float | None]:
    if bounds is None or isinstance(bounds, (int, float)):
        return [bounds] * n
    bounds = list(bounds)
    if len(bounds) != n:
        raise ValueError(f"got {len(bounds)} bounds for {n} traces")
    return bounds


def gantt_figure(
    traces: Trace | Sequence[Trace],
    bounds: float | Sequence[float | None] | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """A plotly Figure of the traces stacked on one shared time axis (milliseconds).

    `bounds` is the lower bound in seconds per batch, one for all traces or one per trace
    (None where unknown); without it a trace's ``meta["bound"]`` is used if there is one, and
    the title then shows the gap to it.
    """
    traces = [traces] if isinstance(traces, Trace) else list(traces)
    if not traces:
        raise ValueError("no trace to draw")
    bound_of = _bounds_list(bounds, len(traces))
    layouts = [_rows_of(t) or [(0, "gpu")] for t in traces]
    titles, stats = [], []
    for t, b in zip(traces, bound_of, strict=True):
        m = metrics(t, b) if t.rows else None
        stats.append(m)
        titles.append(block_title(t, m))

    n_rows = [len(rows) for rows in layouts]
    plot_px = sum(n_rows) * ROW_PX + (len(traces) - 1) * _TITLE_PX
    fig = make_subplots(
        rows=len(traces),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=_TITLE_PX / plot_px if len(traces) > 1 else 0.0,
        row_heights=[n / sum(n_rows) for n in n_rows],
        subplot_titles=titles,
    )
    shown: set[str] = set()
    for k, (t, rows, m) in enumerate(zip(traces, layouts, stats, strict=True), start=1):
        _draw_block(fig, k, t, rows, m, shown)

    fig.update_xaxes(showgrid=True, gridcolor="rgba(0,0,0,0.08)", zeroline=False)
    fig.update_xaxes(title_text="time (ms)", row=len(traces), col=1)
    height = plot_px + _TOP_PX + _BOTTOM_PX
    fig.update_layout(
        title={
            "text": title or "tgpipe Gantt: " + ", ".join(_label(t) for t in traces),
            "y": 1 - 10 / height,
            "yanchor": "top",
        },
        height=height,
        margin={"t": _TOP_PX, "b": _BOTTOM_PX, "l": 90, "r": 20},
        hovermode="closest",
        dragmode="zoom",
        plot_bgcolor="white",
        legend={
            "orientation": "h",
            "x": 0,
            "y": 1 - 50 / height,
            "yanchor": "top",
            "yref": "container",
        },
    )
    fig.update_annotations(font_size=12)
    return fig


def _draw_block(fig, k: int, t: Trace, rows, m: Metrics | None, shown: set[str]) -> None:
    """Bars, bubbles, rank bands and the steady-state window of one trace in subplot row k."""
    index = {row: i for i, row in enumerate(rows)}
    n = len(rows)
    fig.update_yaxes(
        row=k,
        col=1,
        range=[n - 0.5, -0.5],
        fixedrange=True,
        tickmode="array",
        tickvals=list(range(n)),
        ticktext=[f"r{rank} {lane}" for rank, lane in rows],
        tickfont_size=10,
        showgrid=False,
        zeroline=False,
    )
    for rank in sorted({rank for rank, _ in rows})[1::2]:
        ys = [i for (r, _), i in index.items() if r == rank]
        fig.add_hrect(
            y0=min(ys) - 0.5,
            y1=max(ys) + 0.5,
            row=k,
            col=1,
            fillcolor=_RANK_BAND,
            line_width=0,
            layer="below",
            exclude_empty_subplots=False,
        )
    if m is not None and m.window[1] > m.window[0] and t.meta.get("workload") != "snapshot":
        fig.add_vrect(
            x0=m.window[0] * 1e3,
            x1=m.window[1] * 1e3,
            row=k,
            col=1,
            fillcolor=_WINDOW_COLOUR,
            line_width=0,
            layer="below",
            exclude_empty_subplots=False,
            name="steady-state window",
            legendgroup="steady-state window",
            showlegend="steady-state window" not in shown,
        )
        shown.add("steady-state window")

    # bubbles first, under everything
    gaps = [
        (rank, y, g0, g1)
        for (rank, lane), y in index.items()
        if lane == "gpu" and t.rows
        for g0, g1 in gpu_gaps(t, rank)
    ]
    if gaps:
        rank_, y_, s_, e_ = (np.array(col) for col in zip(*gaps, strict=True))
        _add_bars(
            fig,
            k,
            "GPU bubble",
            BUBBLE_COLOUR,
            _BUBBLE_LABEL,
            s_,
            e_,
            y_,
            np.column_stack([rank_, s_ * 1e3, (e_ - s_) * 1e3]),
            _BUBBLE_HOVER,
            "GPU bubble" not in shown,
        )
        shown.add("GPU bubble")

    groups: dict[tuple[str, str], list[TraceRow]] = {}
    for r in t.rows:
        groups.setdefault((r.op, r.lane), []).append(r)
    order = {op: i for i, op in enumerate(ALL_OPS)}
    for op, lane in sorted(groups, key=lambda g: (order.get(g[0], len(order)), g[0], g[1])):
        group = groups[(op, lane)]
        # columns: batch, rank, start, end, row
        a = np.array([(r.batch, r.rank, r.start, r.end, index[(r.rank, r.lane)]) for r in group])
        colour = OP_COLOURS.get(op, _UNKNOWN_COLOUR)
        _add_bars(
            fig,
            k,
            op,
            colour,
            colour,
            a[:, 2],
            a[:, 3],
            a[:, 4],
            np.column_stack([a[:, 0], a[:, 1], a[:, 2] * 1e3, (a[:, 3] - a[:, 2]) * 1e3]),
            _BAR_HOVER.format(op=op, lane=lane),
            op not in shown,
        )
        shown.add(op)


def gantt_html(figure: go.Figure) -> str:
    """A whole HTML page with plotly.js inlined: it opens without a network."""
    return figure.to_html(
        include_plotlyjs=True,
        full_html=True,
        config={"scrollZoom": True, "displaylogo": False, "responsive": True},
    )


def write_gantt(
    traces: Trace | Sequence[Trace],
    path: str | os.PathLike,
    bounds: float | Sequence[float | None] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write the Gantt chart of the traces as one self-contained HTML file (atomically)."""
    return atomic_write(path, gantt_html(gantt_figure(traces, bounds, title=title)))


def chrome_trace(traces: Trace | Sequence[Trace]) -> dict:
    """The traces in Chrome's trace event format (times in microseconds).

    Each (trace, rank) is a process named after the trace and the rank, each lane a thread;
    each action a complete (``"X"``) event named like the action (``FWD17``).
    """
    traces = [traces] if isinstance(traces, Trace) else list(traces)
    events: list[dict] = []
    pid = 0
    for t in traces:
        ranks = sorted({r.rank for r in t.rows} | set(range(t.n_ranks if t.rows else 0)))
        pids = {}
        for rank in ranks:
            pid += 1
            pids[rank] = pid
            source = f" ({t.meta['source']})" if t.meta.get("source") else ""
            name = f"{t.name}{source}: rank {rank}"
            events.append(_meta("process_name", pid, None, {"name": name}))
            events.append(_meta("process_sort_index", pid, None, {"sort_index": pid}))
            for lane in sorted({r.lane for r in t.rows if r.rank == rank}, key=_lane_tid):
                tid = _lane_tid(lane)
                events.append(_meta("thread_name", pid, tid, {"name": lane}))
                events.append(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
        for r in t.rows:
            events.append(
                {
                    "name": f"{r.op}{r.batch}",
                    "cat": r.op,
                    "ph": "X",
                    "ts": _us(r.start),
                    "dur": _us(r.duration),
                    "pid": pids[r.rank],
                    "tid": _lane_tid(r.lane),
                    "args": {"op": r.op, "batch": r.batch},
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _meta(name: str, pid: int, tid: int | None, args: dict) -> dict:
    event = {"name": name, "ph": "M", "pid": pid, "args": args}
    if tid is not None:
        event["tid"] = tid
    return event


def _lane_tid(lane: str) -> int:
    return LANES.index(lane) + 1 if lane in LANES else len(LANES) + 1


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def write_chrome_trace(traces: Trace | Sequence[Trace], path: str | os.PathLike) -> Path:
    """Write `chrome_trace` as JSON (atomically), for chrome://tracing or ui.perfetto.dev."""
    return atomic_write(path, json.dumps(chrome_trace(traces)) + "\n")
