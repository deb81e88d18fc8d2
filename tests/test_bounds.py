import random

import networkx as nx
import pytest

from tgpipe.dag import (
    OPS,
    Semantics,
    build_dag,
    critical_path,
    lower_bound,
    max_cycle_ratio,
    pipetgl,
    sequential,
)
from tgpipe.errors import InputError

CHAIN = {"MEM_FETCH": 2e-3, "MEM_ROOT": 3e-3, "MEM_WRITE": 4e-3}  # 9 ms memory chain
CHEAP = {op: 1e-4 for op in OPS}


def test_memory_chain_on_one_rank(hand):
    b = lower_bound(hand(CHEAP | CHAIN), sequential())
    assert b.per_batch == pytest.approx(9e-3)
    assert b.binding == "cycle"
    assert "MEM_FETCH -> MEM_ROOT -> MEM_WRITE repeating every 1 batch" in b.describe()


def test_memory_chain_halves_with_one_batch_of_staleness(hand):
    p = hand(CHEAP | CHAIN)
    assert lower_bound(p, Semantics(1, 0, 1)).per_batch == pytest.approx(4.5e-3)


def test_memory_chain_pays_the_hop_to_the_next_rank(hand):
    # rows sent to the next rank: 1 ms latency + 1000 bytes at 1e6 B/s = 2 ms a hop
    p = hand(CHEAP | CHAIN, {"MEM_WRITE": 1000}, intra=(1e-3, 1e6))
    assert lower_bound(p, pipetgl(4), 4, memory="rows").cycle == pytest.approx(11e-3)
    assert lower_bound(p, Semantics(1, 3, 1), 4, memory="rows").cycle == pytest.approx(5.5e-3)
    # through the host store only a token crosses: latency alone
    assert lower_bound(p, pipetgl(4), 4, memory="host").cycle == pytest.approx(10e-3)


def test_resource_bound_is_gpu_work_over_ranks(hand):
    p = hand({"FWD": 10e-3, "BWD": 20e-3})  # gpu: ROOT 1 + SUPPORT 1 + 10 + 20 + STEP 1
    b = lower_bound(p, pipetgl(4), 4)
    assert b.binding == "resource gpu"
    assert b.per_batch == pytest.approx(33e-3 / 4)
    assert b.resources["gpu"] == pytest.approx(33e-3 / 4)


@pytest.mark.parametrize("fwd,binding", [(7.9e-3, "cycle"), (8.1e-3, "resource gpu")])
def test_binding_term_switches_where_numbers_say(hand, fwd, binding):
    # memory chain 3 ms; gpu work (fwd + 4 ms) / 4 GPUs: equal at fwd = 8 ms
    b = lower_bound(hand({"FWD": fwd}), pipetgl(4), 4)
    assert b.binding == binding
    assert b.per_batch == pytest.approx(max(3e-3, (fwd + 4e-3) / 4))


def test_machines_cost_the_inter_link(hand):
    p = hand(CHEAP | CHAIN, {"MEM_WRITE": 1000}, intra=(0.0, 1e12), inter=(1e-3, 1e6))
    one = lower_bound(p, pipetgl(4), 4, memory="host")
    two = lower_bound(p, pipetgl(4), 4, gpus_per_machine=2, memory="host")
    # 2 of the 4 hops of the ring cross machines: 2 x 2 ms over 4 batches
    assert two.cycle == pytest.approx(one.cycle + 1e-3)


def test_bad_inputs(hand):
    with pytest.raises(InputError, match="GPUs must be an integer >= 1"):
        lower_bound(hand(), sequential(), 0)
    with pytest.raises(InputError, match="unknown memory backend"):
        lower_bound(hand(), sequential(), 1, memory="disk")


def _brute_ratio(H):
    best = 0.0
    for cycle in nx.simple_cycles(nx.DiGraph(H)):
        edges = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        best = max(
            best,
            max(
                sum(H.edges[u, v, 0]["weight"] for u, v in edges)
                / sum(H.edges[u, v, 0]["offset"] for u, v in edges),
                0.0,
            ),
        )
    return best


@pytest.mark.parametrize("seed", range(15))
def test_max_cycle_ratio_matches_enumeration(seed):
    rng = random.Random(seed)
    H = nx.MultiDiGraph()
    n = 7
    for u in range(n):
        for v in range(n):
            if u != v and rng.random() < 0.35:
                # offset 0 only forward, so that offset-0 edges form a DAG
                off = rng.choice([1, 2, 3]) if u >= v else rng.choice([0, 0, 1])
                H.add_edge(u, v, weight=rng.uniform(0, 5), offset=off)
    ratio, cycle = max_cycle_ratio(H)
    assert ratio == pytest.approx(_brute_ratio(H), rel=1e-9, abs=1e-12)
    if cycle:
        assert sum(H.edges[e]["weight"] for e in cycle) / sum(
            H.edges[e]["offset"] for e in cycle
        ) == pytest.approx(ratio)


@pytest.mark.parametrize("seed", range(12))
def test_cycle_bound_is_the_growth_of_the_unrolled_critical_path(hand, seed):
    """On one rank with free transfers, the longest path of n batches grows by the cycle
    bound per batch: the periodic graph and the unrolled DAG agree."""
    rng = random.Random(seed)
    p = hand({op: rng.uniform(1e-4, 5e-3) for op in OPS})
    s = Semantics(rng.randint(0, 2), rng.randint(0, 2), rng.randint(1, 3))
    n = 60 * s.g
    growth = (critical_path(build_dag(p, s, 2 * n))[0] - critical_path(build_dag(p, s, n))[0]) / n
    assert growth == pytest.approx(lower_bound(p, s).cycle, rel=1e-6)
