"""How heavy a Gantt chart of a long run is: WebGL segments against naive SVG bars.

    python bench/bench_gantt.py [--batches 1000] [--ranks 8] [--stack 3]

Builds synthetic traces (a ring pipeline: batch b on rank b mod W, ~10 ops a batch on the five
lanes, random costs), stacks several on one time axis, and draws them two ways:

- **webgl** (`tgpipe.gantt`): one Scattergl trace per (op, lane) per block, bars as thick line
  segments; the browser holds one canvas, whatever the number of bars;
- **naive**: one SVG ``go.Bar`` trace per op per block; the browser makes one DOM path per bar.

It prints the figure build time, the HTML write time, the file size, the number of plotly
traces and the number of DOM nodes the bars need, with the ratios naive / webgl. The load in
a real browser is measured elsewhere; the DOM count is what decides it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tgpipe.dag.ops import OPS
from tgpipe.gantt import OP_COLOURS, gantt_figure, gantt_html
from tgpipe.metrics import metrics
from tgpipe.trace import Trace, TraceRow

# op, lane, mean cost (ms): one batch of a ring pipeline
BATCH = [
    ("SAMPLE", "cpu", 2.0),
    ("FEAT", "h2d", 0.6),
    ("MEM_FETCH", "h2d", 0.4),
    ("MEM_ROOT", "gpu", 0.5),
    ("MEM_WRITE", "d2h", 0.4),
    ("MEM_SUPPORT", "gpu", 0.8),
    ("FWD", "gpu", 1.5),
    ("BWD", "gpu", 2.5),
    ("GRAD_SYNC", "net", 0.3),
    ("STEP", "gpu", 0.3),
]


def synthetic(n_batches: int, n_ranks: int, seed: int = 0, name: str = "synthetic") -> Trace:
    """A plausible pipeline trace: lanes run one action at a time, ops of a batch in order,
    MEM_FETCH of batch b after MEM_WRITE of batch b-1 (the memory chain)."""
    rng = random.Random(seed)
    free: dict[tuple[int, str], float] = {}
    rows, last_write = [], 0.0
    for b in range(n_batches):
        rank, ready = b % n_ranks, 0.0
        for op, lane, cost in BATCH:
            start = max(ready, free.get((rank, lane), 0.0))
            if op == "MEM_FETCH":
                start = max(start, last_write)
            end = start + cost * 1e-3 * rng.uniform(0.8, 1.2)
            rows.append(TraceRow(rank, lane, op, b, start, end))
            free[(rank, lane)] = end
            ready = end if op != "MEM_WRITE" else ready
            if op == "MEM_WRITE":
                last_write = end
    meta = {"schedule": name, "source": "simulated", "n_ranks": n_ranks, "batch_size": 600}
    return Trace(rows, meta)


def naive_figure(traces: list[Trace]) -> go.Figure:
    """The obvious chart: horizontal SVG bars, one plotly trace per op per block."""
    fig = make_subplots(rows=len(traces), cols=1, shared_xaxes=True)
    for k, t in enumerate(traces, start=1):
        m = metrics(t)
        fig.layout.annotations += (
            {"text": f"{t.name} period {m.period * 1e3:.3f} ms", "showarrow": False},
        )
        for op in OPS:
            rows = [r for r in t.rows if r.op == op]
            if not rows:
                continue
            fig.add_trace(
                go.Bar(
                    orientation="h",
                    name=op,
                    marker_color=OP_COLOURS[op],
                    base=[r.start * 1e3 for r in rows],
                    x=[r.duration * 1e3 for r in rows],
                    y=[f"r{r.rank} {r.lane}" for r in rows],
                    hovertext=[
                        f"{op}{r.batch} rank {r.rank} {r.lane} start {r.start * 1e3:.3f} ms "
                        f"duration {r.duration * 1e3:.3f} ms"
                        for r in rows
                    ],
                ),
                row=k,
                col=1,
            )
    return fig


def measure(build, traces: list[Trace], folder: Path, name: str) -> dict:
    start = time.perf_counter()
    fig = build(traces)
    built = time.perf_counter() - start
    start = time.perf_counter()
    path = folder / f"{name}.html"
    path.write_text(gantt_html(fig))
    written = time.perf_counter() - start
    n_traces = len(fig.data)
    # the browser makes an SVG path per bar of an SVG trace; WebGL traces draw on one canvas
    svg = sum(len(t.x) for t in fig.data if t.type != "scattergl") + len(fig.layout.shapes)
    return {
        "build_s": built,
        "write_s": written,
        "mb": path.stat().st_size / 2**20,
        "traces": n_traces,
        "svg": svg,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--stack", type=int, default=3, help="traces stacked in one chart")
    args = parser.parse_args()
    traces = [
        synthetic(args.batches, args.ranks, seed=k, name=f"synthetic-{k}")
        for k in range(args.stack)
    ]
    bars = sum(len(t.rows) for t in traces)
    print(
        f"{args.stack} trace(s) x {args.batches:,} batches x {args.ranks} ranks: "
        f"{bars:,} bars in one chart"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "webgl": measure(gantt_figure, traces, Path(tmp), "webgl"),
            "naive": measure(naive_figure, traces, Path(tmp), "naive"),
        }
    print(
        f"{'approach':<14} {'build':>8} {'write HTML':>11} {'size':>9} "
        f"{'plotly traces':>14} {'SVG nodes':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<14} {r['build_s']:>7.2f}s {r['write_s']:>10.2f}s {r['mb']:>7.1f}MB "
            f"{r['traces']:>14,} {r['svg']:>10,}"
        )
    w, n = results["webgl"], results["naive"]
    print(
        f"{'naive/webgl':<14} {n['build_s'] / w['build_s']:>7.2f}x "
        f"{n['write_s'] / w['write_s']:>10.2f}x {n['mb'] / w['mb']:>7.2f}x  "
        f"{n['traces'] / w['traces']:>13.2f}x {n['svg'] / max(w['svg'], 1):>9.0f}x"
    )
    print(
        "webgl also draws the GPU bubbles, the rank bands and the steady-state window (its SVG "
        "nodes are those shapes); naive draws bars only"
    )


if __name__ == "__main__":
    main()
