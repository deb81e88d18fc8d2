"""Measuring a snapshot `CostProfile`: each op's fixed cost and its cost per vertex and edge.

A snapshot schedule is only as good as its idea of what each snapshot costs, and snapshots
differ by orders of magnitude (quiet days, busy days). One number per op, as for M-TGNN's
equal batches, cannot say that a busy day's aggregation takes ten times a quiet day's; the
snapshot profile's model can: an op on a snapshot of V active vertices and E edges costs
``median + per_vertex * V + per_edge * E`` seconds (`tgpipe.dag.profile.OpCost.seconds`).
This module measures those three numbers instead of guessing them.

`measure_snapshot_ops` trains as the reference trainer does
(`tgpipe.executor.snapshot_reference`): the very op functions of
`tgpipe.executor.snapshot_model`, over every training position of a real sequence, in
position order, one epoch after the other (`warmup` epochs first, not counted), each
forward op and BWD timed alone (between two synchronisations on a GPU), GRAD_SYNC and STEP
once an epoch. Each rank of `tgpipe profile` does so at once, as ranks compete for a
machine in a run. Then, per op, `fit_costs` fits the three coefficients by non-negative
least squares (`nnls`: a cost is never negative, nor does it shrink with size) to the median
seconds of each position over the repeats and ranks, and reports how well the line fits:
R^2 and the median and largest relative error over the positions, kept in the profile's
meta with the measured medians, so that anyone can check the model against its data. Where
the snapshots' vertices and edges grow together (daily snapshots of one data set often do:
meta ``vertex_edge_correlation`` near 1), the data cannot tell a cost per vertex from a cost
per edge; the fit then predicts snapshots shaped like the measured ones, not others.

GRAD_SYNC's median is its local overhead only, on a group of this one rank, where the
function returns at once; its ``bytes`` are the gradients, and `CostProfile.cost` adds the
ring all-reduce's messages from the link on other machines, as for M-TGNN; the whole
all-reduce on all ranks is timed too and kept as its cost on these ranks (``allreduce``).
STEP: one Adam step's median, its bytes the packed learner (weights and Adam moments).
LOAD is timed with the preparation of its inputs (`open_snapshot`: normalised adjacency,
targets, negatives; numpy on the host), as the runtime's LOAD does both; meta
``snapshots.open_snapshot`` says how much of it that is. LOAD's bytes are the median bytes
it puts on the device, RNN's the hidden rows it reads and writes; AGG, DENSE and BWD move
none.

Shares of the GPU (``compute``, ``memory``): on a CPU a rank runs one op at a time, so they
stay 1.0. On a GPU, `gpu_shares` estimates an op's memory share from the bytes it touches
(twice the bytes the caching allocator hands out during the op: each output written once and
read once) over its time and the peak bandwidth of a large device-to-device copy
(`device_bandwidth`), and its compute share as the rest, bounded to (0, 1]. That GPU branch is
a rough estimate and untested here (no GPU where it was written).

Examples
--------
A fit recovers the line a cost follows, and says how well it fits:

>>> import numpy as np
>>> sizes = [(100, 400), (300, 900), (50, 60), (800, 3000), (200, 100)]
>>> times = [[2e-4 + 1e-6 * v + 5e-8 * e] * 3 for v, e in sizes]
>>> fit = fit_costs(sizes, times)
>>> [round(x, 9) for x in (fit.median, fit.per_vertex, fit.per_edge)], round(fit.r2, 6)
([0.0002, 1e-06, 5e-08], 1.0)

Non-negative: a cost that falls with size is fitted by a constant, never a negative slope:

>>> nnls(np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]), np.array([3.0, 2.0, 1.0]))
array([2., 0.])

A real (tiny) sequence, measured on this CPU:

>>> from tgpipe.executor.snapshots import skewed_sequence
>>> from tgpipe.executor.snapshot_model import SnapshotConfig
>>> seq = skewed_sequence(8, n_nodes=60, mean_edges=50, seed=0)
>>> s = measure_snapshot_ops(seq, SnapshotConfig(in_dim=8, hidden_dim=8), 2, 1, 2)
>>> len(s.sizes), len(s.seconds["AGG"][0]), len(s.seconds["STEP"][0])  # positions, samples
(5, 2, 2)
>>> s.bytes["GRAD_SYNC"] > 0 and s.bytes["STEP"] > s.bytes["GRAD_SYNC"]
True
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tgpipe.dag.ops import SNAPSHOT_OPS
from tgpipe.dag.profile import CostProfile, Link, OpCost
from tgpipe.dag.snapshot import GPU_OPS, OP_ORDER, UNIT_OPS
from tgpipe.errors import InputError
from tgpipe.executor.learner import Learner
from tgpipe.executor.profiler import clock, median_spread, nbytes
from tgpipe.executor.snapshot_model import (
    OP_FUNCS,
    Hidden,
    SnapshotConfig,
    build_snapshot_model,
    bwd,
    grad_sync,
    open_snapshot,
    phase_steps,
    step,
    zero_grads,
)
from tgpipe.executor.snapshots import SnapshotSequence
from tgpipe.executor.stream import TRAIN
from tgpipe.progress import Progress

__all__ = [
    "EPOCH_OPS",
    "MIN_POSITIONS",
    "Fit",
    "SnapshotSamples",
    "check_sequence",
    "device_bandwidth",
    "fit_costs",
    "gpu_shares",
    "measure_snapshot_ops",
    "nnls",
    "relative_errors",
    "snapshot_profile",
    "vertex_edge_correlation",
]

#: Ops that run once an epoch (not once a snapshot): their cost is a median, not a line.
EPOCH_OPS = ("GRAD_SYNC", "STEP")
#: Training positions needed to fit three coefficients.
MIN_POSITIONS = 3
#: Bounds of an estimated GPU share: a share must be in (0, 1].
_LEAST_SHARE = 0.01


def check_sequence(seq: SnapshotSequence) -> range:
    """The training positions of `seq`; InputError when too few to fit a cost line."""
    train = phase_steps(seq)[TRAIN]
    if len(train) < MIN_POSITIONS:
        raise InputError(
            f"{seq.name} has {len(seq)} snapshot(s), {len(train)} training position(s); "
            f"fitting a cost per vertex and per edge needs at least {MIN_POSITIONS}: use more "
            "data, a shorter --period, or more snapshots (skewed:N)"
        )
    return train


# ---- measuring ----------------------------------------------------------------------------
@dataclass
class SnapshotSamples:
    """What `measure_snapshot_ops` saw.

    ``seconds[op][i]``: the seconds of each measured run of a unit op on training position
    i (of size ``sizes[i]``); for GRAD_SYNC and STEP one list, ``seconds[op][0]``, a sample
    per epoch. ``allocated`` (GPU only): bytes the allocator gave out in each of those runs.
    """

    positions: list[int]  #: the training positions, in order
    sizes: list[tuple[int, int]]  #: (active vertices, edges) of each position's snapshot
    seconds: dict[str, list[list[float]]]
    bytes: dict[str, int]  #: bytes each op moves (see module doc), a median
    allocated: dict[str, list[list[int]]] = field(default_factory=dict)
    opened: list[float] = field(default_factory=list)  #: seconds of open_snapshot (numpy)
    grads: list[torch.Tensor] = field(default_factory=list, repr=False)

    def pool(self, other: SnapshotSamples) -> None:
        """Add another rank's samples of the same positions to these."""
        for mine, theirs in ((self.seconds, other.seconds), (self.allocated, other.allocated)):
            for op, lists in theirs.items():
                for kept, more in zip(mine[op], lists, strict=True):
                    kept.extend(more)
        self.opened.extend(other.opened)

    def portable(self) -> SnapshotSamples:
        """These samples without the gradient tensors: what a rank sends to rank 0."""
        return SnapshotSamples(
            self.positions, self.sizes, self.seconds, self.bytes, self.allocated, self.opened
        )


def _allocated(device: torch.device) -> int:
    """Bytes the CUDA caching allocator has handed out so far (0 off a GPU)."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(device).get("allocated_bytes.all.allocated", 0))


def measure_snapshot_ops(
    seq: SnapshotSequence,
    config: SnapshotConfig,
    group_size: int,
    warmup: int,
    repeat: int,
    *,
    order: str = "agg_first",
    device: torch.device | str = "cpu",
    group=None,
    progress: Progress | None = None,
) -> SnapshotSamples:
    """Time every op over `warmup` + `repeat` training epochs of `seq` (see module doc).

    GRAD_SYNC runs on `group` (a torch.distributed group of this rank alone, for its local
    overhead; None outside torch.distributed, where the op returns its input).
    """
    device = torch.device(device)
    positions = list(check_sequence(seq))
    model = build_snapshot_model(seq.n_nodes, config, seq.node_dim).to(device)
    learner = Learner(model, config.lr)
    hidden = Hidden(seq.n_nodes, config.hidden_dim, device)
    now = clock(device)
    n = len(positions)
    seconds: dict[str, list[list[float]]] = {op: [[] for _ in range(n)] for op in UNIT_OPS}
    seconds |= {op: [[]] for op in EPOCH_OPS}
    allocated: dict[str, list[list[int]]] = {}
    if device.type == "cuda":
        allocated = {op: [list() for _ in lists] for op, lists in seconds.items()}
    moved: dict[str, list[int]] = {"LOAD": [], "RNN": []}
    opened: list[float] = []
    grads: list[torch.Tensor] = []

    def timed(op: str, slot: int, counted: bool, fn, *args) -> object:
        before, start = _allocated(device), now()
        out = fn(*args)
        took = now() - start
        if counted:
            seconds[op][slot].append(took)
            if allocated:
                allocated[op][slot].append(_allocated(device) - before)
        return out

    for epoch in range(warmup + repeat):
        counted = epoch >= warmup
        grads = zero_grads(model)
        for i, t in enumerate(positions):
            start = now()
            state = open_snapshot(
                seq, t, group_size=group_size, epoch=epoch, order=order, device=device
            )
            if counted:
                opened.append(now() - start)
            for op in OP_ORDER[order]:
                timed(op, i, counted, OP_FUNCS[op], state, model, hidden, seq)
            if counted:  # LOAD prepares its inputs too, in the runtime as here
                seconds["LOAD"][i][-1] += opened[-1]
            timed("BWD", i, counted, bwd, state, model, grads)
            if counted:
                moved["LOAD"].append(nbytes(v for k, v in vars(state).items() if k[:2] == "x_"))
                moved["RNN"].append(2 * nbytes([state.h]))  # rows read, then written
            if progress:
                progress.update(note="warm-up" if not counted else "")
        synced = timed("GRAD_SYNC", 0, counted, grad_sync, grads, group)
        timed("STEP", 0, counted, step, learner, synced)
    sizes = [(seq[t].n_vertices, seq[t].n_edges) for t in positions]
    moves = {op: int(statistics.median(v)) if v else 0 for op, v in moved.items()}
    moves |= {"GRAD_SYNC": nbytes(grads), "STEP": nbytes([learner.pack()])}
    every = {op: moves.get(op, 0) for op in SNAPSHOT_OPS}
    return SnapshotSamples(positions, sizes, seconds, every, allocated, opened, grads)


# ---- fitting ------------------------------------------------------------------------------
def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising ||a x - b||, for a few columns: least squares on every subset of
    the columns, the best of the solutions with no negative entry. The optimum is the least
    squares solution on its own support, so the search is exact (2^columns solves).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    cols = a.shape[1]
    if cols > 12:
        raise ValueError(f"nnls: {cols} columns are too many to search every subset")
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    scaled = a / scale  # columns of like size: a better-conditioned solve
    best, best_error = np.zeros(cols), float(np.sum(b**2))
    for k in range(1, cols + 1):
        for support in itertools.combinations(range(cols), k):
            sub = list(support)
            x_sub = np.linalg.lstsq(scaled[:, sub], b, rcond=None)[0]
            if np.any(x_sub < 0):
                continue
            x = np.zeros(cols)
            x[sub] = x_sub
            error = float(np.sum((scaled @ x - b) ** 2))
            if error < best_error - 1e-15 * max(best_error, 1e-300):
                best, best_error = x, error
    return best / scale


@dataclass(frozen=True)
class Fit:
    """A fitted cost line and how well it fits the positions' medians."""

    median: float  #: seconds of a snapshot with no vertex and no edge
    per_vertex: float
    per_edge: float
    spread: float  #: median |sample - line| over every sample, seconds
    r2: float | None  #: of the medians (None: they do not vary)
    median_relative_error: float  #: median over positions of |line - median| / median
    max_relative_error: float
    points: int  #: positions fitted

    def seconds(self, vertices: float, edges: float) -> float:
        """The line at that size: `OpCost.seconds`, the one definition of it."""
        line = OpCost(self.median, per_vertex=self.per_vertex, per_edge=self.per_edge)
        return line.seconds(vertices, edges)

    def quality(self) -> dict:
        """The fit's quality, for a profile's meta."""
        r2 = None if self.r2 is None else round(self.r2, 6)
        return {
            "r2": r2,
            "median_relative_error": round(self.median_relative_error, 6),
            "max_relative_error": round(self.max_relative_error, 6),
            "points": self.points,
        }


def fit_costs(sizes: Sequence[tuple[float, float]], samples: Sequence[Sequence[float]]) -> Fit:
    """seconds = median + per_vertex * V + per_edge * E, fitted by `nnls` to each size's
    median sample (robust to the odd slow run), with its quality (see `Fit`)."""
    if len(sizes) != len(samples) or not sizes or any(len(s) == 0 for s in samples):
        raise ValueError("fit_costs: one non-empty list of samples per size")
    size = np.asarray(sizes, dtype=float).reshape(-1, 2)
    y = np.array([statistics.median(s) for s in samples])
    a = np.column_stack([np.ones(len(y)), size])
    coef = nnls(a, y)
    line = a @ coef
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum((y - line) ** 2))
    r2 = 1.0 - residual / total if total > 0 else None
    relative = np.abs(line - y) / np.where(y > 0, y, np.inf)
    spread = statistics.median(abs(v - p) for p, s in zip(line, samples, strict=True) for v in s)
    return Fit(
        float(coef[0]),
        float(coef[1]),
        float(coef[2]),
        float(spread),
        r2,
        float(np.median(relative)),
        float(np.max(relative)),
        len(y),
    )


# ---- GPU shares (untested: no GPU where this was written) ---------------------------------
def device_bandwidth(device: torch.device, size: int = 256 * 2**20, rounds: int = 10) -> float:
    """Peak memory bandwidth of `device` in bytes/s: a large tensor copied to another, each
    byte read once and written once (median of `rounds` copies after one)."""
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    now = clock(device)
    times = []
    for k in range(rounds + 1):
        start = now()
        dst.copy_(src)
        if k:
            times.append(now() - start)
    return 2 * size / statistics.median(times)


def gpu_shares(seconds: list[float], allocated: list[int], bandwidth: float) -> tuple[float, float]:
    """(compute, memory) shares of a GPU op that ran `seconds` and had `allocated` bytes
    handed out (UNTESTED, see module doc): memory = touched bytes / (time * bandwidth),
    touched = 2 * allocated; compute = the rest; each bounded to (0, 1]."""
    shares = [2 * b / (s * bandwidth) for s, b in zip(seconds, allocated, strict=True) if s > 0]
    memory = min(1.0, max(_LEAST_SHARE, statistics.median(shares) if shares else 1.0))
    return max(_LEAST_SHARE, 1.0 - memory), memory


# ---- the profile ----------------------------------------------------------------------------
def snapshot_profile(
    samples: SnapshotSamples,
    intra: Link,
    inter: Link,
    *,
    name: str,
    device: str,
    compute: str,
    cpu_cores: int,
    note: str = "",
    meta: dict | None = None,
    bandwidth: float | None = None,
) -> CostProfile:
    """The measured snapshot `CostProfile` of some (pooled) samples: a fitted line per unit
    op, a median per epoch op; shares 1.0, or estimated from `bandwidth` on a GPU. `meta`
    gets the fits' quality and the measured medians (``snapshots``)."""
    ops, fits = {}, {}
    for op in SNAPSHOT_OPS:
        shares = {}
        if compute == "gpu" and bandwidth and op in GPU_OPS and op in samples.allocated:
            flat = [x for s in samples.seconds[op] for x in s]
            alloc = [x for s in samples.allocated[op] for x in s]
            c, m = gpu_shares(flat, alloc, bandwidth)
            shares = {"compute": c, "memory": m}
        if op in EPOCH_OPS:
            median, spread = median_spread(samples.seconds[op][0])
            ops[op] = OpCost(median, spread, samples.bytes[op], **shares)
            continue
        fit = fits[op] = fit_costs(samples.sizes, samples.seconds[op])
        ops[op] = OpCost(
            fit.median,
            fit.spread,
            samples.bytes[op],
            per_vertex=fit.per_vertex,
            per_edge=fit.per_edge,
            **shares,
        )
    meta = dict(meta or {})
    meta["fit"] = {op: f.quality() for op, f in fits.items()}
    meta["snapshots"] = {
        "positions": samples.positions,
        "sizes": [list(s) for s in samples.sizes],
        "vertex_edge_correlation": vertex_edge_correlation(samples.sizes),
        "medians": {op: [statistics.median(s) for s in samples.seconds[op]] for op in UNIT_OPS},
        "open_snapshot": median_spread(samples.opened)[0] if samples.opened else 0.0,
    }
    if bandwidth:
        meta["device_bandwidth"] = bandwidth
    return CostProfile(
        name=name,
        source="measured",
        device=device,
        ops=ops,
        intra=intra,
        inter=inter,
        cpu_cores=cpu_cores,
        batch_size=1,
        note=note,
        meta=meta,
        compute=compute,
        workload="snapshot",
    )


def vertex_edge_correlation(sizes: Sequence[tuple[float, float]]) -> float | None:
    """Pearson correlation of the snapshots' vertices and edges (None: one does not vary).
    Near 1, the data cannot tell a cost per vertex from a cost per edge: the fit splits
    their sum between the two as it may, right for snapshots shaped like these only."""
    v, e = np.asarray(sizes, dtype=float).reshape(-1, 2).T
    if len(v) < 2 or v.std() == 0 or e.std() == 0:
        return None
    return round(float(np.corrcoef(v, e)[0, 1]), 6)


def relative_errors(profile: CostProfile) -> dict[str, list[float]]:
    """|predicted - measured| / measured per unit op and measured position, from the
    medians a measured snapshot profile keeps in its meta."""
    snaps = profile.meta["snapshots"]
    return {
        op: [
            abs(profile.ops[op].seconds(v, e) - m) / m
            for (v, e), m in zip(snaps["sizes"], snaps["medians"][op], strict=True)
        ]
        for op in UNIT_OPS
    }
