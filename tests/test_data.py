"""Loaders, format detection, id remapping, input checks and the synthetic generator."""

import gzip
import time

import numpy as np
import pytest
import torch

from tgpipe.errors import InputError
from tgpipe.executor.data import detect_format, is_synthetic_spec, load_dataset
from tgpipe.executor.synthetic import synthetic


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- formats


def test_jodie_four_columns_one_id_space_keeps_ids(tmp_path):
    path = write(tmp_path, "w.csv", "u,i,ts,label\n0,3,0,0\n1,4,5,0\n0,4,5,1\n2,3,9,0\n")
    g = load_dataset(path)
    assert detect_format(path) == ("jodie", path)
    assert g.src.tolist() == [0, 1, 0, 2] and g.dst.tolist() == [3, 4, 4, 3]
    assert g.node_ids.tolist() == [0, 1, 2, 3, 4]
    assert g.ts.tolist() == [0, 5, 5, 9] and g.label.tolist() == [0, 0, 1, 0]
    assert g.label.dtype == np.int64 and g.edge_feat is None and g.name == "w"


def test_jodie_original_overlapping_ids_puts_items_after_users(tmp_path):
    # JODIE's own header names the feature list once; users and items both count from 0.
    text = (
        "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
        "0,0,0.0,0,0.1,0.2,0.3\n"
        "5,0,1.0,0,0.4,0.5,0.6\n"
        "0,2,2.5,1,0.7,0.8,0.9\n"
    )
    g = load_dataset(write(tmp_path, "jodie.csv", text))
    assert g.n_nodes == 4  # users 0, 5 -> 0, 1; items 0, 2 -> 2, 3
    assert g.src.tolist() == [0, 1, 0] and g.dst.tolist() == [2, 2, 3]
    assert g.node_ids.tolist() == [0, 5, 0, 2]
    np.testing.assert_allclose(g.edge_feat, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    assert g.edge_feat.dtype == np.float32


def test_jodie_header_naming_each_feature(tmp_path):
    text = "u,i,ts,label,f0,f1\n10,20,1,0,1,2\n11,20,2,0,3,4\n"
    g = load_dataset(write(tmp_path, "named.csv", text))
    assert g.edge_feat.tolist() == [[1, 2], [3, 4]]
    assert g.node_ids.tolist() == [10, 11, 20]


def test_sparse_ids_become_dense_in_their_order(tmp_path):
    g = load_dataset(write(tmp_path, "s.txt", "1000 7 1\n7 52 2\n52 1000 3\n"))
    assert g.node_ids.tolist() == [7, 52, 1000]
    assert g.src.tolist() == [2, 0, 1] and g.dst.tolist() == [0, 1, 2]
    assert g.n_nodes == 3


def test_tgn_processed_with_padded_features(tmp_path):
    text = ",u,i,ts,label,idx\n0,1,3,0.0,0,1\n1,2,3,4.0,0,2\n2,1,4,7.0,1,3\n"
    path = write(tmp_path, "ml_tiny.csv", text)
    edge = np.arange(4 * 2, dtype=np.float64).reshape(4, 2)  # row 0: TGN's padding
    node = np.arange(5 * 3, dtype=np.float64).reshape(5, 3)  # row = node id, row 0 padding
    np.save(tmp_path / "ml_tiny.npy", edge)
    np.save(tmp_path / "ml_tiny_node.npy", node)
    g = load_dataset(tmp_path)
    assert detect_format(path)[0] == "tgn" and g.name == "tiny"
    assert g.src.tolist() == [0, 1, 0] and g.dst.tolist() == [2, 2, 3]
    assert g.node_ids.tolist() == [1, 2, 3, 4]
    assert g.edge_feat.tolist() == edge[1:].tolist()
    assert g.node_feat.tolist() == node[1:].tolist()
    assert g.label.tolist() == [0, 0, 1]


def test_tgn_features_optional(tmp_path):
    g = load_dataset(write(tmp_path, "ml_x.csv", ",u,i,ts,label,idx\n0,1,2,0,0,1\n"))
    assert g.edge_feat is None and g.node_feat is None and g.n_events == 1


def test_tgl_edges_with_torch_features(tmp_path):
    folder = tmp_path / "WIKI"
    folder.mkdir()
    text = ",src,dst,time,int_roll,ext_roll\n0,0,2,1,0,0\n1,1,2,3,0,0\n2,0,3,3,0,1\n"
    write(folder, "edges.csv", text)
    write(folder, "labels.csv", "node,time,label\n")  # TGL's folder holds more csv files
    torch.save(torch.arange(6.0).reshape(3, 2), folder / "edge_features.pt")
    torch.save(torch.ones(4, 5), folder / "node_features.pt")
    g = load_dataset(folder)
    assert detect_format(folder) == ("tgl", folder / "edges.csv") and g.name == "WIKI"
    assert g.src.tolist() == [0, 1, 0] and g.dst.tolist() == [2, 2, 3]
    assert g.edge_feat.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert g.node_feat.shape == (4, 5) and g.label is None


def test_snap_whitespace_comments_and_gzip(tmp_path):
    text = (
        "# Directed temporal graph\n# FromNodeId ToNodeId Unixtime\n5 6 100\n6\t5  160\n\n5 7 160\n"
    )
    plain = write(tmp_path, "sx-tiny.txt", text)
    packed = tmp_path / "sx-tiny.txt.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        g = load_dataset(path)
        assert detect_format(path)[0] == "snap" and g.name == "sx-tiny"
        assert g.src.tolist() == [0, 1, 0] and g.dst.tolist() == [1, 0, 2]
        assert g.ts.tolist() == [100, 160, 160] and g.label is None


def test_name_given_wins(tmp_path):
    assert load_dataset(write(tmp_path, "a.txt", "0 1 2\n"), name="mine").name == "mine"


def test_duplicate_events_are_kept(tmp_path):
    # Two edits of one page by one user within a second are two events, as in JODIE and TGN.
    g = load_dataset(write(tmp_path, "d.csv", "u,i,ts,label\n0,1,5,0\n0,1,5,0\n0,1,6,0\n"))
    assert g.n_events == 3 and g.src.tolist() == [0, 0, 0]


def test_synthetic_spec():
    assert is_synthetic_spec("synthetic") and not is_synthetic_spec("data/synthetic")
    g = load_dataset("synthetic:50,300")
    assert (g.n_nodes, g.n_events, g.name) == (50, 300, "synthetic")
    assert load_dataset("synthetic").n_events == 20_000


# ---------------------------------------------------------------------------- bad inputs

HEADER = "u,i,ts,label\n"

BAD = [
    # name, file name, content, what the one-line message must say
    ("empty", "e.csv", "", "is empty"),
    ("blank", "b.csv", "\n  \n", "is empty"),
    ("header only", "h.csv", HEADER, "holds a header but no events"),
    ("tgn header only", "ml_h.csv", ",u,i,ts,label,idx\n", "holds a header but no events"),
    ("snap only comments", "c.txt", "# nothing\n", "holds only comments"),
    ("missing columns", "m.csv", "u,i,ts\n0,1,2\n", "the header names 3 column(s)"),
    ("short row", "r.csv", HEADER + "0,1,2,0\n0,1,3\n", "line 3 has 3 field(s), expected 4"),
    ("extra column", "x.csv", HEADER + "0,1,2,0,9\n0,1,3,0,9\n", "line 2 has 5 fields"),
    ("one row too long", "y.csv", HEADER + "0,1,2,0\n0,1,3,0,9\n", "line 3 has 5 field(s)"),
    ("text in ts", "t.csv", HEADER + "0,1,2,0\n0,1,abc,0\n", "line 3, column 'ts': 'abc' is"),
    ("empty field", "f.csv", HEADER + "0,1,2,0\n0,1,3,\n", "line 3, column 'label': empty"),
    ("NaN time", "n.csv", HEADER + "0,1,2,0\n0,1,nan,0\n", "line 3, column 'ts': nan where"),
    ("NaN id", "n2.csv", HEADER + "0,nan,2,0\n", "line 2, column 'i': nan where"),
    ("negative id", "neg.csv", HEADER + "0,1,2,0\n-1,1,3,0\n", "line 3, column 'u': id -1 is"),
    ("fractional id", "fr.csv", HEADER + "0,1.5,2,0\n", "column 'i': id 1.5 is not an integer"),
    (
        "unsorted",
        "u.csv",
        HEADER + "0,1,2,0\n0,1,9,0\n\n0,1,3,0\n",
        "line 5, column 'ts': time 3 is earlier than the line before (9); the events must be "
        "in time order: sort the file by 'ts' first",
    ),
    ("unsorted snap", "u.txt", "# c\n1 2 5\n1 2 4\n", "line 3, column 'ts': time 4 is earlier"),
    ("unknown format", "w.txt", "hello world\n", "unknown format"),
    ("no header", "nh.csv", "0,1,2,0\n", "a csv with no header"),
    ("snap 4 columns", "s4.txt", "1 2 3 4\n1 2 3 4\n", "line 1 has 4 fields, expected 3"),
    ("tgn no idx", "ml_a.csv", ",u,i,ts,label\n0,1,2,0,0\n", "does not match TGN"),
    ("tgl no time", "edges.csv", ",src,dst\n0,1,2\n", "does not match TGL"),
    ("tgl unknown", "q.csv", ",a,b\n0,1,2\n", "unknown format"),
]


@pytest.mark.parametrize("filename,content,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_one_line(tmp_path, filename, content, message):
    path = write(tmp_path, filename, content)
    with pytest.raises(InputError) as err:
        load_dataset(path)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert str(path) in text


def test_binary_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(InputError, match="is not a text file"):
        load_dataset(path)


def test_missing_path_and_folders(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere.csv")
    with pytest.raises(InputError, match="holds no data file"):
        load_dataset(tmp_path)
    write(tmp_path, "a.csv", HEADER + "0,1,2,0\n")
    write(tmp_path, "b.txt", "0 1 2\n")
    with pytest.raises(InputError, match=r"several data files \(a.csv, b.txt\)"):
        load_dataset(tmp_path)


def test_feature_file_too_short(tmp_path):
    write(tmp_path, "ml_s.csv", ",u,i,ts,label,idx\n0,1,2,0,0,1\n1,1,2,1,0,2\n")
    np.save(tmp_path / "ml_s.npy", np.zeros((2, 4)))  # idx 2 needs 3 rows
    with pytest.raises(InputError, match="has 2 rows but idx go up to 2"):
        load_dataset(tmp_path)


def test_tgl_features_not_a_tensor(tmp_path):
    write(tmp_path, "edges.csv", ",src,dst,time,int_roll,ext_roll\n0,0,1,1,0,0\n")
    torch.save({"x": 1}, tmp_path / "edge_features.pt")
    with pytest.raises(InputError, match="holds a dict, expected a tensor"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------- the real data


def test_wikipedia_loads_fast_with_published_counts(wikipedia_csv):
    start = time.process_time()
    g = load_dataset(wikipedia_csv)
    cpu = time.process_time() - start
    assert (g.n_events, g.n_nodes, g.name) == (157_474, 9_227, "wikipedia")
    assert np.array_equal(g.node_ids, np.arange(9_227))  # already one dense 0-based space
    assert g.src.max() == 8_226 and g.dst.min() == 8_227 and int(g.label.sum()) == 217
    assert (g.ts[0], g.ts[-1]) == (0, 2_678_373) and g.edge_feat is None
    assert cpu < 1.0, f"loading took {cpu:.2f} s of CPU"
    train, val, test = g.split()
    assert (len(train), len(val), len(test)) == (110_232, 23_621, 23_621)
    assert train.ts[-1] < val.ts[0] and val.ts[-1] < test.ts[0]


# ---------------------------------------------------------------------------- synthetic


def degrees(g):
    return np.bincount(np.concatenate([g.src, g.dst]), minlength=g.n_nodes)


def test_synthetic_deterministic_for_a_seed():
    a = synthetic(300, 4000, edge_dim=3, node_dim=2, seed=7)
    b = synthetic(300, 4000, edge_dim=3, node_dim=2, seed=7)
    c = synthetic(300, 4000, edge_dim=3, node_dim=2, seed=8)
    for key in ("src", "dst", "ts", "edge_feat", "node_feat", "label"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert not np.array_equal(a.dst, c.dst) and not np.array_equal(a.ts, c.ts)


def test_synthetic_bipartite_layout_and_features():
    g = synthetic(500, 6000, n_items=40, edge_dim=4, node_dim=3)
    assert (g.n_nodes, g.n_events) == (500, 6000)
    assert g.src.max() < 460 and g.dst.min() >= 460
    assert (g.src[0], g.dst[0]) == (0, 460)  # numbered by first appearance, as in JODIE
    assert g.edge_feat.shape == (6000, 4) and g.node_feat.shape == (500, 3)
    assert g.edge_feat.dtype == np.float32 and np.all(np.diff(g.ts) >= 0)
    assert np.array_equal(g.ts, np.floor(g.ts)) and g.ts[0] == 0


def test_synthetic_general_graph_has_no_self_loops():
    g = synthetic(300, 5000, bipartite=False)
    assert not np.any(g.src == g.dst)
    assert np.intersect1d(g.src, g.dst).size > 100  # one id space: nodes act both ways


@pytest.mark.parametrize("bipartite", [True, False])
def test_synthetic_looks_like_a_real_stream(bipartite):
    g = synthetic(2000, 40_000, bipartite=bipartite, seed=3)
    deg = degrees(g)
    top = np.sort(deg)[::-1][: g.n_nodes // 100].sum() / deg.sum()
    assert top > 0.1, f"top 1% of nodes hold {top:.1%} of endpoints: tail not heavy"
    assert deg.max() > 20 * np.median(deg)
    pairs = np.unique(g.src * g.n_nodes + g.dst).size
    assert 1 - pairs / g.n_events > 0.5, "too few repeated pairs"
    gaps = np.diff(g.ts)
    assert gaps.std() / gaps.mean() > 1.5, "inter-event times not bursty"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n_nodes=1, n_events=10), "n_nodes must be >= 2"),
        (dict(n_nodes=10, n_events=0), "n_events must be >= 1"),
        (dict(n_nodes=10, n_events=5, n_items=10), "n_items must be in 1..9"),
        (dict(n_nodes=10, n_events=5, edge_dim=-1), "feature dims"),
        (dict(n_nodes=10, n_events=5, repeat=2.0), "0 <= repeat <= 1"),
    ],
)
def test_synthetic_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        synthetic(**kwargs)
