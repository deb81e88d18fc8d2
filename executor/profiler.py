"""Measuring a `CostProfile`: every op of real training batches, and the links between ranks.

The simulator is only as true as its profile. This module times the very functions that
training runs (`tgpipe.executor.ops.OP_FUNCS`, called by the reference trainer and the
runtime), on real batches of the user's data in training order: sequential training, one
batch after another, a new epoch (zero memory, the weights going on) when the training part
ends. The first `warmup` batches are not counted (allocator, caches, the sampler's first
neighbours); of the others each op gets its median and its spread, the median absolute
deviation, both in seconds. On a GPU each op is timed between two synchronizations, so that
its kernels are counted in it and not in the next op. On a CPU ``tgpipe profile`` keeps the
seconds that the runtime itself takes for the ops instead (a batch's ops cost 4-13 % more
there than in this loop: `tgpipe.executor.runtime_timing` says why), and this loop's
GRAD_SYNC, bytes, gradients and copy rate.

Bytes are what `CostProfile` says they are, the data an op moves, for the ops the catalog
marks as moving data (`Op.moves_bytes`): FEAT the tensors it puts on the device, MEM_FETCH
the memory rows it reads, MEM_WRITE the memory rows it writes (what a memory edge carries),
GRAD_SYNC the gradients it all-reduces, STEP the packed weights with their optimizer state
(what a param edge carries in a weight ring). The median over the measured batches is kept.

GRAD_SYNC's median is its local overhead only (flatten, all-reduce on a group of one rank,
divide, split): on other shapes of machine `CostProfile.cost` adds the ring all-reduce's
messages from the link. The whole all-reduce on all ranks is timed too (`time_collective`):
the profile keeps it as the all-reduce's cost on these ranks (``allreduce``), and in meta
beside what the link model predicts. On CPU ranks it is also timed beside an op
(`time_beside`): gloo's threads and GRAD_SYNC's own flatten and split run on the rank's
core, and an op computing meanwhile takes longer (``allreduce_cpu``).

The copy bandwidth (`copy_rate`) is the learner packed and unpacked again, timed after the
ops from cold caches: what a rank pays where it copies weights (`tgpipe.executor.weight_plan`),
beside the link.

What a learner handed on between two CPU ranks of a machine costs their cores
(`time_handoff`): the runtime's sender and receiver threads run on a rank's core beside its
ops, so the simulator charges each end's CPU seconds to the op running there
(`CostProfile.handoff_cpu`).

A link is measured by ping-pong: the leader sends a message, the peer sends it back. The
latency is half the median round trip of small messages; the bandwidth is what makes
``latency + bytes / bandwidth`` equal half the median round trip of large ones, so the
`Link` reproduces both measurements.

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> from tgpipe.executor.model import TGNConfig
>>> from tgpipe.executor.stream import Stream
>>> g = TemporalGraph(np.arange(200) % 7, 7 + np.arange(200) % 5, np.arange(200.0))
>>> m = measure_ops(Stream(g, 20), TGNConfig(memory_dim=8, time_dim=4, embed_dim=8), 2, 5)
>>> all(min(m.seconds[op]) > 0 for op in OPS), m.bytes["MEM_WRITE"] == m.bytes["MEM_FETCH"]
(True, True)
>>> m.copy_bandwidth > 1e6  # bytes/s
True
>>> link = link_from([2e-4, 2e-4, 3e-4], [0.0202] * 3, 10**7)[0]
>>> round(link.latency, 6), round(link.bandwidth / 1e9, 3)  # seconds, GB/s
(0.0001, 1.0)
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist

from tgpipe.dag.ops import OPS
from tgpipe.dag.profile import Link
from tgpipe.dag.semantics import Semantics
from tgpipe.executor.learner import Learner
from tgpipe.executor.memory import MemoryRows, MemoryStore
from tgpipe.executor.model import TGNConfig, build_model
from tgpipe.executor.ops import OP_FUNCS, BatchState, Worker, grad_sync, open_batch
from tgpipe.executor.stream import TRAIN, Stream
from tgpipe.progress import Progress

__all__ = [
    "OpSamples",
    "allreduce_call",
    "clock",
    "device_name",
    "link_from",
    "measure_link",
    "measure_links",
    "measure_loopback",
    "measure_ops",
    "median_spread",
    "nbytes",
    "ping_pong",
    "time_beside",
    "time_collective",
    "time_handoff",
]

#: Ping-pong messages: a small one for the latency, a large one for the bandwidth (larger on
#: a GPU, whose links move 16 MiB in microseconds).
SMALL_BYTES = 8
LARGE_BYTES = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}
#: Round trips (after 10 % more, not counted, to warm the connection up).
SMALL_ROUNDS, LARGE_ROUNDS = 200, 10


def median_spread(samples: Iterable[float]) -> tuple[float, float]:
    """Median and median absolute deviation: robust to the odd slow run (a GC pause, a
    neighbour process), unlike a mean and a standard deviation."""
    values = list(samples)
    mid = statistics.median(values)
    return mid, statistics.median(abs(v - mid) for v in values)


def nbytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes held by some tensors (None counts nothing)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def clock(device: torch.device) -> Callable[[], float]:
    """A clock in seconds that first waits for the device's queued work (on a GPU)."""
    if device.type != "cuda":
        return time.perf_counter

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


class _MeteredStore(MemoryStore):
    """A memory store that remembers the bytes of the rows its last write took."""

    written = 0

    def write(self, batch: int, nodes, rows: MemoryRows) -> None:
        super().write(batch, nodes, rows)
        self.written = nbytes(rows)


#: Bytes each data-moving op moved, from the batch's state after the op (see module doc).
_MOVED: dict[str, Callable[[BatchState, Worker], int]] = {
    "FEAT": lambda s, w: nbytes(
        getattr(s, f.name) for f in fields(BatchState) if f.name.startswith("x_")
    ),
    "MEM_FETCH": lambda s, w: nbytes(s.root_rows),
    "MEM_WRITE": lambda s, w: w.store.written,
    "GRAD_SYNC": lambda s, w: nbytes(s.grads),
    "STEP": lambda s, w: nbytes([w.learner.pack()]),
}


@dataclass
class OpSamples:
    """What `measure_ops` saw: seconds per op and measured batch, bytes per op (median)."""

    seconds: dict[str, list[float]]
    bytes: dict[str, int]
    batches: list[tuple[int, int]]  #: (epoch, batch) of each measured batch
    grads: list[torch.Tensor] = field(repr=False)  #: the last batch's gradients
    copy_bandwidth: float = 0.0  #: bytes/s of packing and unpacking the learner

    def costs(self) -> dict[str, tuple[float, float, int]]:
        """op -> (median, spread, bytes)."""
        return {op: (*median_spread(s), self.bytes[op]) for op, s in self.seconds.items()}

    def jitter(self) -> float:
        """The standard deviation of one batch's ops (GRAD_SYNC and STEP aside) between
        runs of the same batch: pooled over the batches measured more than once (on several
        ranks at once, or in several epochs); 0 where none was."""
        variances = [statistics.variance(ts) for ts in self._totals().values() if len(ts) > 1]
        return math.sqrt(statistics.fmean(variances)) if variances else 0.0

    def _totals(self) -> dict[int, list[float]]:
        """Training batch -> the sums of its ops (GRAD_SYNC and STEP aside), one per time
        it was measured (`batches`: the batch of each sample)."""
        per = [op for op in self.seconds if op not in ("GRAD_SYNC", "STEP")]
        totals: dict[int, list[float]] = {}
        columns = zip(*(self.seconds[op] for op in per), strict=True)
        for (_, batch), total in zip(self.batches, map(sum, columns), strict=True):
            totals.setdefault(batch, []).append(total)
        return totals

    def batch_scale(self, n_batches: int) -> tuple[float, ...]:
        """Per training batch, its ops' mean time over the sum of the ops' medians (what
        the profile says a batch costs), so that the medians times the scale give each
        batch's time; GRAD_SYNC and STEP aside (the same for every batch); 1.0 for a batch
        never measured."""
        per = [op for op in self.seconds if op not in ("GRAD_SYNC", "STEP")]
        typical = sum(statistics.median(self.seconds[op]) for op in per)
        means = {b: statistics.fmean(ts) / typical for b, ts in self._totals().items()}
        return tuple(means.get(b, 1.0) for b in range(n_batches))


def measure_ops(
    stream: Stream,
    config: TGNConfig,
    warmup: int,
    repeat: int,
    *,
    group=None,
    progress: Progress | None = None,
) -> OpSamples:
    """Time every catalog op on `warmup` + `repeat` training batches of `stream`, in order.

    GRAD_SYNC runs on `group` (a torch.distributed group of this rank alone, for its local
    overhead; None outside torch.distributed, where the op does nothing).
    """
    model = build_model(config, stream.edge_dim, stream.node_dim, stream.seed).to(stream.device)
    learner = Learner(model, config.lr)
    store = _MeteredStore(stream.graph.n_nodes, config.memory_dim, model.mail_dim, stream.device)
    worker = Worker(stream, store, learner, group=group)
    now = clock(stream.device)
    n = stream.n_batches(TRAIN)
    seconds: dict[str, list[float]] = {op: [] for op in OPS}
    moved: dict[str, list[int]] = {op: [] for op in _MOVED}
    batches = []
    state = None
    for k in range(warmup + repeat):
        epoch, batch = divmod(k, n)
        if batch == 0:
            store.reset()
        state = open_batch(stream, batch, epoch=epoch, semantics=Semantics())
        for op in OPS:
            start = now()
            OP_FUNCS[op](state, worker)
            took = now() - start
            if k >= warmup:
                seconds[op].append(took)
                if op in _MOVED:
                    moved[op].append(_MOVED[op](state, worker))
        if k >= warmup:
            batches.append((epoch, batch))
        store.prune(store.version)
        if progress:
            progress.update(note="warm-up" if k < warmup else "")
    sizes = {op: int(statistics.median(moved[op])) if op in moved else 0 for op in OPS}
    copy = copy_rate(learner, now, repeat)
    return OpSamples(seconds, sizes, batches, state.grads, copy)


#: Bytes written between two rounds of `copy_rate`: more than a CPU's last-level cache.
FLUSH_BYTES = 64 * 2**20


def copy_rate(learner: Learner, now: Callable[[], float], repeat: int) -> float:
    """Bytes per second of copying a learner: `Learner.pack` then `Learner.unpack` (two
    copies of the packed bytes), median over `repeat` rounds, each from cold caches (a
    copied learner mostly comes from another process)."""
    flush = torch.empty(FLUSH_BYTES // 4, device=learner.params[0].device)
    rounds = []
    for _ in range(max(repeat, 3)):
        flush.fill_(1.0)
        start = now()
        packed = learner.pack()
        learner.unpack(packed)
        rounds.append(now() - start)
    return 2 * packed.numel() * packed.element_size() / statistics.median(rounds)


def allreduce_call(grads: list[torch.Tensor], stream: Stream, group=None) -> Callable[[], None]:
    """GRAD_SYNC of `grads` over `group`, as the runtime calls it, to time
    (`time_collective`, `time_beside`)."""
    state = open_batch(stream, 0)  # a holder: the op reads and replaces only its grads

    def sync() -> None:
        state.grads = grads
        grad_sync(state, group)

    return sync


def time_beside(
    call: Callable[[], object],
    seconds: float,
    repeat: int,
    barrier: Callable[[], object] = dist.barrier,
) -> float:
    """What `call` (a collective of all ranks, every one of which calls this too), run on a
    thread of its own as the runtime's ``net`` lane runs GRAD_SYNC, costs an op that
    computes on this CPU rank's core meanwhile: the median, over `repeat` pairs after a
    tenth more uncounted, of the op's seconds beside it less its seconds alone. The op (a
    matrix product, over and over) lasts about twice `seconds`, the collective's own, so
    that all of the collective falls in it; the two of a pair follow each other, so that
    the machine's drift cancels; a `barrier` before each starts the ranks together. At
    least 0."""
    a = torch.rand(160, 160)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    products = max(1, math.ceil(2 * seconds / ((time.perf_counter() - start) / 10)))

    def op() -> float:
        start = time.perf_counter()
        for _ in range(products):
            a @ a
        return time.perf_counter() - start

    warmup = max(1, repeat // 10)
    slower = []
    with ThreadPoolExecutor(1) as lane:
        for k in range(warmup + repeat):
            barrier()
            alone = op()
            barrier()
            done = lane.submit(call)
            beside = op()
            done.result()
            if k >= warmup:
                slower.append(beside - alone)
    return max(0.0, statistics.median(slower))


def time_collective(
    call: Callable[[], object], warmup: int, repeat: int, device: torch.device, group=None
) -> list[float]:
    """Seconds of `call` (a collective over `group`, every rank of which calls this too),
    `repeat` times after `warmup`, each started together after a barrier."""
    now = clock(device)
    times = []
    for k in range(warmup + repeat):
        dist.barrier(group=group)
        start = now()
        call()
        if k >= warmup:
            times.append(now() - start)
    return times


def time_handoff(size: int, repeat: int, kv) -> tuple[float, float]:
    """What one learner of `size` numbers handed on from rank 0 to rank 1 of this machine
    through `SharedSlots` costs each end's core, with the runtime's own calls
    (`tgpipe.executor.rank`: the copy in and the token; the token received and the copy
    out): the CPU seconds of its whole process (gloo's own threads included), median of
    `repeat` after a tenth more uncounted. Every rank calls it (the others join the
    barriers; `kv`: the run's key-value store, for the slots' file) and gets (rank 0's, rank
    1's). A barrier between hand-offs keeps each one alone: no wait for a slot, no other
    hand-off's work in its seconds."""
    from tgpipe.executor.shared_store import open_run_file
    from tgpipe.executor.shared_weights import SharedSlots

    rank, world = dist.get_rank(), dist.get_world_size()
    fd = open_run_file(kv, rank, dist.barrier, "weights")
    slots = SharedSlots(fd, size=size, world=world, rank=rank)
    packed = torch.rand(size)

    def publish(k: int) -> None:
        slot = slots.publish(epoch=0, version=k + 1, packed=packed, peers=[1])
        dist.isend(torch.tensor([slot]), 1, tag=k).wait()

    def take(k: int) -> None:
        slot = torch.empty(1, dtype=torch.int64)
        dist.recv(slot, 0, tag=k)
        slots.take(epoch=0, version=k + 1, sender=0, slot=int(slot))

    warmup = max(1, repeat // 10)
    seconds = []
    try:
        for k in range(warmup + repeat):
            dist.barrier()
            start = time.process_time()
            if rank < 2:
                (publish, take)[rank](k)
            seconds.append(time.process_time() - start)
    finally:
        os.close(fd)
    ends = [None] * world
    dist.all_gather_object(ends, statistics.median(seconds[warmup:]))
    return ends[0], ends[1]


def ping_pong(
    send: Callable[[torch.Tensor], None],
    recv: Callable[[torch.Tensor], None],
    size: int,
    rounds: int,
    *,
    lead: bool,
    device: torch.device,
) -> list[float]:
    """Round-trip seconds of `rounds` messages of `size` bytes, after 10 % more uncounted.

    The leader sends and then receives; its peer (``lead=False``, same arguments) receives
    and sends back. Only the leader's list has times.
    """
    buf = torch.zeros(size, dtype=torch.uint8, device=device)
    now = clock(device)
    warm = max(1, rounds // 10)
    times = []
    for k in range(warm + rounds):
        if lead:
            start = now()
            send(buf)
            recv(buf)
            if k >= warm:
                times.append(now() - start)
        else:
            recv(buf)
            send(buf)
    return times


def link_from(small: list[float], large: list[float], large_bytes: int) -> tuple[Link, dict]:
    """The `Link` of some round trips of small and of `large_bytes` messages, and its
    details for the profile's meta (spreads, message sizes)."""
    latency, latency_spread = median_spread(t / 2 for t in small)
    one_way, one_way_spread = median_spread(t / 2 for t in large)
    transfer = one_way - latency
    if transfer <= 0:  # noise larger than the transfer: count the whole trip as transfer
        transfer = one_way
    detail = {
        "latency_spread": latency_spread,
        "large_message_bytes": large_bytes,
        "large_one_way": one_way,
        "large_one_way_spread": one_way_spread,
        "round_trips": [len(small), len(large)],
    }
    return Link(latency, large_bytes / transfer), detail


def measure_link(
    send: Callable[[torch.Tensor], None],
    recv: Callable[[torch.Tensor], None],
    *,
    lead: bool,
    device: torch.device,
) -> tuple[Link, dict] | None:
    """Both ping-pongs over one pair of send/recv; the `Link` on the leader, None on the peer."""
    large_bytes = LARGE_BYTES[device.type]
    small = ping_pong(send, recv, SMALL_BYTES, SMALL_ROUNDS, lead=lead, device=device)
    large = ping_pong(send, recv, large_bytes, LARGE_ROUNDS, lead=lead, device=device)
    return link_from(small, large, large_bytes) if lead else None


def measure_loopback() -> tuple[Link, dict]:
    """The link that one rank alone can measure: TCP on 127.0.0.1 to an echo thread of this
    process, the transport that gloo's ranks on one machine use, without gloo's overhead."""
    cpu = torch.device("cpu")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        client = stack.enter_context(socket.create_connection(server.getsockname()))
        peer = stack.enter_context(server.accept()[0])
        for s in (client, peer):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        echo = threading.Thread(
            target=measure_link,
            args=(_sender(peer), _receiver(peer)),
            kwargs={"lead": False, "device": cpu},
            daemon=True,
        )
        echo.start()
        result = measure_link(_sender(client), _receiver(client), lead=True, device=cpu)
        echo.join()
    return result


def _sender(sock: socket.socket) -> Callable[[torch.Tensor], None]:
    return lambda buf: sock.sendall(buf.numpy())


def _receiver(sock: socket.socket) -> Callable[[torch.Tensor], None]:
    def recv(buf: torch.Tensor) -> None:
        view = memoryview(buf.numpy())
        while len(view):
            got = sock.recv_into(view)
            if not got:
                raise ConnectionError("the loopback peer closed the connection")
            view = view[got:]

    return recv


def measure_links(nodes: list[int], device: torch.device) -> dict[str, tuple[Link, dict]] | None:
    """The ``intra`` and ``inter`` links, seen from rank 0; every rank calls it.

    `nodes` holds each rank's machine (torchrun's GROUP_RANK). Rank 0 ping-pongs with the
    first other rank on its machine (intra) and the first rank on another machine (inter),
    over torch.distributed. Without such a rank, intra is the TCP loopback of rank 0
    (`measure_loopback`) and inter is intra. Rank 0 gets ``name -> (Link, detail)``, the
    others None.
    """
    rank, backend = dist.get_rank(), dist.get_backend()
    peers = {
        "intra": next((r for r in range(1, len(nodes)) if nodes[r] == nodes[0]), None),
        "inter": next((r for r in range(1, len(nodes)) if nodes[r] != nodes[0]), None),
    }
    found: dict[str, tuple[Link, dict]] = {}
    for name, peer in peers.items():
        if peer is None:
            continue
        if rank in (0, peer):
            other = peer if rank == 0 else 0
            measured = measure_link(
                lambda buf, o=other: dist.send(buf, o),
                lambda buf, o=other: dist.recv(buf, o),
                lead=rank == 0,
                device=device,
            )
            if measured:
                how = f"ping-pong of rank 0 with rank {peer} over {backend}"
                found[name] = (measured[0], {"how": how, **measured[1]})
        dist.barrier()
    if rank != 0:
        return None
    if "intra" not in found:
        link, detail = measure_loopback()
        how = "no other rank on this machine: TCP loopback ping-pong inside rank 0"
        found["intra"] = (link, {"how": how, **detail})
    if "inter" not in found:
        found["inter"] = (found["intra"][0], {"how": "same as intra: no rank on another machine"})
    return {name: found[name] for name in ("intra", "inter")}


def device_name(device: torch.device) -> str:
    """What the costs were measured on: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "cpu"
