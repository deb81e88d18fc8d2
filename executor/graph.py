"""The temporal interaction graph that every loader returns and every trainer reads.

A stream of events (src, dst, t) sorted by time, with dense node ids 0..n_nodes-1, optional
edge features (one row per event) and node features (one row per node), optional labels, and
optionally the id each node had in the file it was loaded from (`node_ids`).
Checked once at construction, so that code downstream never has to.

Examples
--------
>>> import numpy as np
>>> g = TemporalGraph(np.array([0, 1]), np.array([2, 2]), np.array([0.0, 5.0]))
>>> g.n_events, g.n_nodes
(2, 3)
>>> [len(part) for part in g.split()]
[1, 0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tgpipe.errors import InputError

__all__ = ["TemporalGraph"]


@dataclass(frozen=True, eq=False)
class TemporalGraph:
    src: np.ndarray  #: int64 [E]
    dst: np.ndarray  #: int64 [E]
    ts: np.ndarray  #: float64 [E], non-decreasing
    edge_feat: np.ndarray | None = None  #: float32 [E, d_e]
    node_feat: np.ndarray | None = None  #: float32 [N, d_n]
    label: np.ndarray | None = None  #: [E] (JODIE state labels), unused by training
    n_nodes: int = 0  #: 0: one more than the largest id
    name: str = "graph"
    node_ids: np.ndarray | None = None  #: int64 [N]: each node's id in its source file

    def __post_init__(self) -> None:
        src = np.ascontiguousarray(self.src, dtype=np.int64)
        dst = np.ascontiguousarray(self.dst, dtype=np.int64)
        ts = np.ascontiguousarray(self.ts, dtype=np.float64)
        where = self.name
        if not (src.ndim == dst.ndim == ts.ndim == 1 and len(src) == len(dst) == len(ts)):
            raise InputError(f"{where}: src, dst and ts must be 1-d arrays of one length")
        if np.isnan(ts).any():
            raise InputError(
                f"{where}: timestamps contain NaN at event {int(np.isnan(ts).argmax())}"
            )
        if len(ts) and (np.diff(ts) < 0).any():
            k = int((np.diff(ts) < 0).argmax()) + 1
            raise InputError(
                f"{where}: timestamps are not sorted (event {k} is earlier than "
                f"event {k - 1}); sort the events by time first"
            )
        if len(src) and min(src.min(), dst.min()) < 0:
            raise InputError(f"{where}: node ids must be >= 0")
        n_nodes = int(max(src.max(initial=-1), dst.max(initial=-1)) + 1)
        if self.n_nodes and self.n_nodes < n_nodes:
            raise InputError(f"{where}: n_nodes={self.n_nodes} but ids go up to {n_nodes - 1}")
        object.__setattr__(self, "src", src)
        object.__setattr__(self, "dst", dst)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "n_nodes", self.n_nodes or n_nodes)
        for key, rows in (("edge_feat", len(src)), ("node_feat", self.n_nodes)):
            feat = getattr(self, key)
            if feat is None:
                continue
            feat = np.ascontiguousarray(feat, dtype=np.float32)
            if feat.ndim != 2 or len(feat) != rows:
                raise InputError(f"{where}: {key} must have shape [{rows}, d], got {feat.shape}")
            if not np.isfinite(feat).all():
                raise InputError(f"{where}: {key} contains NaN or infinity")
            object.__setattr__(self, key, feat)
        if self.node_ids is not None:
            node_ids = np.ascontiguousarray(self.node_ids, dtype=np.int64)
            if node_ids.shape != (self.n_nodes,):
                raise InputError(f"{where}: node_ids must have shape [{self.n_nodes}]")
            object.__setattr__(self, "node_ids", node_ids)

    @property
    def n_events(self) -> int:
        return len(self.src)

    def __len__(self) -> int:
        return self.n_events

    def slice(self, start: int, stop: int) -> TemporalGraph:
        """Events [start, stop) with the same node id space and node features."""

        def cut(a):
            return None if a is None else a[start:stop]

        return TemporalGraph(
            self.src[start:stop],
            self.dst[start:stop],
            self.ts[start:stop],
            cut(self.edge_feat),
            self.node_feat,
            cut(self.label),
            self.n_nodes,
            self.name,
            self.node_ids,
        )

    def split(self, val: float = 0.15, test: float = 0.15) -> tuple[TemporalGraph, ...]:
        """Chronological train / validation / test split (70/15/15 by default), cut at
        timestamps so that no two parts share a time."""
        if not (0 <= val and 0 <= test and val + test < 1):
            raise InputError("validation and test fractions must be >= 0 and sum to < 1")
        val_t, test_t = np.quantile(self.ts, [1 - val - test, 1 - test]) if len(self) else (0, 0)
        a = int(np.searchsorted(self.ts, val_t, side="right"))
        b = int(np.searchsorted(self.ts, test_t, side="right"))
        return self.slice(0, a), self.slice(a, b), self.slice(b, len(self))
