"""A synthetic interaction stream that looks like a real one, for tests and as a default.

Real streams (Wikipedia edits, Reddit posts) share a few traits that matter to a temporal GNN
and to a pipeline schedule: a few users and items take most of the events (power-law degrees),
users come back to what they used last (repeated pairs, so memory carries information), and
activity comes in bursts (sessions of quick events between long silences). The generator
builds those traits in, in this order:

1. every node gets an activity weight drawn from a Pareto law (heavy tail, exponent `alpha`);
2. sessions: a user picked by weight does a geometric number of events (mean `session`) a
   few minutes apart; sessions start at bursty times (lognormal gaps);
3. each event goes back to the user's previous partner with probability `repeat`, else to a
   new partner picked by weight;
4. ids are numbered by first appearance, users first and items after them (as in JODIE).

Everything comes from one seeded generator: the same arguments give the same graph.

Examples
--------
>>> g = synthetic(100, 1000, seed=1)
>>> g.n_nodes, g.n_events, bool((g.src < 90).all() and (g.dst >= 90).all())
(100, 1000, True)
>>> bool((synthetic(100, 1000, seed=1).dst == g.dst).all())
True
"""

from __future__ import annotations

import numpy as np

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph

__all__ = ["synthetic"]

_DAY = 86_400.0


def synthetic(
    n_nodes: int,
    n_events: int,
    *,
    bipartite: bool = True,
    n_items: int | None = None,
    edge_dim: int = 0,
    node_dim: int = 0,
    seed: int = 0,
    alpha: float = 1.5,
    repeat: float = 0.8,
    session: float = 4.0,
    days: float = 30.0,
    name: str = "synthetic",
) -> TemporalGraph:
    """A bursty, heavy-tailed interaction stream of `n_events` events over `n_nodes` nodes.

    With `bipartite`, the last `n_items` nodes (default a tenth, as in Wikipedia) are items and
    every event goes from a user to an item; otherwise any node meets any other. Nodes drawn
    rarely may have no event: `n_nodes` is kept as asked. Times are whole seconds spanning
    about `days`.
    """
    n_items = max(1, n_nodes // 10) if n_items is None else n_items
    _check_args(n_nodes, n_events, bipartite, n_items, edge_dim, node_dim, alpha, repeat, session)
    rng = np.random.default_rng(seed)
    n_users = n_nodes - n_items if bipartite else n_nodes

    def weights(n: int) -> np.ndarray:
        w = rng.pareto(alpha, n) + 1.0
        return w / w.sum()

    # Sessions: who, how long, when.
    user_w = weights(n_users)
    lengths = rng.geometric(1.0 / session, size=int(n_events / session * 1.2) + 10)
    while lengths.sum() < n_events:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / session, size=len(lengths))])
    n_sessions = int(np.searchsorted(np.cumsum(lengths), n_events)) + 1
    lengths = lengths[:n_sessions]
    lengths[-1] -= lengths.sum() - n_events
    who = rng.choice(n_users, size=n_sessions, p=user_w)
    starts = np.cumsum(rng.lognormal(0.0, 1.5, n_sessions))
    starts *= days * _DAY * 0.95 / starts[-1]
    session_of = np.repeat(np.arange(n_sessions), lengths)
    first = np.cumsum(lengths) - lengths
    step = rng.lognormal(np.log(120.0), 1.0, n_events)  # ~minutes between a session's events
    elapsed = np.cumsum(step)
    within = elapsed - np.repeat(elapsed[first], lengths)  # 0 at each session's first event
    ts = np.floor(starts[session_of] + within)
    order = np.argsort(ts, kind="stable")
    ts, src = ts[order] - ts[order[0]], who[session_of][order]

    # Partners: back to the previous one with probability `repeat`, else a new one by weight.
    if bipartite:
        fresh = n_users + rng.choice(n_items, size=n_events, p=weights(n_items))
    else:
        fresh = rng.choice(n_nodes, size=n_events, p=user_w)
        clash = fresh == src
        fresh[clash] = (src[clash] + rng.integers(1, n_nodes, clash.sum())) % n_nodes
    dst = fresh[_root_of_repeats(src, rng.random(n_events) < repeat)]

    src, dst = _number_by_first_use(src, dst, n_users if bipartite else 0, n_nodes)
    label = (rng.random(n_events) < 0.0015).astype(np.int64)  # rare state changes, as in JODIE
    edge_feat = node_feat = None
    if edge_dim:  # informative: a mix of the two ends' hidden traits, plus noise
        hidden = rng.standard_normal((n_nodes, edge_dim)).astype(np.float32)
        noise = rng.standard_normal((n_events, edge_dim)).astype(np.float32)
        edge_feat = 0.5 * (hidden[src] + hidden[dst]) + 0.3 * noise
    if node_dim:
        node_feat = rng.standard_normal((n_nodes, node_dim)).astype(np.float32)
    return TemporalGraph(
        src, dst, ts, edge_feat, node_feat, label, n_nodes, name, np.arange(n_nodes)
    )


def _check_args(n_nodes, n_events, bipartite, n_items, edge_dim, node_dim, alpha, repeat, s):
    if n_nodes < 2:
        raise InputError(f"synthetic: n_nodes must be >= 2, got {n_nodes}")
    if n_events < 1:
        raise InputError(f"synthetic: n_events must be >= 1, got {n_events}")
    if bipartite and not 1 <= n_items < n_nodes:
        raise InputError(f"synthetic: n_items must be in 1..{n_nodes - 1}, got {n_items}")
    if edge_dim < 0 or node_dim < 0:
        raise InputError("synthetic: feature dims must be >= 0")
    if alpha <= 0 or s < 1 or not 0 <= repeat <= 1:
        raise InputError("synthetic: need alpha > 0, session >= 1 and 0 <= repeat <= 1")


def _root_of_repeats(src: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """For each event, the earlier event whose fresh partner it ends up with.

    A repeating event takes its user's previous partner, which may itself be a repeat: follow
    the chain back (pointer jumping, log2 of the longest chain in steps).
    """
    n = len(src)
    order = np.lexsort((np.arange(n), src))  # by user, then by time
    previous = np.full(n, -1)
    same = src[order[1:]] == src[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    pointer = np.where(repeats & (previous >= 0), previous, np.arange(n))
    while True:
        nxt = pointer[pointer]
        if (nxt == pointer).all():
            return pointer
        pointer = nxt


def _number_by_first_use(src, dst, n_users: int, n_nodes: int):
    """Renumber nodes in order of first appearance; with n_users > 0, users 0..n_users-1 and
    items after them, each group in its own order (as JODIE numbers them)."""
    groups = [(0, n_users), (n_users, n_nodes)] if n_users else [(0, n_nodes)]
    both = np.stack([src, dst], axis=1).ravel()  # time order, src before dst
    mapping = np.empty(n_nodes, dtype=np.int64)
    for lo, hi in groups:
        seen = both[(both >= lo) & (both < hi)]
        ids, first = np.unique(seen, return_index=True)
        used = ids[np.argsort(first)]
        unused = np.setdiff1d(np.arange(lo, hi), used)
        mapping[np.concatenate([used, unused])] = np.arange(lo, hi)
    return mapping[src], mapping[dst]
