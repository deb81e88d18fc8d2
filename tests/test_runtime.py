"""The runtime, checked number for number against the reference trainer.

Each test starts real ranks (separate processes on gloo, as `tgpipe run` or torchrun starts
them) on a slice of the real data, and compares what every rank ends with (node memory,
mailbox, weights, Adam moments and step count, per-batch losses) with the reference trainer
run under the schedule's semantics, with either node memory backend: the machine's shared
store, or a replica per rank with the rows sent between ranks.
"""

import dataclasses
import subprocess
import sys

import pytest
import torch

from tgpipe.dag.profile import load_profile
from tgpipe.dag.semantics import Semantics
from tgpipe.errors import InputError
from tgpipe.executor.data import load_dataset
from tgpipe.executor.launch import free_port
from tgpipe.executor.reference import train
from tgpipe.executor.runtime import lower
from tgpipe.executor.stream import TRAIN, Stream
from tgpipe.executor.weight_plan import WeightPlan
from tgpipe.schedules.families import family, pipeline

EVENTS, BATCH = 3000, 300
TOLERANCE = 1e-5
GPU_TOLERANCE = 1e-4  #: a GPU's sums (atomic adds) come in no fixed order, run to run


def _args(data, schedule, dump, epochs=1, memory="auto"):
    return [
        "run",
        "--schedule",
        schedule,
        "--data",
        str(data),
        "--limit-events",
        str(EVENTS),
        "--batch-size",
        str(BATCH),
        "--epochs",
        str(epochs),
        "--no-evaluate",
        "--timeout",
        "30",
        "--dump",
        str(dump),
        "--memory",
        memory,
    ]


def _batches(data) -> tuple[object, int]:
    graph = load_dataset(data).slice(0, EVENTS)
    return graph, Stream(graph, BATCH).n_batches(TRAIN)


def _check(data, name, ranks, dump, epochs=1, device="cpu"):
    """Every rank that ran a batch ends where the reference trainer ends."""
    _, n = _batches(data)
    options = {"k": 2} if name == "mspipe" else {}
    schedule = family(name, load_profile("gpu-illustrative"), ranks, n, **options)
    _check_schedule(data, schedule, dump, epochs, device)


def _check_schedule(data, schedule, dump, epochs=1, device="cpu"):
    graph, n = _batches(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same sums in the same order
    try:
        ref = train(
            graph,
            schedule.semantics,
            batch_size=BATCH,
            epochs=epochs,
            evaluate=False,
            device=device,
        )
    finally:
        torch.set_num_threads(threads)
    tolerance = TOLERANCE if device == "cpu" else GPU_TOLERANCE
    dumped = {r: torch.load(f"{dump}.rank{r}") for r in lower(schedule)}
    assert set(dumped) == set(range(schedule.n_ranks))
    assert dumped[0]["losses"] is not None
    assert len(dumped[0]["losses"]) == epochs
    for mine, theirs in zip(dumped[0]["losses"], ref.losses, strict=True):
        assert len(mine) == len(theirs) == n
        assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) <= tolerance
    for rank, state in dumped.items():
        for column, (a, b) in zip(
            "mem mem_ts mail mail_ts".split(),
            zip(state["table"], ref.store.table, strict=True),
            strict=True,
        ):
            assert (a.double() - b.double().cpu()).abs().max() <= tolerance, (rank, column)
        learner = state["learner"]
        assert learner[-1] == ref.learner.steps == epochs * -(-n // schedule.semantics.g)
        assert (learner - ref.learner.pack().cpu()).abs().max() <= tolerance, rank


@pytest.mark.parametrize(
    "name, epochs, memory",
    [
        ("sequential", 1, "auto"),
        ("pipetgl", 2, "rows"),
        ("pipetgl", 2, "shared"),
        ("data_parallel", 1, "auto"),
        ("mspipe", 1, "rows"),
        ("mspipe", 1, "shared"),
    ],
)
def test_two_ranks_equal_the_reference(wikipedia_csv, tmp_path, name, epochs, memory):
    dump = tmp_path / "state"
    cmd = [
        sys.executable,
        "-m",
        "tgpipe",
        *_args(wikipedia_csv, name, dump, epochs, memory),
        "--nproc",
        "2",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"epoch {epochs - 1}:" in run.stdout
    assert f"memory {'shared' if memory == 'auto' else memory}" in run.stdout  # one machine
    _check(wikipedia_csv, name, 1 if name == "sequential" else 2, dump, epochs)


@pytest.mark.parametrize(
    "name, ranks, memory",
    [("sequential", 1, "auto"), ("pipetgl", 2, "shared"), ("pipetgl", 2, "rows")]
    + [("data_parallel", 2, "auto"), ("mspipe", 2, "shared")],
)
def test_gpu_ranks_equal_the_reference(wikipedia_csv, tmp_path, name, ranks, memory):
    """--device cuda: a CUDA stream per lane, NCCL all-reduce, one GPU per rank."""
    if torch.cuda.device_count() < ranks:
        pytest.skip(f"needs {ranks} CUDA GPU(s), this machine has {torch.cuda.device_count()}")
    dump = tmp_path / "state"
    args = [*_args(wikipedia_csv, name, dump, 2, memory), "--nproc", str(ranks)]
    cmd = [sys.executable, "-m", "tgpipe", *args, "--device", "cuda"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    _check(wikipedia_csv, name, ranks, dump, epochs=2, device="cuda")


@pytest.mark.parametrize(
    "ranks, semantics", [(2, Semantics(0, 2, 1)), (1, Semantics(0, 1, 1)), (3, Semantics(0, 1, 2))]
)
def test_weight_copies_equal_the_reference(wikipedia_csv, tmp_path, ranks, semantics):
    """Schedules whose ranks copy weights (`WeightPlan`): on 2 ranks with s_w = 2 a batch
    computes with a version its rank did not make (a load) and a STEP takes over a learner
    that a load still reads (a copy); on 1 rank with s_w = 1 a STEP keeps its result while
    the next STEP changes the learner in place (a copy); on 3 ranks in groups of 2, all of
    these beside adopted and shared learners. The ring adopts and shares."""
    _, n = _batches(wikipedia_csv)
    schedule = pipeline(load_profile("gpu-illustrative"), ranks, n, semantics)
    loads, takeover_copies, put_copies = WeightPlan.of(schedule).copies()
    assert loads and (takeover_copies if ranks > 1 else put_copies)
    path, dump = tmp_path / "s.txt", tmp_path / "state"
    schedule.save(path)
    cmd = [sys.executable, "-m", "tgpipe", *_args(wikipedia_csv, str(path), dump, 2)]
    run = subprocess.run([*cmd, "--nproc", str(ranks)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    _check_schedule(wikipedia_csv, schedule, dump, epochs=2)


def test_two_machines_on_loopback_equal_the_reference(wikipedia_csv, tmp_path):
    """torchrun --nnodes 2: two launchers, one rank each; memory rows travel between them."""
    dump = tmp_path / "state"
    port = free_port()
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "tgpipe",
                *_args(wikipedia_csv, "pipetgl", dump),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in launchers]
    finally:
        for p in launchers:
            p.kill()
    for p, (_, err) in zip(launchers, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert "memory rows" in outputs[0][0]  # auto: the ranks are on two machines
    _check(wikipedia_csv, "pipetgl", 2, dump)


def test_a_ranks_all_reduces_must_run_on_one_lane_in_group_order():
    """Ranks call a process group's collectives in one order: two lanes' order is nobody's."""
    schedule = family("data_parallel", load_profile("gpu-illustrative"), 2, 6)
    lower(schedule)  # the family's all-reduces: one lane, in order
    (key,) = [
        k
        for k, acts in schedule.lanes.items()
        if k[0] == 0 and any(a.op == "GRAD_SYNC" for a in acts)
    ]
    syncs = schedule.lanes[key]
    moved = {**schedule.lanes, key: syncs[:-1], (0, "spare"): syncs[-1:]}
    with pytest.raises(InputError, match="rank 0 runs GRAD_SYNC on lanes .*one lane"):
        lower(dataclasses.replace(schedule, lanes=moved))
    grad = [i for i, a in enumerate(syncs) if a.op == "GRAD_SYNC"]
    swapped = list(syncs)
    swapped[grad[0]], swapped[grad[1]] = swapped[grad[1]], swapped[grad[0]]
    out_of_order = r"rank 0 runs GRAD_SYNC out of batch order \(2 before 0\)"
    with pytest.raises(InputError, match=out_of_order):
        lower(dataclasses.replace(schedule, lanes={**schedule.lanes, key: tuple(swapped)}))
