"""Graph snapshots: a temporal graph cut into fixed periods, for discrete-time dynamic GNNs.

Discrete-time models (T-GCN, EvolveGCN) do not read events one by one as TGN does; they
read a sequence of static graphs. `cut_snapshots` makes that sequence from a
`TemporalGraph`: snapshot t holds the events with ts in [t0 + t*period, t0 + (t+1)*period),
t0 being the first event's time. Inside a snapshot the edges are undirected and de-duplicated
(an edit of page p by user u twice in a day is one edge u-p), stored once each as local
indices (a < b) into the snapshot's `nodes`, the sorted ids of its active vertices. A
self-loop event makes its vertex active but adds no edge (the GCN adds self loops to every
vertex anyway). Periods with no event are dropped, so position k in the sequence is not
always period k: `Snapshot.window` keeps the period.

A snapshot's size is what its ops cost, and real sequences are uneven (quiet weekends, busy
days); `skewed_sequence` makes a synthetic sequence whose sizes follow a lognormal law and
whose vertices have power-law popularity, deterministic for a seed, so that schedules that
balance uneven snapshots can be tested and measured without data.

`split_snapshots` is the chronological train / validation / test split by count.

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> g = TemporalGraph(np.array([0, 1, 0, 2, 2]), np.array([1, 0, 2, 3, 3]),
...                   np.array([0.0, 5.0, 9.0, 30.0, 31.0]))
>>> seq = cut_snapshots(g, period=10.0)
>>> [(s.window, s.n_vertices, s.n_edges) for s in seq]
[(0, 3, 2), (3, 2, 1)]
>>> seq[0].nodes.tolist(), seq[0].edge_index.tolist()
([0, 1, 2], [[0, 0], [1, 2]])
>>> s = skewed_sequence(20, n_nodes=200, mean_edges=50, seed=0)
>>> len(s), s.n_nodes, [len(part) for part in split_snapshots(len(s))]
(20, 200, [14, 3, 3])
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph

__all__ = [
    "Snapshot",
    "SnapshotSequence",
    "check_length",
    "cut_snapshots",
    "load_sequence",
    "skewed_sequence",
    "split_snapshots",
]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One period's static graph."""

    window: int  #: the period it covers: events with ts in [t0 + window*period, ... + period)
    nodes: np.ndarray  #: int64 [V_t] sorted global ids of the active vertices
    edge_index: np.ndarray  #: int64 [2, E_t] local indices into `nodes`, a < b, sorted
    n_events: int  #: events of the period (before de-duplication)

    @property
    def n_vertices(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]


@dataclass(frozen=True, eq=False)
class SnapshotSequence:
    """The snapshots in time order, over one node id space 0..n_nodes-1."""

    snapshots: tuple[Snapshot, ...]
    n_nodes: int
    period: float  #: seconds (or the graph's time unit) per snapshot
    t0: float = 0.0  #: start of window 0
    node_feat: np.ndarray | None = None  #: float32 [n_nodes, d] or None
    name: str = "snapshots"

    def __len__(self) -> int:
        return len(self.snapshots)

    def __getitem__(self, t: int) -> Snapshot:
        return self.snapshots[t]

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self.snapshots)

    @property
    def node_dim(self) -> int:
        return 0 if self.node_feat is None else self.node_feat.shape[1]

    def split(self, val: float = 0.15, test: float = 0.15) -> tuple[range, range, range]:
        """`split_snapshots` of this sequence's length."""
        return split_snapshots(len(self), val, test)


def split_snapshots(n: int, val: float = 0.15, test: float = 0.15) -> tuple[range, range, range]:
    """Chronological train / validation / test ranges of snapshot positions, by count.

    Validation and test get round(fraction * n) snapshots each, at least one when n >= 3
    (and a fraction > 0); training gets the rest, the earliest.
    """
    if not (0 <= val and 0 <= test and val + test < 1):
        raise InputError("validation and test fractions must be >= 0 and sum to < 1")
    n_val = round(val * n)
    n_test = round(test * n)
    if n >= 3:
        n_val = max(n_val, 1 if val > 0 else 0)
        n_test = max(n_test, 1 if test > 0 else 0)
    n_train = max(n - n_val - n_test, 0)
    n_val = min(n_val, n - n_train)
    return range(0, n_train), range(n_train, n_train + n_val), range(n_train + n_val, n)


def cut_snapshots(graph: TemporalGraph, period: float = 86400.0) -> SnapshotSequence:
    """The graph's events cut into periods of `period` time units (a day of seconds by
    default), one undirected, de-duplicated snapshot per non-empty period."""
    if isinstance(period, bool) or not isinstance(period, numbers.Real):
        raise InputError(f"snapshot period must be a number > 0, got {period!r}")
    if not (math.isfinite(period) and period > 0):
        raise InputError(
            f"snapshot period must be a finite number > 0 (time units per snapshot, e.g. "
            f"86400 for a day of seconds), got {period!r}"
        )
    if graph.n_events == 0:
        raise InputError(f"{graph.name} has no events; snapshots need at least one event")
    t0 = float(graph.ts[0])
    if (float(graph.ts[-1]) - t0) / period > 1e9:
        raise InputError(
            f"snapshot period {period:g} cuts {graph.name}'s time span into more than 1e9 "
            "snapshots; use a longer --period (time units per snapshot)"
        )
    window = np.floor((graph.ts - t0) / period).astype(np.int64)
    lo = np.minimum(graph.src, graph.dst)
    hi = np.maximum(graph.src, graph.dst)
    snapshots = []
    bounds = np.flatnonzero(np.diff(window)) + 1  # ts sorted, so windows are too
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(window)], strict=True):
        snapshots.append(_snapshot(int(window[start]), lo[start:stop], hi[start:stop]))
    return SnapshotSequence(
        tuple(snapshots), graph.n_nodes, float(period), t0, graph.node_feat, graph.name
    )


def _snapshot(window: int, lo: np.ndarray, hi: np.ndarray) -> Snapshot:
    """The snapshot of one period's events, given as (min end, max end) pairs."""
    nodes = np.union1d(lo, hi)
    keep = lo != hi  # self loops: the vertex is active, the edge is the GCN's own
    pairs = np.unique(np.stack([lo[keep], hi[keep]]), axis=1)
    edge_index = np.searchsorted(nodes, pairs).reshape(2, -1).astype(np.int64)
    return Snapshot(window, nodes.astype(np.int64), edge_index, len(lo))


def skewed_sequence(
    n_snapshots: int = 32,
    *,
    n_nodes: int = 2000,
    mean_edges: float = 500.0,
    sigma: float = 1.0,
    alpha: float = 1.0,
    node_dim: int = 0,
    seed: int = 0,
) -> SnapshotSequence:
    """A synthetic sequence with uneven snapshot sizes, the same for the same arguments.

    The number of edge draws of each snapshot is lognormal with mean `mean_edges` and shape
    `sigma` (0: all equal); their ends are drawn with popularity proportional to
    rank^-`alpha` (0: uniform), so that a few vertices are in most snapshots. Repeated
    pairs are merged as in `cut_snapshots`, so a snapshot has at most that many edges.
    With `node_dim`, the vertices get random features (else the model learns embeddings).
    """
    for name, value, low in (("n_snapshots", n_snapshots, 1), ("n_nodes", n_nodes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (mean_edges >= 1 and sigma >= 0 and alpha >= 0 and node_dim >= 0):
        raise InputError("mean_edges must be >= 1; sigma, alpha and node_dim must be >= 0")
    rng = np.random.default_rng(seed)
    mu = math.log(mean_edges) - sigma**2 / 2  # so that the mean is mean_edges
    sizes = np.maximum(1, np.rint(rng.lognormal(mu, sigma, n_snapshots))).astype(np.int64)
    weight = 1.0 / np.arange(1, n_nodes + 1) ** alpha
    popular = rng.permutation(n_nodes)  # which id gets which popularity
    draws = int(sizes.sum())
    src = popular[rng.choice(n_nodes, draws, p=weight / weight.sum())]
    dst = popular[rng.choice(n_nodes, draws, p=weight / weight.sum())]
    dst = np.where(src == dst, (dst + 1) % n_nodes, dst)
    ts = np.repeat(np.arange(n_snapshots, dtype=np.float64), sizes)
    feat = rng.normal(size=(n_nodes, node_dim)).astype(np.float32) if node_dim else None
    name = f"skewed-{n_snapshots}x{mean_edges:g}"
    graph = TemporalGraph(src, dst, ts, node_feat=feat, n_nodes=n_nodes, name=name)
    return cut_snapshots(graph, period=1.0)


#: Fewest snapshots a sequence trains on: two to train, one to validate, one to test.
MIN_SNAPSHOTS = 4


def check_length(seq: SnapshotSequence) -> None:
    """InputError (one line) for a sequence too short to train on."""
    if len(seq) < MIN_SNAPSHOTS:
        raise InputError(
            f"{seq.name} has {len(seq)} snapshot(s); training needs at least {MIN_SNAPSHOTS} "
            "(two to train, one to validate, one to test): use a shorter --period or more data"
        )


#: Most snapshots of a synthetic sequence (``skewed:N``): more is a typo, not a test.
MAX_SYNTHETIC = 100_000


def load_sequence(
    spec: str, period: float = 86400.0, limit_events: int | None = None
) -> SnapshotSequence:
    """The snapshots a command line names: ``skewed[:N]`` (the synthetic skewed sequence of
    N snapshots, 32 by default), ``growing[:N]`` (the same snapshots ordered by size, as a
    graph whose activity grows: equal counts are then unequal work), or a data file or
    folder (its first `limit_events` events) cut every `period` time units."""
    name, colon, count = str(spec).partition(":")
    if name not in ("skewed", "growing"):
        from tgpipe.executor.data import load_dataset

        graph = load_dataset(spec)
        if limit_events:
            graph = graph.slice(0, min(limit_events, graph.n_events))
        return cut_snapshots(graph, period)
    if colon and not (count.isdigit() and 4 <= int(count) <= MAX_SYNTHETIC):
        raise InputError(
            f"bad snapshot data {spec!r}: use {name}:N with 4 <= N <= {MAX_SYNTHETIC:,} "
            "snapshots, or a data file"
        )
    if limit_events:
        raise InputError(f"--limit-events is for data files; {name}:N sets its own size")
    seq = skewed_sequence(int(count) if colon else 32, mean_edges=2000.0, sigma=1.2)
    if name == "growing":
        ordered = sorted(seq.snapshots, key=lambda s: (s.n_edges, s.window))
        seq = dataclasses.replace(seq, snapshots=tuple(ordered), name=f"growing:{len(seq)}")
    return seq
