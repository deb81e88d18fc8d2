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


#: The real data set beside the checkout (never committed): ../shared/data/wikipedia.csv
WIKIPEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia.csv"


@pytest.fixture
def wikipedia_csv():
    if not WIKIPEDIA.exists():
        pytest.skip(f"the shared data set is absent: {WIKIPEDIA}")
    return WIKIPEDIA
