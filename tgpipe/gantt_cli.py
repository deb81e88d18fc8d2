"""Subcommand `tgpipe gantt`: draw saved traces as one Gantt chart (and a Chrome trace)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tgpipe.cli import output_file
from tgpipe.errors import InputError
from tgpipe.files import atomic_write_all
from tgpipe.metrics import metrics
from tgpipe.trace import Trace

__all__ = ["register"]


def _load(path: str) -> Trace:
    trace = Trace.load(path)
    if not trace.rows:
        raise InputError(f"trace {path} has no rows: nothing to draw")
    if "schedule" not in trace.meta:
        # a trace without a name is called after its file, so that stacked blocks differ
        trace = Trace(trace.rows, {**trace.meta, "schedule": Path(path).stem})
    return trace


def _summary(trace: Trace) -> str:
    m = metrics(trace)
    source = f" ({trace.meta['source']})" if trace.meta.get("source") else ""
    rate = f"{m.throughput:,.0f}" if math.isfinite(m.throughput) else "inf"
    return (
        f"{trace.name + source:<32} {len(trace.rows):>8,} actions  "
        f"period {m.period * 1e3:.3f} ms/batch  {rate} events/s  GPU bubble {m.bubble:.1%}"
    )


def _gantt(args: argparse.Namespace) -> None:
    traces = [_load(path) for path in args.traces]
    from tgpipe.gantt import chrome_trace, gantt_figure, gantt_html  # plotly: when drawing

    outputs = [(args.out, gantt_html(gantt_figure(traces, title=args.title)))]
    if args.chrome:
        outputs.append((args.chrome, json.dumps(chrome_trace(traces)) + "\n"))
    written = atomic_write_all(outputs)
    for trace in traces:
        print(_summary(trace))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gantt",
        help="draw saved traces as one Gantt chart (HTML), optionally a Chrome trace",
        description="Draw one or more saved traces (from 'tgpipe simulate --trace' or a real "
        "run) stacked on one time axis: a row per rank and lane, bars coloured by op, the "
        "idle gaps of each GPU drawn as red bubbles, each block titled with its period, "
        "throughput and GPU bubble ratio. The HTML file opens offline. --chrome also writes "
        "the traces for chrome://tracing or ui.perfetto.dev.",
    )
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace JSON file(s)")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        type=output_file,
        metavar="FILE",
        help="the chart to write (HTML)",
    )
    p.add_argument(
        "--chrome",
        type=output_file,
        metavar="FILE",
        help="also write a Chrome/Perfetto trace (JSON)",
    )
    p.add_argument("--title", help="chart title (default: the traces' names)")
    p.set_defaults(func=_gantt)
