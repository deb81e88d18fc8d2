import pytest

from tgpipe.dag import OPS, Semantics, load_profile
from tgpipe.errors import InputError
from tgpipe.schedules import FAMILIES, Action, Schedule, family, validate
from tgpipe.schedules.families import pipeline
from tgpipe.schedules.ir import claimed


@pytest.fixture
def profile():
    return load_profile("gpu-illustrative")


@pytest.mark.parametrize(
    "name,ranks",
    [
        ("sequential", 1),
        ("data_parallel", 4),
        ("pipetgl", 4),
        ("pipetgl/rows", 3),
        ("mspipe", 4),
        ("disttgl", 4),
    ],
)
def test_families_are_valid_and_state_semantics(profile, name, ranks):
    s = family(name, profile, ranks, 13)
    validate(s)
    assert (
        s.semantics
        == {
            "sequential": (0, 0, 1),
            "data_parallel": (0, 0, ranks),
            "pipetgl": (0, ranks - 1, 1),
            "pipetgl/rows": (0, ranks - 1, 1),
            "mspipe": (1, 0, ranks),
            "disttgl": (0, 0, ranks),
        }[name]
    )
    assert (
        FAMILIES[name.split("/")[0]].__doc__ and "Gives up" in FAMILIES[name.split("/")[0]].__doc__
    )


def test_pipetgl_ring_places_batch_on_rank_mod_w(profile):
    s = family("pipetgl", profile, 4, 12)
    for (rank, _), acts in s.lanes.items():
        assert all(a.batch % 4 == rank for a in acts)
    # the memory-critical part runs before the GNN forward of the same batch
    gpu = s.lanes[1, "gpu"]
    assert gpu.index(Action("MEM_ROOT", 5)) < gpu.index(Action("FWD", 5))


def test_rows_variant_sends_memory_over_the_net_lane(profile):
    s = family("pipetgl/rows", profile, 2, 6)
    assert Action("MEM_WRITE", 3) in s.lanes[1, "net"]
    assert s.memory == "rows"


def test_disttgl_refuses_memory_parallelism(profile):
    with pytest.raises(InputError, match="k > 1 is not modelled"):
        family("disttgl", profile, 4, 8, k=2)
    assert family("disttgl", profile, 4, 8, i=2, j=2).semantics == (0, 1, 2)


def test_unknown_family(profile):
    with pytest.raises(InputError, match="unknown schedule family 'ring'"):
        family("ring", profile, 2, 4)


def test_action_text_round_trips():
    assert Action.parse(str(Action("MEM_WRITE", 3))) == Action("MEM_WRITE", 3)
    assert repr(Action("FWD", 17)) == "FWD17"


def test_saved_schedule_loads_back_equal(profile, tmp_path):
    s = family("mspipe", profile, 2, 9, gpus_per_machine=1)
    s.save(tmp_path / "s.schedule")
    assert Schedule.load(tmp_path / "s.schedule") == s


def test_hand_edited_swap_of_dependent_actions_is_refused(profile):
    text = family("sequential", profile, 1, 6).dumps()
    assert "FWD3 BWD3" in text
    edited = Schedule.loads(text.replace("FWD3 BWD3", "BWD3 FWD3"))
    with pytest.raises(InputError) as err:
        validate(edited)
    message = str(err.value)
    assert "rank 0 lane gpu position" in message
    assert "BWD3 needs FWD3, which comes later on the same lane" in message
    assert "\n" not in message


def test_cross_lane_deadlock_names_the_missing_predecessor(profile):
    s = family("sequential", profile, 1, 3)
    lanes = dict(s.lanes)
    # MEM_WRITE1 before MEM_WRITE0 on d2h: MEM_WRITE1 needs MEM_ROOT1, which needs MEM_FETCH1,
    # which needs MEM_WRITE0, behind it on the same lane
    d2h = list(lanes[0, "d2h"])
    d2h[0], d2h[1] = d2h[1], d2h[0]
    lanes[0, "d2h"] = tuple(d2h)
    bad = Schedule(s.name, s.semantics, 1, 3, lanes, inflight=s.inflight)
    with pytest.raises(InputError, match=r"rank 0 lane \w+ position \d+: \w+ needs \w+"):
        validate(bad)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace(" STEP2", ""), "1 action\\(s\\) are not placed, e.g. STEP2"),
        (lambda t: t.replace("FWD1 ", "FWD1 FWD1 "), "FWD1 is placed twice"),
        (lambda t: t.replace("FWD1 ", "FWD1 FWD9 "), "FWD9 is not an action of this run"),
        (lambda t: t.replace("FWD1 ", "FWD1 GRAD_SYNC1 "), "GRAD_SYNC1 is not an action"),
        (lambda t: t.replace("rank 0 d2h", "rank 3 d2h"), "rank 3 is out of range"),
        (lambda t: t.replace("rank 0 d2h", "rank 0 tpu"), "unknown lane 'tpu'"),
        (lambda t: t.replace("FWD1 ", "FWD1 FOO1 "), "bad action 'FOO1'"),
        (lambda t: t.split("ranks")[0], "missing 'ranks' line: is the file truncated"),
        (lambda t: t.replace("semantics 0,0,1", "semantics 0,0"), "unknown semantics"),
    ],
)
def test_bad_schedules_name_the_problem(profile, edit, message):
    text = edit(family("sequential", profile, 1, 3).dumps())
    with pytest.raises(InputError, match=message):
        validate(Schedule.loads(text))


def test_every_op_of_every_batch_is_placed(profile):
    s = family("data_parallel", profile, 2, 5)
    placed = {a for _, _, _, a in s.actions()}
    assert placed == {Action(op, b) for b in range(5) for op in OPS}


def test_window_waits(profile):
    s = family("sequential", profile, 1, 5, prefetch=1)
    assert s.inflight == 2 and s.window_waits() == {(0, 2): 0, (0, 3): 1, (0, 4): 2}


def test_semantics_of_loaded_file_are_checked(profile):
    text = family("sequential", profile, 1, 3).dumps().replace("semantics 0,0,1", "semantics 0,0,2")
    with pytest.raises(InputError, match="claims the sequential family, which has semantics 0,0,1"):
        validate(Schedule.loads(text))
    with pytest.raises(InputError, match="not an action|not placed"):
        validate(Schedule.loads(text.replace("name sequential", "name mine")))


@pytest.mark.parametrize(
    "name,options",
    [
        ("sequential", {}),
        ("pipetgl", {}),
        ("pipetgl/rows", {}),
        ("data_parallel", {}),
        ("mspipe", {"k": 3}),
        ("disttgl", {"j": 2}),
    ],
)
def test_every_family_keeps_the_claim_of_its_name(profile, name, options):
    s = family(name, profile, 4, 8, **options)
    claim = claimed(s.name)
    assert claim is not None and claim.family == name.partition("/")[0]
    assert (claim.semantics, claim.n_ranks) == (s.semantics, s.n_ranks)
    assert claim.memory in (None, s.memory)
    validate(s)


def test_pipeline_names_claim_their_semantics(profile):
    s = pipeline(profile, 3, 6, Semantics(1, 2, 1), step_lag=1)
    assert claimed(s.name).semantics == Semantics(1, 2, 1) and claimed("my own") is None


def test_schedule_for_groups_places_grad_sync(profile):
    s = family("data_parallel", profile, 2, 4)
    assert Semantics(*s.semantics).g == 2
    assert Action("GRAD_SYNC", 3) in s.lanes[1, "net"]


def test_a_preset_on_the_semantics_line_is_read_on_the_file_s_ranks(profile):
    text = family("pipetgl", profile, 4, 8).dumps().replace("semantics 0,3,1", "semantics pipetgl")
    assert Schedule.loads(text).semantics == Semantics(0, 3, 1)
