"""Traces: what ran where and when, from the simulator or from a real run.

A `Trace` is a list of rows (rank, lane, op, batch, start, end) in seconds from the start of
the run, plus a little metadata (which schedule, which semantics, simulated or measured). Both
the simulator and the executor write this one type, so both draw in one chart and are measured
by the same metrics (`tgpipe.metrics`).

Examples
--------
>>> t = Trace([TraceRow(0, "gpu", "FWD", 0, 0.0, 0.004)], {"schedule": "sequential"})
>>> t.rows[0].duration
0.004
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tgpipe.dag.ops import ALL_OPS, LANES
from tgpipe.errors import InputError
from tgpipe.files import atomic_write

__all__ = ["Trace", "TraceRow"]


class TraceRow(NamedTuple):
    """One action that ran: its place, its op and batch, its start and end in seconds."""

    rank: int
    lane: str
    op: str
    batch: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Trace:
    """Rows plus metadata. Conventional metadata keys: ``schedule`` (name), ``semantics``
    ([s_mem, s_w, g]), ``source`` (``simulated`` or ``measured``), ``n_ranks``,
    ``batch_size`` (events per batch), ``profile`` (name), ``unit`` (batches per repeat of
    the schedule's pattern)."""

    rows: list[TraceRow]
    meta: dict = field(default_factory=dict)

    @property
    def n_ranks(self) -> int:
        return self.meta.get("n_ranks") or (1 + max((r.rank for r in self.rows), default=0))

    @property
    def unit(self) -> int:
        """Batches after which the schedule's pattern repeats: meta ``unit``, else
        lcm(g, n_ranks) from the semantics."""
        if self.meta.get("unit"):
            return int(self.meta["unit"])
        semantics = self.meta.get("semantics") or (0, 0, 1)
        return math.lcm(int(semantics[2]), self.n_ranks)

    @property
    def name(self) -> str:
        return self.meta.get("schedule", "trace")

    def to_dict(self) -> dict:
        return {"meta": self.meta, "rows": [list(r) for r in self.rows]}

    def dumps(self) -> str:
        """The JSON text that `save` writes and `load` reads."""
        return json.dumps(self.to_dict()) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, self.dumps())

    @staticmethod
    def from_dict(data: object, where: str = "trace") -> Trace:
        """Check every row and the metadata that metrics and charts read; a problem raises
        InputError with one line."""
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise InputError(
                f"{where}: not a tgpipe trace (expected an object with 'rows'); {_GIVE}"
            )
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise InputError(f"{where}: field 'meta' must be an object; {_GIVE}")
        _check_meta(meta, where)
        n_ranks = meta.get("n_ranks")
        rows = []
        for k, row in enumerate(data["rows"]):
            try:
                rank, lane, op, batch, start, end = row
                ok = (
                    lane in LANES
                    and op in ALL_OPS
                    and all(_is_int(x, 0) for x in (rank, batch))
                    and all(_is_number(x) for x in (start, end))
                    and end >= start
                )
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(
                    f"{where}: row {k} is not [rank, lane, op, batch, start, end] with a "
                    f"known lane and op, finite times and end >= start: {row!r}; {_GIVE}"
                )
            if n_ranks is not None and rank >= n_ranks:
                raise InputError(
                    f"{where}: row {k} is on rank {rank}, but meta 'n_ranks' is {n_ranks}; "
                    "fix 'n_ranks' or the row"
                )
            rows.append(TraceRow(rank, lane, op, batch, float(start), float(end)))
        return Trace(rows, meta)

    @staticmethod
    def load(path: str | os.PathLike) -> Trace:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"cannot read trace {path}: {exc.strerror}; check the path") from None
        except UnicodeDecodeError:
            raise InputError(f"trace {path} is not a text file; {_GIVE}") from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"trace {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}); {_GIVE}"
            ) from None
        return Trace.from_dict(data, str(path))


#: What to do about a file that is not a trace.
_GIVE = "give a trace saved by 'tgpipe simulate --trace' or by a run"


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_meta(meta: dict, where: str) -> None:
    """The metadata fields that are read, each of its type (the others are free)."""
    bound = meta.get("bound")
    if bound is not None and not (_is_number(bound) and bound > 0):
        raise InputError(f"{where}: meta 'bound' must be a number > 0, got {bound!r}")
    for key in ("n_ranks", "unit", "batch_size"):
        value = meta.get(key)
        if value is not None and not _is_int(value, 1):
            raise InputError(f"{where}: meta {key!r} must be an integer >= 1, got {value!r}")
    semantics = meta.get("semantics")
    if semantics is not None and not (
        isinstance(semantics, list)
        and len(semantics) == 3
        and all(_is_int(x, low) for x, low in zip(semantics, (0, 0, 1), strict=True))
    ):
        raise InputError(
            f"{where}: meta 'semantics' must be [s_mem, s_w, g] (integers, g >= 1), "
            f"got {semantics!r}"
        )
