"""Shared test helpers: small hand-made profiles whose numbers are easy to check by hand."""

from pathlib import Path

import pytest

from tgpipe.dag import OPS, CostProfile, Link, OpCost


def make_profile(
    costs=None, nbytes=None, *, intra=(0.0, 1e12), inter=(0.0, 1e12), cores=4, name="hand"
):
    """Every op costs 1 ms and moves nothing, unless `costs` / `nbytes` say otherwise."""
    costs = {op: 1e-3 for op in OPS} | (costs or {})
    nbytes = nbytes or {}
    return CostProfile(
        name=name,
        source="illustrative",
        device="test",
        ops={op: OpCost(costs[op], 0.0, nbytes.get(op, 0)) for op in OPS},
        intra=Link(*intra),
        inter=Link(*inter),
        cpu_cores=cores,
    )


@pytest.fixture
def hand():
    return make_profile


#: The real data set (never committed): beside the checkout, ../shared/data/wikipedia.csv, or
#: inside it, shared/data/wikipedia.csv (ignored by git; where a copy travels with the tree)
_ROOT = Path(__file__).resolve().parents[1]
_PLACES = [root / "shared" / "data" / "wikipedia.csv" for root in (_ROOT.parent, _ROOT)]
WIKIPEDIA = next((p for p in _PLACES if p.exists()), _PLACES[0])


@pytest.fixture(scope="session")
def wikipedia_csv():
    if not WIKIPEDIA.exists():
        pytest.skip(f"the shared data set is absent: {WIKIPEDIA}")
    return WIKIPEDIA


def _random_graph(n_events=300, n_nodes=20, seed=0, edge_dim=0, node_dim=0):
    """A small stream with repeated times, self-loops and optional features."""
    import numpy as np

    from tgpipe.executor.graph import TemporalGraph

    rng = np.random.default_rng(seed)
    src = rng.integers(0, n_nodes, n_events)
    dst = rng.integers(0, n_nodes, n_events)
    ts = np.sort(rng.integers(0, n_events // 2, n_events)).astype(float)
    edge = rng.normal(size=(n_events, edge_dim)).astype("float32") if edge_dim else None
    node = rng.normal(size=(n_nodes, node_dim)).astype("float32") if node_dim else None
    return TemporalGraph(src, dst, ts, edge, node, n_nodes=n_nodes, name="random")


@pytest.fixture
def random_graph():
    return _random_graph


@pytest.fixture
def wiki_slice(wikipedia_csv):
    """The first 3,000 events of the real data set (one id space, no features)."""
    import numpy as np

    from tgpipe.executor.graph import TemporalGraph

    table = np.loadtxt(wikipedia_csv, delimiter=",", skiprows=1, max_rows=3000)
    return TemporalGraph(
        table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2], name="wiki3k"
    )
