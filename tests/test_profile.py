import dataclasses
import json

import pytest

from tgpipe.dag import CostProfile, builtin_profiles, load_profile
from tgpipe.errors import InputError


def test_builtin_profile_is_labelled_illustrative():
    assert "gpu-illustrative" in builtin_profiles()
    p = load_profile("gpu-illustrative")
    assert p.source == "illustrative" and "not measured" in p.device
    assert p.note


def test_round_trip(tmp_path):
    p = load_profile("gpu-illustrative")
    p.save(tmp_path / "p.json")
    assert CostProfile.load(tmp_path / "p.json") == p
    copies = dataclasses.replace(
        p,
        copy_bandwidth=2e9,
        jitter=1e-3,
        allreduce={2: 3e-3},
        allreduce_cpu={2: 1e-3},
        handoff_cpu=(3e-4, 4e-4),
    )
    copies.save(tmp_path / "c.json")
    assert CostProfile.load(tmp_path / "c.json") == copies
    assert copies.copy_time(1e6) == pytest.approx(5e-4) and p.copy_time(1e6) == 0.0


def test_transfer_and_allreduce(hand):
    p = hand({"GRAD_SYNC": 0.0}, {"GRAD_SYNC": 4000}, intra=(1e-3, 1000.0))
    assert p.transfer_time(500, inter=False) == pytest.approx(1e-3 + 0.5)
    assert p.cost("GRAD_SYNC", 1) == 0.0
    # ring all-reduce on 4 ranks: 6 messages of 1000 bytes, each 1 ms + 1 s
    assert p.cost("GRAD_SYNC", 4) == pytest.approx(6 * 1.001)
    # measured on 4 ranks of one machine: that, and the ring model elsewhere
    measured = dataclasses.replace(p, allreduce={4: 0.5})
    assert measured.cost("GRAD_SYNC", 4) == 0.5
    assert measured.cost("GRAD_SYNC", 4, inter=True) == p.cost("GRAD_SYNC", 4, inter=True)
    assert measured.cost("GRAD_SYNC", 2) == p.cost("GRAD_SYNC", 2)


def test_an_allreduce_uses_the_measured_share_of_a_cpu_ranks_core(hand):
    p = hand({"GRAD_SYNC": 0.0}, {"GRAD_SYNC": 4000}, intra=(1e-3, 1000.0))
    cpu = dataclasses.replace(p, compute="cpu", allreduce={2: 4e-3}, allreduce_cpu={2: 1e-3})
    assert cpu.allreduce_core(2) == pytest.approx(0.25)
    assert cpu.allreduce_core(2, inter=True) == 0.0  # measured on one machine only
    assert cpu.allreduce_core(4) == 0.0  # not measured on 4 ranks
    assert dataclasses.replace(cpu, compute="gpu").allreduce_core(2) == 0.0
    assert dataclasses.replace(cpu, allreduce_cpu={2: 9e-3}).allreduce_core(2) == 1.0


def test_edge_delay_rules(hand):
    p = hand(intra=(0.5, 100.0), inter=(1.0, 10.0))
    assert p.edge_delay("memory", 100, same_rank=True, same_machine=True) == 0.0
    assert p.edge_delay("memory", 100, False, True, "host") == 0.5  # token only
    assert p.edge_delay("memory", 100, False, True, "rows") == 1.5
    assert p.edge_delay("memory", 100, False, False, "host") == 11.0
    assert p.edge_delay("param", 100, False, True) == 1.5
    cpu = dataclasses.replace(p, compute="cpu", copy_bandwidth=200.0)  # shared slots: 2 copies
    assert cpu.edge_delay("param", 100, False, True, "host") == 0.5 + 2 * 0.5
    assert cpu.edge_delay("param", 100, False, True, "rows") == 1.5
    # the hand-off as measured (its own calls) instead of two copies at the copy speed
    handed = dataclasses.replace(p, compute="cpu", handoff_cpu=(0.25, 0.125))
    assert handed.edge_delay("param", 100, False, True, "host") == 0.5 + 0.25 + 0.125
    assert dataclasses.replace(cpu, handoff_cpu=handed.handoff_cpu).slot_handoff(100) == (
        0.25,
        0.5,
        0.125,
    )


def _bad(tmp_path, mutate):
    data = load_profile("gpu-illustrative").to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["ops"].update(FOO={"median": 1}), "unknown op 'FOO'"),
        (lambda d: d["ops"]["FWD"].update(median=-1), "ops.FWD.median must be >= 0"),
        (lambda d: d["ops"]["FWD"].pop("median"), "ops.FWD: missing field 'median'"),
        (lambda d: d["ops"].pop("BWD"), "missing cost of op 'BWD'"),
        (lambda d: d["ops"]["FWD"].update(median="fast"), "ops.FWD.median must be a finite number"),
        (lambda d: d["links"]["intra"].update(bandwidth=0), "links.intra.bandwidth must be > 0"),
        (lambda d: d.update(source="guessed"), "'source' must be one of measured, illustrative"),
        (lambda d: d.update(cpu_cores=0), "'cpu_cores' must be an integer >= 1"),
        (lambda d: d.pop("links"), "missing field 'links'"),
        (lambda d: d.update(copy_bandwidth=-1e9), "copy_bandwidth must be >= 0"),
        (lambda d: d.update(copy_bandwidth=None), "copy_bandwidth must be a finite number"),
        (lambda d: d.update(copy_bandwidth="fast"), "copy_bandwidth must be a finite number"),
        (lambda d: d.update(jitter=-0.1), "jitter must be >= 0"),
        (lambda d: d.update(allreduce={"1": 0.1}), "ranks must be a whole number >= 2"),
        (lambda d: d.update(allreduce={"2": 0}), r"allreduce.2 must be > 0"),
        (lambda d: d.update(allreduce=[2]), "allreduce must be an object of ranks"),
        (lambda d: d.update(allreduce_cpu={"2": -1}), r"allreduce_cpu.2 must be > 0"),
        (lambda d: d.update(allreduce_cpu=[2]), "allreduce_cpu must be an object of ranks"),
        (lambda d: d.update(allreduce_cpu={"2": 1e-3}), "an all-reduce on 2 ranks that 'all"),
        (lambda d: d.update(handoff_cpu=[1e-5]), r"handoff_cpu must be \[sender seconds"),
        (lambda d: d.update(handoff_cpu={"a": 1}), r"handoff_cpu must be \[sender seconds"),
        (lambda d: d.update(handoff_cpu=[1e-5, -1]), r"handoff_cpu\[1\] must be >= 0"),
    ],
)
def test_malformed_profile_names_field(tmp_path, mutate, message):
    with pytest.raises(InputError, match=message):
        CostProfile.load(_bad(tmp_path, mutate))


def test_unreadable_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        CostProfile.load(path)


def test_unknown_profile_lists_builtins():
    with pytest.raises(InputError, match="gpu-illustrative"):
        load_profile("no-such-profile")
