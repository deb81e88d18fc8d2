import pytest

from tgpipe.dag import LANES, OPS, node_name, parse_node, require_op
from tgpipe.errors import InputError


def test_catalog_matches_guide():
    assert list(OPS) == [
        "SAMPLE",
        "FEAT",
        "MEM_FETCH",
        "MEM_ROOT",
        "MEM_WRITE",
        "MEM_SUPPORT",
        "FWD",
        "BWD",
        "GRAD_SYNC",
        "STEP",
    ]
    assert all(op.lane in LANES for op in OPS.values())
    assert OPS["FEAT"].resources == ("cpu", "h2d")
    assert OPS["MEM_SUPPORT"].resources == ("h2d", "gpu")
    assert not OPS["FWD"].moves_bytes and OPS["MEM_WRITE"].moves_bytes


@pytest.mark.parametrize("op,batch", [("FWD", 17), ("MEM_WRITE", 3), ("GRAD_SYNC", 0)])
def test_node_name_round_trips(op, batch):
    assert parse_node(node_name(op, batch)) == (op, batch)


@pytest.mark.parametrize("text", ["FWD", "17", "FOO3", "fwd3", "FWD-1", ""])
def test_bad_action_text_is_refused(text):
    with pytest.raises(InputError, match="bad action"):
        parse_node(text)


def test_unknown_op_names_the_choices():
    with pytest.raises(InputError, match="unknown op 'FOO'.*SAMPLE"):
        require_op("FOO")
