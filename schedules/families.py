"""The hand-written schedule families of the reference systems.

Each family is a function of (profile, n_ranks, n_batches, options) that returns a
`Schedule`; it states the semantics it computes and its docstring says what it gives up.
Batches run whole on one rank; the families differ in placement, in the order of each lane,
in the semantics, and in how memory moves between ranks (``memory``: ``host`` store or
``rows`` sent rank to rank over the ``net`` lane).

Lane order inside a rank, for its batches b_0, b_1, ... in order:

- ``cpu``: SAMPLE, one per batch;
- ``h2d``: FEAT runs `prefetch` batches ahead of MEM_FETCH; `fetch_first` puts each MEM_FETCH
  before the FEAT that overlaps it (memory chain first) rather than after (fetch late);
- ``gpu``: MEM_ROOT, MEM_SUPPORT, FWD, BWD, STEP of each batch;
- ``d2h``: MEM_WRITE; ``net``: GRAD_SYNC (synchronous groups), and with ``rows`` memory the
  MEM_FETCH / MEM_WRITE messages.

Examples
--------
>>> from tgpipe.dag import load_profile
>>> s = pipetgl(load_profile("gpu-illustrative"), 4, 8)
>>> s.semantics, s.lanes[1, "gpu"][:2]
(Semantics(s_mem=0, s_w=3, g=1), (MEM_ROOT1, MEM_SUPPORT1))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from tgpipe.dag.build import batch_ops
from tgpipe.dag.ops import OPS
from tgpipe.dag.profile import CostProfile
from tgpipe.dag.semantics import Semantics
from tgpipe.dag.semantics import data_parallel as dp_semantics
from tgpipe.dag.semantics import mspipe as mspipe_semantics
from tgpipe.dag.semantics import pipetgl as ring_semantics
from tgpipe.errors import InputError
from tgpipe.schedules.ir import Action, Schedule

__all__ = [
    "FAMILIES",
    "build_lanes",
    "data_parallel",
    "disttgl",
    "family",
    "mspipe",
    "pipeline",
    "pipetgl",
    "sequential",
]


def build_lanes(
    semantics: Semantics,
    n_batches: int,
    rank_of: Callable[[int], int],
    *,
    memory: str = "host",
    prefetch: int = 1,
    fetch_first: bool = True,
    support_first: bool = False,
    root_ahead: bool = False,
    step_lag: int = 0,
) -> dict[tuple[int, str], tuple[Action, ...]]:
    """Lane orders for batches placed by `rank_of`, as the module doc describes.

    On the gpu lane a batch is a head (MEM_ROOT, MEM_SUPPORT; `support_first` swaps them), a
    body (FWD, BWD) and its STEP. `root_ahead` runs the next batch's head before this body,
    so the memory chain moves on while this batch trains; `step_lag` puts each STEP after
    the body of the batch that many later, so the all-reduce or the weights' arrival overlaps
    training. Both need enough weight staleness; validation refuses what cannot run.
    """
    head = ["MEM_SUPPORT", "MEM_ROOT"] if support_first else ["MEM_ROOT", "MEM_SUPPORT"]
    gpu = [(op, 0) for op in head] + [("FWD", 1), ("BWD", 1), ("STEP", 2)]
    shift = {0: -int(root_ahead), 1: 0, 2: step_lag}
    lane_of = {op: OPS[op].lane for op in OPS}
    if memory == "rows":
        lane_of["MEM_FETCH"] = lane_of["MEM_WRITE"] = "net"
    others = [
        op
        for op in batch_ops(semantics)
        if op not in ("FEAT", "MEM_FETCH") and lane_of[op] != "gpu"
    ]
    batches: dict[int, list[int]] = defaultdict(list)
    for b in range(n_batches):
        batches[rank_of(b)].append(b)
    lanes: dict[tuple[int, str], list[Action]] = defaultdict(list)
    for rank, mine in batches.items():
        feats = [Action("FEAT", b) for b in mine]
        lanes[rank, lane_of["FEAT"]].extend(feats[:prefetch])
        gpu_keyed = []
        for k, b in enumerate(mine):
            pair = [("MEM_FETCH", b)] + [("FEAT", a.batch) for a in feats[k + prefetch :][:1]]
            for op, batch in pair if fetch_first else pair[::-1]:
                lanes[rank, lane_of[op]].append(Action(op, batch))
            for op in others:
                lanes[rank, lane_of[op]].append(Action(op, b))
            for i, (op, part) in enumerate(gpu):
                gpu_keyed.append(((k + shift[part], part, i), Action(op, b)))
        lanes[rank, "gpu"].extend(act for _, act in sorted(gpu_keyed))
    return {key: tuple(acts) for key, acts in lanes.items()}


def pipeline(
    profile: CostProfile,
    n_ranks: int,
    n_batches: int,
    semantics: Semantics,
    *,
    name: str | None = None,
    memory: str = "host",
    prefetch: int = 1,
    fetch_first: bool = True,
    support_first: bool = False,
    root_ahead: bool = False,
    step_lag: int = 0,
    gpus_per_machine: int | None = None,
) -> Schedule:
    """Any semantics on W ranks, batch b on rank b mod W, lanes ordered by `build_lanes`: the
    one builder behind every family, and the space that the search walks."""
    for label, value, low in (
        ("GPUs", n_ranks, 1),
        ("batches", n_batches, 1),
        ("prefetch", prefetch, 0),
        ("step lag", step_lag, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"number of {label} must be an integer >= {low}, got {value!r}")
    semantics.validate()
    lanes = build_lanes(
        semantics,
        n_batches,
        lambda b: b % n_ranks,
        memory=memory,
        prefetch=prefetch,
        fetch_first=fetch_first,
        support_first=support_first,
        root_ahead=root_ahead,
        step_lag=step_lag,
    )
    if name is None:
        s = semantics
        knobs = [memory, f"p={prefetch}"] + [
            text
            for on, text in (
                (not fetch_first, "late"),
                (support_first, "support"),
                (root_ahead, "ahead"),
                (step_lag, f"lag={step_lag}"),
            )
            if on
        ]
        name = f"pipeline(W={n_ranks},s=({s.s_mem},{s.s_w},{s.g}),{','.join(knobs)})"
    # the FEAT queued before a batch's late fetch belongs to a batch `prefetch` later, which
    # must be admitted while this batch's predecessor still runs: one more batch in flight;
    # a lagging step keeps that many more batches open on the rank
    inflight = prefetch + (1 if fetch_first else 2) + step_lag + int(root_ahead)
    return Schedule(
        name,
        semantics,
        n_ranks,
        n_batches,
        lanes,
        memory=memory,
        gpus_per_machine=gpus_per_machine,
        inflight=inflight,
    )


def sequential(
    profile: CostProfile, n_ranks: int = 1, n_batches: int = 100, *, prefetch: int = 1, **_
) -> Schedule:
    """Exact training on one GPU, the next batch's SAMPLE and FEAT prefetched (GNNFlow).

    Gives up: every other GPU. `n_ranks` is accepted for a uniform signature; one is used.
    """
    return pipeline(profile, 1, n_batches, Semantics(0, 0, 1), name="sequential", prefetch=prefetch)


def data_parallel(
    profile: CostProfile,
    n_ranks: int,
    n_batches: int,
    *,
    prefetch: int = 1,
    gpus_per_machine: int | None = None,
    **_,
) -> Schedule:
    """TGL / GNNFlow data parallelism: groups of W batches, one per rank, gradients
    all-reduced, one optimizer step per group.

    Gives up: the effective batch is W x 600 events (a group reads one memory version and
    shares one step), and every rank waits for the slowest at each all-reduce.
    """
    return pipeline(
        profile,
        n_ranks,
        n_batches,
        dp_semantics(n_ranks),
        name=f"data_parallel({n_ranks})",
        prefetch=prefetch,
        gpus_per_machine=gpus_per_machine,
    )


def pipetgl(
    profile: CostProfile,
    n_ranks: int,
    n_batches: int,
    *,
    memory: str = "host",
    prefetch: int = 1,
    gpus_per_machine: int | None = None,
    **_,
) -> Schedule:
    """PipeTGL ring: batch i on rank i mod W; memory and weights (with optimizer state) pass
    rank to rank; each rank runs the memory-critical part (MEM_FETCH, MEM_ROOT, MEM_WRITE)
    before its GNN forward and backward, and gathers features for the next batch meanwhile.

    ``memory="host"``: a token tells the next rank the rows are in the shared host store;
    ``memory="rows"``: the rows themselves travel over the ``net`` lane (several machines).

    Gives up: weights are W-1 steps stale (memory stays exact).
    """
    name = f"pipetgl({n_ranks})" + ("/rows" if memory == "rows" else "")
    return pipeline(
        profile,
        n_ranks,
        n_batches,
        ring_semantics(n_ranks),
        name=name,
        memory=memory,
        prefetch=prefetch,
        gpus_per_machine=gpus_per_machine,
    )


def mspipe(
    profile: CostProfile,
    n_ranks: int,
    n_batches: int,
    *,
    k: int = 2,
    prefetch: int = 2,
    gpus_per_machine: int | None = None,
    **_,
) -> Schedule:
    """MSPipe: data parallel groups whose five stages (sample, feature fetch, memory fetch,
    train, memory update) are pipelined; group G reads the memory left by group G-k, so the
    fetch need not wait for the previous group's update, and each MEM_FETCH is queued after
    the feature prefetch of a later batch (fetched late, but in time for training).

    Gives up: memory up to k-1 groups stale (exactly k-1 here: the store is versioned), and
    the data parallel group of W batches.
    """
    return pipeline(
        profile,
        n_ranks,
        n_batches,
        mspipe_semantics(n_ranks, k),
        name=f"mspipe({n_ranks},k={k})",
        prefetch=prefetch,
        fetch_first=False,
        gpus_per_machine=gpus_per_machine,
    )


def disttgl(
    profile: CostProfile,
    n_ranks: int,
    n_batches: int,
    *,
    i: int | None = None,
    j: int = 1,
    k: int = 1,
    prefetch: int = 1,
    gpus_per_machine: int | None = None,
    **_,
) -> Schedule:
    """DistTGL with mini-batch parallelism i and epoch parallelism j on W = i x j ranks.

    Mini-batch parallelism: i ranks train i consecutive batches as one synchronous group.
    Epoch parallelism: j such groups are in flight at once, each starting from weights j-1
    steps old, while a memory daemon serialises memory reads and writes in batch order.
    Semantics (0, j-1, i).

    Gives up: a larger temporal batch (i x 600) and j-1 steps of weight staleness. Memory
    parallelism (k > 1: cold-started memory copies on disjoint parts of the stream) is not
    modelled: no Semantics(s_mem, s_w, g) expresses it, so it is refused.
    """
    i = i or max(1, n_ranks // j)
    if k != 1:
        raise InputError("disttgl memory parallelism k > 1 is not modelled: use k=1")
    if i * j != n_ranks:
        raise InputError(f"disttgl needs i x j = GPUs: {i} x {j} != {n_ranks}")
    return pipeline(
        profile,
        n_ranks,
        n_batches,
        Semantics(0, j - 1, i),
        name=f"disttgl(i={i},j={j})",
        prefetch=prefetch,
        gpus_per_machine=gpus_per_machine,
    )


#: Family name -> function.
FAMILIES: dict[str, Callable[..., Schedule]] = {
    "sequential": sequential,
    "data_parallel": data_parallel,
    "pipetgl": pipetgl,
    "mspipe": mspipe,
    "disttgl": disttgl,
}


def family(name: str, profile: CostProfile, n_ranks: int, n_batches: int, **options) -> Schedule:
    """A family by name; ``pipetgl/rows`` selects the rows memory backend."""
    base, _, variant = name.partition("/")
    if base not in FAMILIES:
        raise InputError(
            f"unknown schedule family {name!r}: use one of {', '.join(FAMILIES)} "
            "(pipetgl/rows for memory rows sent rank to rank) or a schedule file"
        )
    if variant:
        if base != "pipetgl" or variant != "rows":
            raise InputError(f"unknown variant {name!r}: only pipetgl/rows exists")
        options["memory"] = "rows"
    return FAMILIES[base](profile, n_ranks, n_batches, **options)
