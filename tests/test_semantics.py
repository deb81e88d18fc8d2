import pytest

from tgpipe.dag import Semantics, data_parallel, mspipe, pipetgl, sequential
from tgpipe.errors import InputError


def test_presets_match_guide():
    assert sequential() == (0, 0, 1)
    assert pipetgl(4) == (0, 3, 1)
    assert data_parallel(4) == (0, 0, 4)
    assert mspipe(4, 3) == (2, 0, 4)


@pytest.mark.parametrize(
    "text,ranks,expected",
    [
        ("sequential", 4, (0, 0, 1)),
        ("pipetgl", 8, (0, 7, 1)),
        ("data_parallel", 2, (0, 0, 2)),
        ("mspipe", 2, (1, 0, 2)),
        ("mspipe:3", 4, (2, 0, 4)),
        ("1,2,3", 1, (1, 2, 3)),
    ],
)
def test_parse(text, ranks, expected):
    assert Semantics.parse(text, ranks) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("ring", "unknown semantics 'ring'"),
        ("1,2", "unknown semantics"),
        ("-1,0,1", "unknown semantics"),
        ("mspipe:x", "bound must be an integer"),
        ("pipetgl:2", "takes no"),
        ("mspipe:0", "k must be an integer >= 1"),
    ],
)
def test_parse_refuses(text, message):
    with pytest.raises(InputError, match=message):
        Semantics.parse(text, 2)


def test_gpus_below_one_refused():
    with pytest.raises(InputError, match="GPUs must be an integer >= 1"):
        pipetgl(0)


def test_validate_names_field():
    with pytest.raises(InputError, match="g must be"):
        Semantics(0, 0, 0).validate()


def test_group_of_batch():
    assert [Semantics(0, 0, 3).group(b) for b in range(7)] == [0, 0, 0, 1, 1, 1, 2]
