"""Recent-neighbour sampling: the k latest interactions of each node before a batch.

A memory-based TGNN embeds a node from its most recent neighbours. To keep any rank free to
sample any batch in any order, the sample is a pure function of (graph, batch start, nodes):
the neighbours of a node for the batch that starts at event ``start`` are the other ends of
its latest events with index < ``start`` (events of earlier batches only, never its own).

The graph's events are indexed once by (node, event) in a flat array (both ends of every
event), so a query is one binary search per node and a gather: no Python loop per node.
Neighbours come most recent first; missing ones are padding, marked False in the mask.

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> g = TemporalGraph(np.array([0, 0, 1, 0]), np.array([1, 2, 2, 3]), np.arange(4.0))
>>> nb = RecentSampler(g, k=2).sample(3, np.array([0, 3]))
>>> nb.nodes.tolist(), nb.mask.tolist()
([[2, 1], [0, 0]], [[True, True], [False, False]])
>>> nb.events.tolist()[0], nb.ts.tolist()[0]
([1, 0], [1.0, 0.0])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph

__all__ = ["Neighbours", "RecentSampler"]


class Neighbours(NamedTuple):
    """The sampled neighbours of Q query nodes, k columns each, most recent first."""

    nodes: np.ndarray  #: int64 [Q, k] neighbour ids (0 where padded)
    ts: np.ndarray  #: float64 [Q, k] event times (0 where padded)
    events: np.ndarray  #: int64 [Q, k] event ids, for edge features (0 where padded)
    mask: np.ndarray  #: bool [Q, k] True where a neighbour exists


class RecentSampler:
    """Index a graph once; then `sample` the k most recent neighbours before any batch."""

    def __init__(self, graph: TemporalGraph, k: int = 10):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"number of neighbours must be an integer >= 1, got {k!r}")
        self.graph, self.k = graph, k
        n_events = graph.n_events
        ends = np.concatenate([graph.src, graph.dst])
        other = np.concatenate([graph.dst, graph.src])
        events = np.concatenate([np.arange(n_events), np.arange(n_events)])
        # One sortable key per (node, event, side): sorted, each node's events are in order.
        self._stride = 2 * max(n_events, 1)
        key = ends * self._stride + 2 * events + np.repeat([0, 1], n_events)
        order = np.argsort(key, kind="stable")
        self._key = key[order]
        # One trailing entry that padding reads (node 0, time 0), even in an empty graph.
        self._other = np.append(other[order], 0)
        self._events = np.append(events[order], n_events)
        self._ts = np.append(graph.ts, 0.0)
        counts = np.bincount(ends, minlength=graph.n_nodes)
        self._first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def sample(self, start: int, nodes: np.ndarray) -> Neighbours:
        """Neighbours of `nodes` among the events with index < `start`."""
        nodes = np.asarray(nodes, dtype=np.int64)
        if not 0 <= start <= self.graph.n_events:
            raise InputError(f"batch start {start} outside the graph's 0..{self.graph.n_events}")
        end = np.searchsorted(self._key, nodes * self._stride + 2 * start)
        pos = end[:, None] - 1 - np.arange(self.k)
        mask = pos >= self._first[nodes][:, None]
        pos = np.where(mask, pos, len(self._key))
        events = self._events[pos]
        ts = self._ts[events]
        return Neighbours(self._other[pos], ts, np.where(mask, events, 0), mask)
