"""The recent-neighbour sampler against a slow, obvious scan of the event list."""

import numpy as np
import pytest

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.sampler import RecentSampler


def slow_sample(graph, start, nodes, k):
    """Walk the events before `start` backwards; within one event the dst end comes first."""
    out = []
    for node in nodes:
        found = []
        for e in range(start - 1, -1, -1):
            if graph.dst[e] == node:
                found.append((graph.src[e], graph.ts[e], e))
            if graph.src[e] == node:
                found.append((graph.dst[e], graph.ts[e], e))
        out.append(found[:k])
    return out


def check(sampler, graph, start, nodes):
    got = sampler.sample(start, nodes)
    expected = slow_sample(graph, start, nodes, sampler.k)
    for row, want in enumerate(expected):
        n = len(want)
        assert got.mask[row].tolist() == [True] * n + [False] * (sampler.k - n)
        assert got.nodes[row, :n].tolist() == [w[0] for w in want]
        assert got.ts[row, :n].tolist() == [w[1] for w in want]
        assert got.events[row, :n].tolist() == [w[2] for w in want]
        assert (got.nodes[row, n:] == 0).all() and (got.events[row, n:] == 0).all()
        assert (got.ts[row, n:] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_scan_on_random_streams(random_graph, seed):
    graph = random_graph(n_events=200, n_nodes=12, seed=seed)
    sampler = RecentSampler(graph, k=4)
    rng = np.random.default_rng(seed)
    for start in (0, 1, 7, 100, 199, 200):
        check(sampler, graph, start, rng.integers(0, graph.n_nodes, 15))


def test_matches_slow_scan_on_real_data(wiki_slice):
    sampler = RecentSampler(wiki_slice, k=10)
    roots = np.concatenate([wiki_slice.src[2400:2600], wiki_slice.dst[2400:2600]])
    check(sampler, wiki_slice, 2400, roots)


def test_never_sees_the_batch_itself_or_later():
    # node 0 interacts at events 0, 1, 2, 3; a batch starting at 2 sees only 0 and 1
    graph = TemporalGraph(np.array([0, 0, 0, 0]), np.array([1, 2, 3, 4]), np.arange(4.0))
    nb = RecentSampler(graph, k=3).sample(2, np.array([0]))
    assert nb.nodes[0].tolist() == [2, 1, 0] and nb.mask[0].tolist() == [True, True, False]


def test_pure_whatever_the_order(random_graph):
    graph = random_graph(seed=4)
    sampler = RecentSampler(graph, k=5)
    roots = np.arange(graph.n_nodes)
    late = sampler.sample(250, roots)
    early = sampler.sample(30, roots)
    fresh = RecentSampler(graph, k=5)
    for got, want in zip(early, fresh.sample(30, roots), strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(late, fresh.sample(250, roots), strict=True):
        assert np.array_equal(got, want)


def test_empty_graph_and_bad_arguments():
    empty = TemporalGraph(np.array([], int), np.array([], int), np.array([]), n_nodes=3)
    nb = RecentSampler(empty, k=2).sample(0, np.array([0, 2]))
    assert not nb.mask.any() and nb.nodes.shape == (2, 2)
    with pytest.raises(InputError, match="neighbours"):
        RecentSampler(empty, k=0)
    with pytest.raises(InputError, match="batch start"):
        RecentSampler(empty, k=2).sample(5, np.array([0]))
