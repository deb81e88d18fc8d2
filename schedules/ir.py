"""The schedule IR: every DAG node on a rank and a lane, in order.

A *lane* is a queue that runs one action at a time (``gpu``, ``h2d``, ``d2h``, ``cpu``,
``net``); the lanes of one rank run concurrently, like CUDA streams and worker threads. A
`Schedule` maps each (rank, lane) to an ordered tuple of `Action` s, and states the semantics
it claims, how memory moves between ranks, the machine shape and the prefetch window
(``inflight``: at most that many batches in flight on a rank; batch k of a rank starts only
when its batch k - inflight has finished there).

A schedule saves to a text file with one row per rank and lane, so a person can read and
edit it::

    # tgpipe schedule
    name sequential
    semantics 0,0,1
    ranks 1
    batches 2
    rank 0 gpu: MEM_ROOT0 MEM_SUPPORT0 FWD0 BWD0 STEP0 MEM_ROOT1 ...

`validate` finds, before any run, an action that is missing, placed twice, unknown, or whose
dependencies can never be met, and says where (rank, lane, position, missing predecessor).

A name is a claim. The families name their schedules ``sequential``, ``pipetgl(W)``,
``data_parallel(W)``, ``mspipe(W,k=K)``, ``disttgl(i=I,j=J)``, ``pipeline(W=..,s=(..),..)``;
a schedule (a hand-edited file, say) that carries such a name must have that family's
semantics, ranks and memory backend (`claimed`), or a reader comparing "pipetgl(4)" with
another schedule would compare something else. Any other name claims nothing.

Examples
--------
>>> a = Action.parse("FWD17")
>>> a, a.op, a.batch
(FWD17, 'FWD', 17)
"""

from __future__ import annotations

import os
import re
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tgpipe.dag.bounds import MEMORY_BACKENDS
from tgpipe.dag.build import predecessors
from tgpipe.dag.cluster import Cluster
from tgpipe.dag.ops import ALL_OPS, LANES, action_resources, node_name, parse_node
from tgpipe.dag.semantics import PRESETS, Semantics
from tgpipe.dag.snapshot import SnapshotWorkload
from tgpipe.errors import InputError
from tgpipe.files import atomic_write

__all__ = ["Action", "Claim", "Schedule", "action_resources", "claimed", "requirements", "validate"]


class Action(NamedTuple):
    """One DAG node as a schedule entry; its text form is the node's name (``FWD17``)."""

    op: str
    batch: int

    def __repr__(self) -> str:
        return node_name(self.op, self.batch)

    __str__ = __repr__

    @staticmethod
    def parse(text: str) -> Action:
        return Action(*parse_node(text))


LaneKey = tuple[int, str]


@dataclass(frozen=True)
class Schedule:
    name: str
    semantics: Semantics
    n_ranks: int
    n_batches: int
    lanes: dict[LaneKey, tuple[Action, ...]]
    memory: str = "host"
    gpus_per_machine: int | None = None
    inflight: int | None = None
    options: dict = field(default_factory=dict, compare=False)
    #: None: M-TGNN batches; else the snapshot epoch whose units the actions are (its
    #: ``batch`` is a unit, `tgpipe.dag.snapshot`), and `semantics` says nothing
    workload: SnapshotWorkload | None = None

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.n_ranks, self.gpus_per_machine)

    def actions(self) -> Iterator[tuple[int, str, int, Action]]:
        """(rank, lane, position, action) for every placed action."""
        for (rank, lane), acts in sorted(self.lanes.items()):
            for pos, act in enumerate(acts):
                yield rank, lane, pos, act

    def placement(self) -> dict[Action, tuple[int, str, int]]:
        return {act: (rank, lane, pos) for rank, lane, pos, act in self.actions()}

    def batch_ranks(self) -> dict[int, list[int]]:
        """Rank -> its batches in order (a batch belongs to every rank it has actions on)."""
        ranks: dict[int, set[int]] = defaultdict(set)
        for rank, _, _, act in self.actions():
            ranks[rank].add(act.batch)
        return {rank: sorted(batches) for rank, batches in ranks.items()}

    def window_waits(self) -> dict[tuple[int, int], int]:
        """(rank, batch) -> the batch that must finish on that rank before it may start."""
        if not self.inflight:
            return {}
        waits = {}
        for rank, batches in self.batch_ranks().items():
            for k in range(self.inflight, len(batches)):
                waits[rank, batches[k]] = batches[k - self.inflight]
        return waits

    # ---- text form ---------------------------------------------------------------------
    def dumps(self) -> str:
        s, w = self.semantics, self.workload
        lines = [
            "# tgpipe schedule: one row per rank and lane; each lane runs left to right",
            f"name {self.name}",
            f"semantics {s.s_mem},{s.s_w},{s.g}",
            f"ranks {self.n_ranks}",
            f"batches {self.n_batches}",
            f"memory {self.memory}",
        ]
        if w is not None:
            lines[2:3] = [
                "workload snapshot",
                f"nodes {w.n_nodes}",
                f"group {w.group}",
                f"orders {' '.join(w.orders)}",
                f"parts {w.parts}",
                f"state_bytes {w.state_bytes}",
                f"row_bytes {w.row_bytes}",
                "snapshots " + " ".join(f"{v}:{e}" for v, e in w.sizes),
            ]
        if self.gpus_per_machine:
            lines.append(f"gpus_per_machine {self.gpus_per_machine}")
        if self.inflight:
            lines.append(f"inflight {self.inflight}")
        for (rank, lane), acts in sorted(self.lanes.items()):
            lines.append(f"rank {rank} {lane}: " + " ".join(map(str, acts)))
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, self.dumps())

    @staticmethod
    def loads(text: str, where: str = "schedule") -> Schedule:
        return _parse(text, where)

    @staticmethod
    def load(path: str | os.PathLike) -> Schedule:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(
                f"cannot read schedule {path}: {exc.strerror}; check the path"
            ) from None
        except UnicodeDecodeError:
            raise InputError(
                f"schedule {path} is not a text file; give a schedule saved by "
                "'tgpipe simulate --save-schedule' or 'tgpipe search -o'"
            ) from None
        return _parse(text, str(path))


_HEADER = {"name", "semantics", "ranks", "batches", "memory", "gpus_per_machine", "inflight"}
_SNAPSHOT_HEADER = {"workload", "nodes", "group", "orders", "parts", "state_bytes", "row_bytes"}
_SNAPSHOT_HEADER |= {"snapshots"}


def _int(value: str, where: str, key: str, low: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise InputError(f"{where}: '{key}' must be an integer >= {low}, got {value!r}")
    return number


def _parse(text: str, where: str) -> Schedule:
    head: dict[str, str] = {}
    lanes: dict[LaneKey, tuple[Action, ...]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{where}:{lineno}"
        if line.startswith("rank "):
            left, colon, right = line.partition(":")
            parts = left.split()
            if not colon or len(parts) != 3:
                raise InputError(f"{at}: expected 'rank R LANE: ACTION ...', got {raw.strip()!r}")
            rank = _int(parts[1], at, "rank", low=0)
            lane = parts[2]
            if lane not in LANES:
                raise InputError(f"{at}: unknown lane {lane!r}: use one of {', '.join(LANES)}")
            if (rank, lane) in lanes:
                raise InputError(f"{at}: rank {rank} lane {lane} has two rows")
            try:
                lanes[rank, lane] = tuple(Action.parse(t) for t in right.split())
            except InputError as exc:
                raise InputError(f"{at}: {exc}") from None
            continue
        key, _, value = line.partition(" ")
        if key not in _HEADER | _SNAPSHOT_HEADER:
            raise InputError(f"{at}: unknown line {raw.strip()!r}")
        head[key] = value.strip()
    workload = _workload(head, where) if "workload" in head else None
    for key in ("semantics", "ranks", "batches") if workload is None else ("ranks", "batches"):
        if key not in head:
            raise InputError(f"{where}: missing '{key}' line: is the file truncated?")
    n_ranks = _int(head["ranks"], where, "ranks")
    try:  # a preset name means its semantics on this many ranks
        semantics = Semantics.parse(head.get("semantics", "0,0,1"), n_ranks)
    except InputError as exc:
        raise InputError(f"{where}: 'semantics' line: {exc}") from None
    memory = head.get("memory", "host")
    if memory not in MEMORY_BACKENDS:
        raise InputError(f"{where}: 'memory' must be one of {', '.join(MEMORY_BACKENDS)}")
    per_machine = head.get("gpus_per_machine")
    inflight = head.get("inflight")
    return Schedule(
        name=head.get("name", Path(where).stem),
        semantics=semantics,
        n_ranks=n_ranks,
        n_batches=_int(head["batches"], where, "batches"),
        lanes=lanes,
        memory=memory,
        gpus_per_machine=_int(per_machine, where, "gpus_per_machine") if per_machine else None,
        inflight=_int(inflight, where, "inflight") if inflight else None,
        workload=workload,
    )


def _workload(head: dict[str, str], where: str) -> SnapshotWorkload:
    """The snapshot workload that a schedule file's header lines describe."""
    if head["workload"] != "snapshot":
        raise InputError(f"{where}: 'workload' must be snapshot, got {head['workload']!r}")
    for key in ("nodes", "group", "snapshots"):
        if key not in head:
            raise InputError(f"{where}: missing '{key}' line: is the file truncated?")
    sizes = []
    for cell in head["snapshots"].split():
        v, colon, e = cell.partition(":")
        if not (colon and v.isdigit() and e.isdigit()):
            raise InputError(
                f"{where}: 'snapshots' must list VERTICES:EDGES of each position, got {cell!r}"
            )
        sizes.append((int(v), int(e)))
    try:
        return SnapshotWorkload(
            tuple(sizes),
            n_nodes=_int(head["nodes"], where, "nodes"),
            group=_int(head["group"], where, "group"),
            orders=tuple(head.get("orders", "agg_first").split()),
            parts=_int(head.get("parts", "1"), where, "parts"),
            state_bytes=_int(head.get("state_bytes", "0"), where, "state_bytes", low=0),
            row_bytes=_int(head.get("row_bytes", "0"), where, "row_bytes", low=0),
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def requirements(schedule: Schedule) -> dict[Action, list[tuple[Action, str]]]:
    """Action -> its DAG predecessors as (action, edge kind), for the schedule's semantics
    and number of batches, or its snapshot workload. (Keys and predecessors are plain
    (op, batch) tuples, which hash and compare equal to Actions: wrap one in `Action` to
    print it.)"""
    if schedule.workload is not None:
        return schedule.workload.predecessors(schedule.n_ranks)
    return predecessors(schedule.semantics, schedule.n_batches)


# ---- names that claim a family ---------------------------------------------------------------
class Claim(NamedTuple):
    """What a family's name promises: its semantics, ranks and (where fixed) memory."""

    family: str
    semantics: Semantics
    n_ranks: int
    memory: str | None = None


def _ranks_claim(family: str, memory_from_suffix: bool = False):
    def claim(m: re.Match) -> Claim:
        w = int(m["w"])
        memory = ("rows" if m["rows"] else "host") if memory_from_suffix else None
        return Claim(family, PRESETS[family](w), w, memory)

    return claim


#: Name pattern of each family (as families.py writes it) -> the claim it makes.
_CLAIMS = (
    (re.compile(r"sequential"), lambda m: Claim("sequential", Semantics(0, 0, 1), 1)),
    (re.compile(r"pipetgl\((?P<w>\d+)\)(?P<rows>/rows)?"), _ranks_claim("pipetgl", True)),
    (re.compile(r"data_parallel\((?P<w>\d+)\)"), _ranks_claim("data_parallel")),
    (
        re.compile(r"mspipe\((?P<w>\d+),k=(?P<k>\d+)\)"),
        lambda m: Claim("mspipe", PRESETS["mspipe"](int(m["w"]), int(m["k"])), int(m["w"])),
    ),
    (
        re.compile(r"disttgl\(i=(?P<i>\d+),j=(?P<j>\d+)\)"),
        lambda m: Claim(
            "disttgl", Semantics(0, int(m["j"]) - 1, int(m["i"])), int(m["i"]) * int(m["j"])
        ),
    ),
    (
        re.compile(r"pipeline\(W=(?P<w>\d+),s=\((?P<s>\d+),(?P<sw>\d+),(?P<g>\d+)\)(,.*)?\)"),
        lambda m: Claim("pipeline", Semantics(int(m["s"]), int(m["sw"]), int(m["g"])), int(m["w"])),
    ),
)


def claimed(name: str) -> Claim | None:
    """The family claim that a schedule's name makes, or None for a name of one's own.

    >>> claimed("pipetgl(4)")
    Claim(family='pipetgl', semantics=Semantics(s_mem=0, s_w=3, g=1), n_ranks=4, memory='host')
    >>> claimed("my ring") is None
    True
    """
    for pattern, claim in _CLAIMS:
        m = pattern.fullmatch(name.strip())
        if m:
            try:
                return claim(m)
            except InputError:  # pipetgl(0): an impossible claim is checked as no claim
                return None
    return None


def _check_claim(schedule: Schedule) -> None:
    claim = claimed(schedule.name)
    if claim is None or schedule.workload is not None:  # the M-TGNN families' names
        return
    s, c = schedule.semantics, claim.semantics
    found = [
        f"semantics {c.s_mem},{c.s_w},{c.g} (its 'semantics' line says {s.s_mem},{s.s_w},{s.g})"
        if tuple(s) != tuple(c)
        else "",
        f"{claim.n_ranks} rank(s) (its 'ranks' line says {schedule.n_ranks})"
        if claim.n_ranks != schedule.n_ranks
        else "",
        f"memory {claim.memory} (its 'memory' line says {schedule.memory})"
        if claim.memory and claim.memory != schedule.memory
        else "",
    ]
    wrong = "; ".join(text for text in found if text)
    if wrong:
        raise InputError(
            f"the name claims the {claim.family} family, which has {wrong}: fix those lines "
            "or rename the schedule (a name of your own claims no family)"
        )


# ---- validation ----------------------------------------------------------------------------
def _where(loc: tuple[int, str, int]) -> str:
    return f"rank {loc[0]} lane {loc[1]} position {loc[2]}"


def validate(schedule: Schedule) -> dict[Action, list[tuple[Action, str]]]:
    """Raise InputError (one line, starting with the schedule's name) unless the schedule
    keeps the promise of its name (`claimed`), every DAG node is placed exactly once on an
    existing rank and lane, and the lanes' orders let every action run.

    The run check executes the schedule symbolically: a lane's head runs once its DAG
    predecessors and its prefetch window are done. If lanes stop with work left, the error
    names a stuck head, where it is, and the predecessor it waits for.
    """
    try:
        return _validate(schedule)
    except InputError as exc:
        raise InputError(f"schedule {schedule.name!r}: {exc}") from None


def _not_an_action(act: Action, schedule: Schedule, preds: dict) -> str:
    """Why `act` is no node of the schedule's DAG, and what to change."""
    if schedule.workload is not None:
        return (
            f"{act} is not an action of this snapshot epoch (units 0..{schedule.n_batches - 1}"
            f", GRAD_SYNC and STEP 0..{schedule.n_ranks - 1}); remove the action"
        )
    if act.batch >= schedule.n_batches:
        return (
            f"{act} is not an action of this run: batch {act.batch} is past the last "
            f"({schedule.n_batches - 1}); fix the 'batches' line or remove the action"
        )
    return (
        f"{act} is not an action of this run: semantics {schedule.semantics} have no "
        f"{act.op} (ops of a batch: {', '.join(op for op, b in preds if b == act.batch)}); "
        "fix the 'semantics' line or remove the action"
    )


def _validate(schedule: Schedule) -> dict[Action, list[tuple[Action, str]]]:
    _check_claim(schedule)
    schedule.semantics.validate()
    schedule.cluster.validate()
    preds = requirements(schedule)
    w = schedule.workload
    if w is not None and schedule.n_batches != w.n_units:
        raise InputError(
            f"'batches' says {schedule.n_batches} but the snapshot workload has {w.n_units} "
            f"units ({w.n_positions} positions x {w.parts} parts); fix the 'batches' line"
        )
    if schedule.inflight is not None and schedule.inflight < 1:
        raise InputError(f"inflight must be >= 1, got {schedule.inflight}")
    seen: dict[Action, tuple[int, str, int]] = {}
    for rank, lane, pos, act in schedule.actions():
        loc = (rank, lane, pos)
        if not 0 <= rank < schedule.n_ranks:
            raise InputError(
                f"{_where(loc)}: rank {rank} is out of range: the schedule has "
                f"{schedule.n_ranks} rank(s), 0..{schedule.n_ranks - 1}; fix the 'ranks' line "
                "or move that row"
            )
        if lane not in LANES:
            raise InputError(f"{_where(loc)}: unknown lane {lane!r}")
        if act not in preds:
            raise InputError(f"{_where(loc)}: {_not_an_action(act, schedule, preds)}")
        if act in seen:
            raise InputError(
                f"{act} is placed twice: {_where(seen[act])} and {_where(loc)}; remove one"
            )
        seen[act] = loc
    if len(seen) != len(preds):
        missing = sorted((Action(*a) for a in preds if a not in seen), key=_order_key)
        raise InputError(
            f"{len(missing)} action(s) are not placed, e.g. {', '.join(map(str, missing[:3]))}:"
            " add each to a lane (every DAG node is placed exactly once; a truncated file?)"
        )
    _check_runnable(schedule, preds, seen)
    return preds


def _order_key(act: Action) -> tuple[int, int]:
    return act.batch, list(ALL_OPS).index(act.op)


def _check_runnable(schedule: Schedule, preds: dict, loc: dict[Action, tuple]) -> None:
    window = schedule.window_waits()
    left: dict[tuple[int, int], int] = defaultdict(int)  # actions not yet done per rank, batch
    for rank, _, _, act in schedule.actions():
        left[rank, act.batch] += 1
    done: set = set()  # actions, and ("finished", rank, batch) tokens
    heads = dict.fromkeys(schedule.lanes, 0)
    waiting: dict[object, list[LaneKey]] = defaultdict(list)
    queue = deque(schedule.lanes)
    n_done = 0
    while queue:
        key = queue.popleft()
        acts = schedule.lanes[key]
        while heads[key] < len(acts):
            act = acts[heads[key]]
            need = window.get((key[0], act.batch))
            blocker = ("finished", key[0], need) if need is not None else None
            if blocker is None or blocker in done:
                blocker = next((p for p, _ in preds[act] if p not in done), None)
            if blocker is not None:
                waiting[blocker].append(key)
                break
            heads[key] += 1
            n_done += 1
            left[key[0], act.batch] -= 1
            tokens = [act]
            if left[key[0], act.batch] == 0:
                tokens.append(("finished", key[0], act.batch))
            for token in tokens:
                done.add(token)
                queue.extend(waiting.pop(token, ()))
    if n_done == len(loc):
        return
    stuck = [
        (key, heads[key], schedule.lanes[key][heads[key]])
        for key in schedule.lanes
        if heads[key] < len(schedule.lanes[key])
    ]
    raise InputError(_explain(stuck, schedule, preds, loc, done, window))


def _explain(stuck, schedule, preds, loc, done, window) -> str:
    """One line on the most telling stuck head: one whose missing predecessor sits later on
    its own lane, else the first."""
    found = []
    for (rank, lane), pos, act in stuck:
        here = _where((rank, lane, pos))
        missing = [Action(*p) for p, _ in preds[act] if p not in done]
        if missing:
            pred = min(missing, key=lambda a: (loc[a][:2] != (rank, lane), loc[a]))
            if loc[pred][:2] == (rank, lane):
                found.append(
                    (
                        0,
                        f"{here}: {act} needs {pred}, which comes later on the same "
                        f"lane (position {loc[pred][2]})",
                    )
                )
            else:
                found.append(
                    (
                        1,
                        f"{here}: {act} needs {pred} ({_where(loc[pred])}), "
                        "which cannot run either",
                    )
                )
        else:
            found.append(
                (
                    2,
                    f"{here}: {act} waits for batch {window.get((rank, act.batch))} "
                    f"to finish on rank {rank} (inflight {schedule.inflight})",
                )
            )
    return f"cannot run: {min(found)[1]}; reorder that lane or move the action"
