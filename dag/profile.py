"""Cost profiles: what each op and each link costs on some hardware.

A `CostProfile` is the simulator's only source of time. It holds, per op, the median cost of
one batch in seconds with its spread and the bytes the op moves; the latency and bandwidth of
the links between ranks on one machine (``intra``) and between machines (``inter``); the CPU
cores of a machine; and where the numbers came from: ``measured`` (written by ``tgpipe
profile`` on a named device) or ``illustrative`` (written by hand to look like published
breakdowns, never to be quoted as a measurement).

A profile is for one *workload* (`tgpipe.dag.ops.WORKLOADS`): ``mtgnn`` (the default: an op
costs the same for every batch) or ``snapshot`` (snapshots differ in size: an op costs its
``median`` plus ``per_vertex`` and ``per_edge`` seconds for each vertex and edge of the
snapshot, see `OpCost.seconds`; and each op states the shares of the GPU's compute and memory
bandwidth it uses alone, ``compute`` and ``memory``, which decide how two ops running at
once on one GPU slow each other, see `tgpipe.simulator.contention`).

``copy_bandwidth`` (optional; bytes per second) is how fast a rank copies its own memory
(`copy_time`): what stale weights may cost a rank, where it copies a learner or loads a
version's weights into a model (`tgpipe.executor.weight_plan`; a PipeTGL ring does neither),
and what a learner handed to a rank of the same machine costs (a copy into shared memory
and one out: `slots`). Absent or 0: such copies are free (the built-in GPU profiles: device
copies, small beside the ops).

``handoff_cpu`` (optional; [sender's, receiver's] seconds) is what one learner handed on
through the slots between two CPU ranks of a machine (a copy in, a token, a copy out) costs
the cores of its two ends, as measured by ``tgpipe profile`` with the runtime's own calls
(each rank's sender and receiver threads run on its core beside its ops). It replaces the two
copies at ``copy_bandwidth`` in `slot_handoff`. The memory tokens need no such number: a
measured profile times the ops of several ranks in data parallel, whose tokens it holds.

``allreduce`` (optional; ranks -> seconds) is GRAD_SYNC's whole all-reduce as measured on
that many ranks of one machine (`tgpipe profile`): where it is known, `cost` takes it
instead of the ring model of the link (gloo's all-reduce on CPUs reduces and copies besides
sending, which the link model does not see).

``allreduce_cpu`` (optional; ranks -> seconds) is what that all-reduce costs a CPU rank's
core: how much longer an op that computes on the rank's core beside it takes, as measured by
``tgpipe profile`` (gloo's threads, and GRAD_SYNC's own flatten and split, run there). Where
a step lags behind its batch's all-reduce, the next batch's ops overlap that all-reduce; the
simulator spreads these seconds over the all-reduce's time and slows the ops that overlap it
by that share of the core (`allreduce_core`; not in a snapshot epoch, whose one all-reduce
ends it).

``jitter`` (optional; seconds) is how much one batch's ops on one rank vary from one run of
them to the next (a standard deviation): two ranks that compute the same batch at once
differ by that much. A synchronous group waits for its slowest member, and the slowest of k
is later than a typical one (`tgpipe.simulator.sim`). Absent or 0: no such wait.

Examples
--------
>>> p = load_profile("gpu-illustrative")
>>> p.source
'illustrative'
>>> round(p.transfer_time(2e9, inter=False), 3)  # 2 GB over the intra-machine link
0.1
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tgpipe.dag.ops import WORKLOADS
from tgpipe.errors import InputError
from tgpipe.files import atomic_write

__all__ = [
    "COMPUTE",
    "SOURCES",
    "CostProfile",
    "Link",
    "OpCost",
    "builtin_profiles",
    "load_profile",
]

#: Where a profile's numbers come from.
SOURCES = ("measured", "illustrative")
#: What runs a rank's ops: a GPU (with its copy engines beside it), or the rank's own CPU
#: process, which runs one op at a time (one torch thread, and Python's lock between ops).
COMPUTE = ("gpu", "cpu")

#: Largest cost of one op for one batch, and largest latency: a day. More is a unit mistake
#: (milliseconds written as seconds...), and sums of such numbers overflow to infinity.
MAX_SECONDS = 86_400.0
#: Largest bytes one op moves per batch (a pebibyte), smallest bandwidth (a byte a second):
#: any message then takes a finite time.
MAX_BYTES = 2**50
MIN_BANDWIDTH = 1.0

#: What to do about a profile file that does not load.
_FIX = "fix the file or use a built-in profile (see 'tgpipe profiles')"


#: Ops that cost the same for every batch (the weights, not the batch, set their work).
_SAME_EVERY_BATCH = ("GRAD_SYNC", "STEP")


@dataclass(frozen=True)
class OpCost:
    """Cost of one op for one batch: median and spread (median absolute deviation) in
    seconds, and bytes moved (0 for pure compute). Snapshot workloads add seconds per vertex
    and per edge of a snapshot, and the op's shares of the GPU's compute and memory bandwidth
    when it runs alone."""

    median: float
    spread: float = 0.0
    bytes: int = 0
    per_vertex: float = 0.0
    per_edge: float = 0.0
    compute: float = 1.0
    memory: float = 1.0

    def seconds(self, vertices: float = 0, edges: float = 0) -> float:
        """The op's cost on a snapshot (or a part of one) of that many vertices and edges."""
        return self.median + self.per_vertex * vertices + self.per_edge * edges


@dataclass(frozen=True)
class Link:
    """A link between two ranks: one message costs latency + bytes / bandwidth."""

    latency: float  #: seconds
    bandwidth: float  #: bytes per second

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


@dataclass(frozen=True)
class CostProfile:
    """Per-op costs, links and machine facts (see module doc)."""

    name: str
    source: str
    device: str
    ops: dict[str, OpCost]
    intra: Link
    inter: Link
    cpu_cores: int
    batch_size: int = 600
    note: str = ""
    meta: dict = field(default_factory=dict)
    compute: str = "gpu"  #: one of COMPUTE
    workload: str = "mtgnn"  #: one of tgpipe.dag.ops.WORKLOADS
    #: per training batch, its ops' time over the sum of their medians (empty: all alike);
    #: batch b of a run costs `cost` times batch_scale[b % len]: see `batch_cost`
    batch_scale: tuple[float, ...] = ()
    #: bytes per second a rank copies its own memory at (0: copies are free; module doc)
    copy_bandwidth: float = 0.0
    #: standard deviation of one batch's ops on one rank, run to run (0: none; module doc)
    jitter: float = 0.0
    #: ranks of one machine -> seconds of GRAD_SYNC's whole all-reduce there, as measured
    allreduce: dict[int, float] = field(default_factory=dict)
    #: ranks of one machine -> seconds that all-reduce costs an op beside it (module doc)
    allreduce_cpu: dict[int, float] = field(default_factory=dict)
    #: (sender's, receiver's) core seconds of a learner handed on, as measured (module doc)
    handoff_cpu: tuple[float, ...] = ()

    # ---- costs: the one place where an op's time is decided --------------------------------
    def cost(self, op: str, n_ranks: int = 1, inter: bool = False) -> float:
        """Seconds that `op` holds its resources for one batch on `n_ranks` ranks.

        GRAD_SYNC is a ring all-reduce of its bytes: as measured on that many ranks of one
        machine where the profile has it (`allreduce`), else its median (local overhead)
        plus 2 (W-1) messages of bytes / W each over the slowest link in play.
        """
        entry = self.ops[op]
        if op != "GRAD_SYNC" or n_ranks <= 1:
            return entry.median
        if not inter and n_ranks in self.allreduce:
            return self.allreduce[n_ranks]
        link = self.inter if inter else self.intra
        steps = 2 * (n_ranks - 1)
        return entry.median + steps * link.time(entry.bytes / n_ranks)

    def batch_cost(self, op: str, batch: int, n_ranks: int = 1, inter: bool = False) -> float:
        """`cost` of `op` for that batch: batches differ (a batch late in an epoch samples
        more neighbours than an early one), and a synchronous group waits for its slowest
        member, so the simulator costs each batch as measured. GRAD_SYNC and STEP move and
        step the same weights for every batch."""
        base = self.cost(op, n_ranks, inter)
        if not self.batch_scale or op in _SAME_EVERY_BATCH:
            return base
        return base * self.batch_scale[batch % len(self.batch_scale)]

    def allreduce_core(self, n_ranks: int, inter: bool = False) -> float:
        """The share of a CPU rank's core that its all-reduce on `n_ranks` ranks of one
        machine uses while it runs (`allreduce_cpu` over its seconds, at most all of it); 0
        on GPUs, across machines and where unmeasured."""
        cpu = self.allreduce_cpu.get(n_ranks)
        if self.compute != "cpu" or inter or cpu is None:
            return 0.0
        return min(1.0, cpu / self.cost("GRAD_SYNC", n_ranks))

    def copy_time(self, nbytes: float) -> float:
        """A rank copying `nbytes` of its own memory (a packed learner, a model's weights)."""
        return nbytes / self.copy_bandwidth if self.copy_bandwidth else 0.0

    def transfer_time(self, nbytes: float, inter: bool) -> float:
        """One message of `nbytes` between two ranks, on one machine or across machines."""
        return (self.inter if inter else self.intra).time(nbytes)

    def edge_delay(
        self,
        kind: str,
        nbytes: float,
        same_rank: bool,
        same_machine: bool,
        memory: str = "host",
        machines: int = 1,
    ) -> float:
        """Delay of a DAG edge whose two ends ran where stated, in a run on `machines`.

        Same rank: nothing moves. A ``memory`` edge with the ``host`` memory backend between
        ranks of one machine passes only a token (latency): the rows already sit in shared
        host memory. A ``param`` edge that goes through the learner slots (`slots`) is
        copied in and out again: latency and the two ends' parts (`slot_handoff`). Every
        other cross-rank edge sends its bytes over the link.
        """
        if same_rank:
            return 0.0
        if kind == "param" and self.slots(memory, machines):
            return sum(self.slot_handoff(nbytes))
        if kind == "memory" and memory == "host" and same_machine:
            nbytes = 0
        return self.transfer_time(nbytes, inter=not same_machine)

    def slot_handoff(self, nbytes: float) -> tuple[float, float, float]:
        """A learner of `nbytes` handed on through the slots, in its three parts: the
        sender's copy in (once, for every peer), the token's latency, a peer's copy out;
        the sender's and the peer's parts as measured where the profile has them
        (`handoff_cpu`, for its learner: a param edge always carries STEP's bytes)."""
        if self.handoff_cpu:
            send, receive = self.handoff_cpu
            return send, self.intra.latency, receive
        copy = self.copy_time(nbytes)
        return copy, self.intra.latency, copy

    def slots(self, memory: str, machines: int) -> bool:
        """Whether a run hands packed learners between ranks through shared memory
        (`tgpipe.executor.shared_weights`: the runtime does where its node memory is shared,
        every rank on one machine), with a cost to charge for it (measured profiles: the
        copy speed, or the hand-off's own `handoff_cpu`)."""
        measured = self.copy_bandwidth or self.handoff_cpu
        return memory == "host" and machines == 1 and bool(measured)

    # ---- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "device": self.device,
            "note": self.note,
            "batch_size": self.batch_size,
            "cpu_cores": self.cpu_cores,
            "compute": self.compute,
            **({"workload": self.workload} if self.workload != "mtgnn" else {}),
            **({"batch_scale": list(self.batch_scale)} if self.batch_scale else {}),
            **({"copy_bandwidth": self.copy_bandwidth} if self.copy_bandwidth else {}),
            **({"jitter": self.jitter} if self.jitter else {}),
            **({"handoff_cpu": list(self.handoff_cpu)} if self.handoff_cpu else {}),
            **(
                {"allreduce": {str(k): v for k, v in self.allreduce.items()}}
                if self.allreduce
                else {}
            ),
            **(
                {"allreduce_cpu": {str(k): v for k, v in self.allreduce_cpu.items()}}
                if self.allreduce_cpu
                else {}
            ),
            "ops": {op: _op_dict(c, self.workload) for op, c in self.ops.items()},
            "links": {
                "intra": {"latency": self.intra.latency, "bandwidth": self.intra.bandwidth},
                "inter": {"latency": self.inter.latency, "bandwidth": self.inter.bandwidth},
            },
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def from_dict(data: object, where: str = "profile") -> CostProfile:
        """Check every field; a problem raises InputError naming the field."""
        return _parse(data, where)

    @staticmethod
    def load(path: str | os.PathLike) -> CostProfile:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(
                f"cannot read profile {path}: {exc.strerror}; check the path"
            ) from None
        except UnicodeDecodeError:
            raise InputError(f"profile {path} is not a text file; {_FIX}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"profile {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}); {_FIX}"
            ) from None
        return _parse(data, str(path))


_SCALED = ("per_vertex", "per_edge", "compute", "memory")  #: snapshot workloads only


def _op_dict(c: OpCost, workload: str) -> dict:
    out = {"median": c.median, "spread": c.spread, "bytes": c.bytes}
    return out | ({k: getattr(c, k) for k in _SCALED} if workload == "snapshot" else {})


def _number(
    value: object,
    where: str,
    *,
    positive: bool = False,
    least: float = 0.0,
    most: float = math.inf,
    unit: str = "",
) -> float:
    """A finite number of `unit` in [least, most] (> 0 if `positive`), else InputError
    naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(
            f"{where} must be a finite number{f' ({unit})' if unit else ''}, got {value!r}"
        )
    if value < 0 or (positive and value == 0):
        raise InputError(f"{where} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    if value < least:
        raise InputError(f"{where} must be at least {least:g} {unit}, got {value!r}")
    if value > most:
        raise InputError(
            f"{where} is {value:g}, more than the most that makes sense ({most:g} {unit}); "
            "is it in another unit?"
        )
    return float(value)


def _field(data: dict, key: str, where: str) -> object:
    if key not in data:
        raise InputError(f"{where}: missing field {key!r}; add it")
    return data[key]


def _parse(data: object, where: str) -> CostProfile:
    if not isinstance(data, dict):
        raise InputError(
            f"{where}: expected a JSON object (a profile), got {type(data).__name__}; {_FIX}"
        )
    source = _field(data, "source", where)
    if source not in SOURCES:
        raise InputError(
            f"{where}: field 'source' must be one of {', '.join(SOURCES)}, got {source!r}"
        )
    workload = data.get("workload", "mtgnn")
    if workload not in WORKLOADS:
        raise InputError(
            f"{where}: field 'workload' must be one of {', '.join(WORKLOADS)}, got {workload!r}"
        )
    catalog = WORKLOADS[workload]
    ops_in = _field(data, "ops", where)
    if not isinstance(ops_in, dict):
        raise InputError(f"{where}: field 'ops' must be an object of op -> cost")
    unknown = sorted(set(ops_in) - set(catalog))
    if unknown:
        raise InputError(
            f"{where}: unknown op {unknown[0]!r} in 'ops': expected {', '.join(catalog)}"
        )
    ops = {}
    for op in catalog:
        if op not in ops_in:
            raise InputError(
                f"{where}: missing cost of op {op!r} in 'ops'; add it (median seconds per batch)"
            )
        entry = ops_in[op]
        if not isinstance(entry, dict):
            raise InputError(f"{where}: ops.{op} must be an object with median, spread, bytes")
        at = f"{where}: ops.{op}"
        median = _number(_field(entry, "median", at), f"{at}.median", most=MAX_SECONDS, unit="s")
        spread = _number(entry.get("spread", 0.0), f"{at}.spread", most=MAX_SECONDS, unit="s")
        nbytes = _number(entry.get("bytes", 0), f"{at}.bytes", most=MAX_BYTES, unit="bytes")
        if nbytes != int(nbytes):
            raise InputError(f"{at}.bytes must be a whole number of bytes, got {nbytes:g}")
        scaled = {}
        if workload == "snapshot":
            for key in ("per_vertex", "per_edge"):
                scaled[key] = _number(entry.get(key, 0.0), f"{at}.{key}", most=1.0, unit="s")
            for key in ("compute", "memory"):
                share = entry.get(key, 1.0)
                scaled[key] = _number(share, f"{at}.{key}", positive=True, most=1.0, unit="share")
        ops[op] = OpCost(median, spread, int(nbytes), **scaled)
    links_in = _field(data, "links", where)
    if not isinstance(links_in, dict):
        raise InputError(f"{where}: field 'links' must be an object with 'intra' and 'inter'")
    links = {}
    for name in ("intra", "inter"):
        link = _field(links_in, name, f"{where}: links")
        if not isinstance(link, dict):
            raise InputError(f"{where}: links.{name} must be an object with latency, bandwidth")
        at = f"{where}: links.{name}"
        lat = _number(_field(link, "latency", at), f"{at}.latency", most=MAX_SECONDS, unit="s")
        bw = _number(
            _field(link, "bandwidth", at),
            f"{at}.bandwidth",
            positive=True,
            least=MIN_BANDWIDTH,
            unit="bytes/s",
        )
        links[name] = Link(lat, bw)
    cores = _field(data, "cpu_cores", where)
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise InputError(f"{where}: field 'cpu_cores' must be an integer >= 1, got {cores!r}")
    batch = data.get("batch_size", 600)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"{where}: field 'batch_size' must be an integer >= 1, got {batch!r}")
    for key in ("name", "device", "note"):
        if not isinstance(data.get(key, ""), str):
            raise InputError(f"{where}: field {key!r} must be a string")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError(f"{where}: field 'meta' must be an object")
    compute = data.get("compute", "gpu")
    if compute not in COMPUTE:
        raise InputError(
            f"{where}: field 'compute' must be one of {', '.join(COMPUTE)}, got {compute!r}"
        )
    scale = data.get("batch_scale", [])
    if not isinstance(scale, list):
        raise InputError(f"{where}: field 'batch_scale' must be a list of numbers > 0")
    for k, x in enumerate(scale):
        _number(x, f"{where}: batch_scale[{k}]", positive=True, most=1e3, unit="x")
    copy = _number(data.get("copy_bandwidth", 0.0), f"{where}: copy_bandwidth", unit="bytes/s")
    if 0 < copy < MIN_BANDWIDTH:
        raise InputError(f"{where}: copy_bandwidth must be 0 (none) or at least {MIN_BANDWIDTH:g}")
    allreduce = _allreduce(data.get("allreduce", {}), where)
    beside = _allreduce(data.get("allreduce_cpu", {}), where, "allreduce_cpu")
    unmeasured = sorted(beside.keys() - allreduce.keys())
    if unmeasured:
        k = unmeasured[0]
        raise InputError(
            f"{where}: allreduce_cpu.{k} is for an all-reduce on {k} ranks that 'allreduce' "
            "does not have; measure both with 'tgpipe profile', or remove it"
        )
    return CostProfile(
        name=data.get("name", "") or Path(where).stem,
        source=source,
        device=data.get("device", ""),
        ops=ops,
        intra=links["intra"],
        inter=links["inter"],
        cpu_cores=cores,
        batch_size=batch,
        note=data.get("note", ""),
        meta=meta,
        compute=compute,
        workload=workload,
        batch_scale=tuple(float(x) for x in scale),
        copy_bandwidth=float(copy),
        jitter=_number(data.get("jitter", 0.0), f"{where}: jitter", most=MAX_SECONDS, unit="s"),
        allreduce=allreduce,
        allreduce_cpu=beside,
        handoff_cpu=_handoff_cpu(data.get("handoff_cpu", []), where),
    )


def _allreduce(value: object, where: str, key: str = "allreduce") -> dict[int, float]:
    """The ``allreduce`` (or ``allreduce_cpu``) field: ranks (>= 2) -> measured seconds."""
    at = f"{where}: {key}"
    if not isinstance(value, dict):
        raise InputError(f'{at} must be an object of ranks -> seconds, like {{"2": 0.003}}')
    found = {}
    for key, seconds in value.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) >= 2):
            raise InputError(f"{at}: ranks must be a whole number >= 2, got {key!r}")
        found[int(key)] = _number(seconds, f"{at}.{key}", positive=True, most=MAX_SECONDS, unit="s")
    return found


def _handoff_cpu(value: object, where: str) -> tuple[float, ...]:
    """The ``handoff_cpu`` field: [sender's, receiver's] seconds, or [] (unmeasured)."""
    at = f"{where}: handoff_cpu"
    if not isinstance(value, list) or len(value) not in (0, 2):
        raise InputError(f"{at} must be [sender seconds, receiver seconds], like [2e-4, 3e-4]")
    return tuple(_number(x, f"{at}[{k}]", most=MAX_SECONDS, unit="s") for k, x in enumerate(value))


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with tgpipe."""
    folder = resources.files("tgpipe.dag") / "profiles"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | os.PathLike) -> CostProfile:
    """A built-in profile by name, or a profile JSON file by path."""
    text = str(name_or_path)
    if text in builtin_profiles():
        entry = resources.files("tgpipe.dag") / "profiles" / f"{text}.json"
        return _parse(json.loads(entry.read_text()), text)
    path = Path(text)
    if not path.exists():
        raise InputError(
            f"no profile {text!r}: give a JSON file or one of the built-in "
            f"profiles {', '.join(builtin_profiles())}"
        )
    return CostProfile.load(path)
