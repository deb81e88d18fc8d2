import networkx as nx
import pytest

from tgpipe.dag import (
    EDGE_KINDS,
    Semantics,
    build_dag,
    count_by_kind,
    critical_path,
    data_parallel,
    load_profile,
    mspipe,
    pipetgl,
    save_dag,
    sequential,
)
from tgpipe.errors import InputError


def test_counts_by_hand(hand):
    G = build_dag(hand(), sequential(), 3)
    nodes, edges = count_by_kind(G)
    assert set(nodes.values()) == {3} and "GRAD_SYNC" not in nodes
    # 10 data edges per batch; batches 1 and 2 each read memory twice (FETCH, SUPPORT) and
    # receive four param edges (STEP -> MEM_ROOT, MEM_SUPPORT, FWD; STEP -> STEP)
    assert edges == {"data": 30, "memory": 4, "param": 8}


def test_edges_follow_semantics(hand):
    G = build_dag(hand(nbytes={"MEM_WRITE": 77, "STEP": 99}), Semantics(1, 2, 1), 10)
    assert G.edges["MEM_WRITE3", "MEM_FETCH5"] == {"kind": "memory", "bytes": 77}
    assert not G.has_edge("MEM_WRITE4", "MEM_FETCH5")
    assert G.edges["STEP2", "FWD5"] == {"kind": "param", "bytes": 99}
    assert G.edges["STEP4", "STEP5"]["kind"] == "param"
    assert G.edges["FEAT5", "MEM_WRITE5"]["kind"] == "data"


@pytest.mark.parametrize(
    "semantics", [sequential(), pipetgl(4), data_parallel(4), mspipe(4, 2), Semantics(2, 1, 3)]
)
def test_mem_write_never_waits_for_training_of_its_group(hand, semantics):
    G = build_dag(hand(), semantics, 24)
    for v, data in G.nodes(data=True):
        if data["op"] == "MEM_WRITE":
            first = data["batch"] - data["batch"] % semantics.g
            assert not any(
                G.nodes[a]["op"] in ("FWD", "BWD", "STEP") and G.nodes[a]["batch"] >= first
                for a in nx.ancestors(G, v)
            )


def test_weight_readers_wait_for_their_weight_version(hand):
    G = build_dag(hand(), pipetgl(3), 8)  # s_w = 2: batch 5 computes with the step of batch 2
    for op in ("MEM_ROOT", "MEM_SUPPORT", "FWD"):
        assert G.edges["STEP2", f"{op}5"]["kind"] == "param"
    assert not nx.has_path(G, "FWD4", "MEM_WRITE5")
    assert nx.has_path(build_dag(hand(), sequential(), 8), "BWD4", "MEM_WRITE5")


@pytest.mark.parametrize("g,s_mem", [(3, 0), (3, 1), (4, 2)])
def test_group_reads_one_memory_version(hand, g, s_mem):
    G = build_dag(hand(), Semantics(s_mem, 0, g), 6 * g)
    for group in range(6):
        reads = [
            {
                u
                for u in G.predecessors(f"MEM_FETCH{i}")
                if G.edges[u, f"MEM_FETCH{i}"]["kind"] == "memory"
            }
            for i in range(group * g, group * g + g)
        ]
        last = group - 1 - s_mem  # the newest group it must see, and s_mem groups before it
        expected = {
            f"MEM_WRITE{j}"
            for k in range(max(0, last - s_mem), last + 1)
            for j in range(k * g, k * g + g)
        }
        assert all(r == expected for r in reads)


def test_group_all_reduce_waits_for_every_member(hand):
    G = build_dag(hand(), data_parallel(3), 6)
    assert {u for u in G.predecessors("GRAD_SYNC4")} == {"BWD3", "BWD4", "BWD5"}
    assert G.edges["BWD3", "GRAD_SYNC4"]["kind"] == "group"


def test_partial_last_group_is_well_formed(hand):
    G = build_dag(hand(), data_parallel(4), 6)
    assert all("cost" in data for _, data in G.nodes(data=True))
    assert G.number_of_nodes() == 6 * 10


def test_critical_path_by_hand(hand):
    costs = {
        "SAMPLE": 1,
        "FEAT": 2,
        "MEM_FETCH": 4,
        "MEM_ROOT": 1,
        "MEM_WRITE": 1,
        "MEM_SUPPORT": 1,
        "FWD": 3,
        "BWD": 5,
        "STEP": 1,
    }
    length, path = critical_path(build_dag(hand(costs), sequential(), 1))
    assert length == 4 + 1 + 3 + 5 + 1
    assert path == ["MEM_FETCH0", "MEM_ROOT0", "FWD0", "BWD0", "STEP0"]


@pytest.mark.parametrize("suffix", [".graphml", ".json"])
def test_save_dag(tmp_path, suffix):
    G = build_dag(load_profile("gpu-illustrative"), pipetgl(2), 5)
    path = save_dag(G, tmp_path / f"dag{suffix}")
    if suffix == ".graphml":
        H = nx.read_graphml(path)
        assert H.nodes["FWD3"]["resources"] == "gpu"
    else:
        import json

        H = nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    assert H.number_of_nodes() == G.number_of_nodes()
    assert H.number_of_edges() == G.number_of_edges()
    assert {d["kind"] for *_, d in H.edges(data=True)} <= set(EDGE_KINDS)


def test_bad_batch_count(hand):
    with pytest.raises(InputError, match="batches must be an integer >= 1"):
        build_dag(hand(), sequential(), 0)
