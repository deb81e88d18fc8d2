"""Bad input, everywhere it enters, through the real command line.

Every case runs ``python -m tgpipe ...`` in a folder of its own that holds only its input
files, and asserts what a user on a shared cluster needs: exit status 2, exactly one line on
stderr that names the problem and says what to do (two substrings chosen per case), no
traceback, and no file left behind (neither an output nor a temporary ``.NAME.*.tmp``: the
folder holds exactly its inputs afterwards). The cases run a few at a time in threads, since
each is mostly a Python start-up (~0.5 s).

Two behaviours that look like bad input are accepted on purpose and tested at the end: huge,
sparse node ids load (renumbered 0..N-1) and duplicate rows are kept (two events).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tgpipe.dag import load_profile
from tgpipe.schedules import family

PROFILE = load_profile("gpu-illustrative").to_dict()
RING = family("pipetgl", load_profile("gpu-illustrative"), 2, 4).dumps()  # pipetgl(2), 4 batches
DP = family("data_parallel", load_profile("gpu-illustrative"), 2, 4).dumps()
CSV = "u,i,ts,label\n0,10,1,0\n1,11,2,0\n2,10,3,0\n"
LONG_CSV = "u,i,ts,label\n" + "".join(f"{k % 97},{1000 + k % 89},{k},0\n" for k in range(5000))
SNAPSHOT_SCHEDULE = (
    "# a snapshot schedule of 4 positions\nname mine\nworkload snapshot\nnodes 10\ngroup 2\n"
    "snapshots 3:2 3:2 3:2 3:2\nranks 1\nbatches 4\n"
    "rank 0 gpu: AGG0 DENSE0 RNN0 BWD0 AGG1 DENSE1 RNN1 BWD1 AGG2 DENSE2 RNN2 BWD2 "
    "AGG3 DENSE3 RNN3 BWD3 STEP0\nrank 0 h2d: LOAD0 LOAD1 LOAD2 LOAD3\nrank 0 net: GRAD_SYNC0\n"
)
#: Output options of simulate: each case checks that none of these files appears.
SIM_OUT = ("--trace", "t.json", "--gantt", "g.html", "--save-schedule", "s.txt")


def profile(edit) -> str:
    """The built-in profile as JSON, changed by `edit` (which may return a new document)."""
    data = copy.deepcopy(PROFILE)
    new = edit(data)
    return json.dumps(data if new is None else new)


def ring(old: str, new: str) -> str:
    assert old in RING, old
    return RING.replace(old, new)


def trace(rows, meta=None) -> str:
    return json.dumps({"meta": meta or {}, "rows": rows})


@dataclass(frozen=True)
class Case:
    """A command line (``{ro}`` stands for a read-only folder), its input files, and two
    substrings of the one error line: the problem, and what to do about it; `env`: more
    environment (what torchrun gives a rank, say)."""

    id: str
    args: tuple[str, ...]
    problem: str
    remedy: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # ---- datasets: tgpipe data info PATH --------------------------------------------------
    Case(
        "data-empty", ("data", "info", "d.csv"), "d.csv is empty", "expected one of", {"d.csv": ""}
    ),
    Case(
        "data-header-only",
        ("data", "info", "d.csv"),
        "holds a header but no events",
        "add events",
        {"d.csv": "u,i,ts,label\n"},
    ),
    Case(
        "data-missing-column",
        ("data", "info", "d.csv"),
        "line 2 has 3 fields, expected 4 (u,i,ts,label)",
        "fix the columns",
        {"d.csv": "u,i,ts,label\n0,10,1\n1,11,2\n"},
    ),
    Case(
        "data-extra-column",
        ("data", "info", "d.csv"),
        "line 2 has 5 fields, expected 4",
        "fix the columns or the header",
        {"d.csv": "u,i,ts,label\n0,10,1,0,7\n"},
    ),
    Case(
        "data-short-row",
        ("data", "info", "d.csv"),
        "line 3 has 3 field(s), expected 4",
        "fix or remove that line",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n1,11,2\n"},
    ),
    Case(
        "data-text-in-number",
        ("data", "info", "d.csv"),
        "line 3, column 'i': 'abc' is not a number",
        "fix or remove that line",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n1,abc,2,0\n"},
    ),
    Case(
        "data-nan",
        ("data", "info", "d.csv"),
        "line 3, column 'ts': nan where a number is needed",
        "fix or remove that line",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n1,11,nan,0\n"},
    ),
    Case(
        "data-infinite",
        ("data", "info", "d.csv"),
        "column 'ts': inf where a number is needed",
        "fix or remove that line",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n1,11,1e999,0\n"},
    ),
    Case(
        "data-negative-id",
        ("data", "info", "d.csv"),
        "line 3, column 'u': id -4 is negative",
        "renumber the ids",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n-4,11,2,0\n"},
    ),
    Case(
        "data-fractional-id",
        ("data", "info", "d.csv"),
        "id 1.5 is not an integer",
        "fix that line",
        {"d.csv": "u,i,ts,label\n0,10,1,0\n1.5,11,2,0\n"},
    ),
    Case(
        # 2^53 + 1 reads as 2^53: two ids would silently become one node
        "data-id-beyond-float",
        ("data", "info", "d.csv"),
        "too large to read exactly",
        "renumber the ids",
        {"d.csv": "u,i,ts,label\n9007199254740993,1,1,0\n9007199254740992,1,2,0\n"},
    ),
    Case(
        "data-unsorted-time",
        ("data", "info", "d.csv"),
        "line 3, column 'ts': time 1 is earlier than the line before (5)",
        "sort the file by 'ts'",
        {"d.csv": "u,i,ts,label\n0,10,5,0\n1,11,1,0\n"},
    ),
    Case(
        "data-no-header",
        ("data", "info", "d.csv"),
        "a csv with no header",
        "add the header u,i,ts,label",
        {"d.csv": "0,10,1,0\n1,11,2,0\n"},
    ),
    Case(
        "data-tgn-bad-header",
        ("data", "info", "ml_x.csv"),
        "does not match TGN's ml_NAME.csv",
        "fix the header",
        {"ml_x.csv": ",u,i,ts,label\n0,1,2,3,0\n"},
    ),
    Case(
        "data-snap-short-row",
        ("data", "info", "d.txt"),
        "line 2 has 2 field(s), expected 3 (src,dst,ts)",
        "fix or remove that line",
        {"d.txt": "1 2 3\n1 2\n"},
    ),
    Case(
        "data-cut-gzip",
        ("data", "info", "d.csv.gz"),
        "damaged or cut-short gzip file",
        "download it again",
        {"d.csv.gz": gzip.compress(LONG_CSV.encode())[:3000]},
    ),
    Case(
        "data-binary",
        ("data", "info", "d.csv"),
        "d.csv is not a text file",
        "expected one of",
        {"d.csv": b"u,i\xff\xfe\x00\x81\n"},
    ),
    Case(
        "data-missing-file",
        ("data", "info", "nothere.csv"),
        "no such file or folder: nothere.csv",
        "check the path",
    ),
    Case(
        "data-folder-without-data",
        ("data", "info", "sub"),
        "sub holds no data file",
        "pass the file itself",
        {"sub/notes.md": "not data\n"},
    ),
    Case(
        "data-get-into-a-file",
        ("data", "get", "mini", "--url", "file:///nonexistent/x.csv", "--out", "d.csv/sub"),
        "cannot create d.csv/sub/mini",
        "choose --out",
        {"d.csv": CSV},
    ),
    # ---- profiles: tgpipe dag --profile FILE, tgpipe simulate --profile FILE ---------------
    Case(
        "profile-unknown-op",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "unknown op 'FOO' in 'ops'",
        "expected SAMPLE, FEAT",
        {"p.json": profile(lambda d: d["ops"].update(FOO={"median": 1e-3}))},
    ),
    Case(
        "profile-unknown-compute",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "field 'compute' must be one of gpu, cpu, got 'tpu'",
        "p.json",
        {"p.json": profile(lambda d: d.update(compute="tpu"))},
    ),
    Case(
        "profile-negative-cost",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "ops.FWD.median",
        "must be >= 0, got -0.1",
        {"p.json": profile(lambda d: d["ops"]["FWD"].update(median=-0.1))},
    ),
    Case(
        "profile-zero-bandwidth",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "links.inter.bandwidth",
        "must be > 0, got 0",
        {"p.json": profile(lambda d: d["links"]["inter"].update(bandwidth=0))},
    ),
    Case(
        "profile-string-cost",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "ops.FWD.median",
        "must be a finite number (s), got '0.004'",
        {"p.json": profile(lambda d: d["ops"]["FWD"].update(median="0.004"))},
    ),
    Case(
        "profile-list-not-object",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "expected a JSON object (a profile), got list",
        "use a built-in profile",
        {"p.json": profile(lambda d: [d])},
    ),
    Case(
        "profile-ops-list",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "field 'ops' must be an object of op -> cost",
        "op -> cost",
        {"p.json": profile(lambda d: d.update(ops=list(d["ops"].values())))},
    ),
    Case(
        "profile-op-not-object",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "ops.FWD must be an object",
        "with median, spread, bytes",
        {"p.json": profile(lambda d: d["ops"].update(FWD=0.004))},
    ),
    Case(
        "profile-missing-op",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "missing cost of op 'STEP'",
        "add it",
        {"p.json": profile(lambda d: d["ops"].pop("STEP") and None)},
    ),
    Case(
        # 1e308 s used to pass and turn the period, the trace and the chart into inf/NaN
        "profile-absurd-cost",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "ops.FWD.median is 1e+308, more than the most that makes sense",
        "another unit",
        {"p.json": profile(lambda d: d["ops"]["FWD"].update(median=1e308))},
    ),
    Case(
        "profile-fractional-bytes",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "ops.FWD.bytes",
        "must be a whole number of bytes, got 1.5",
        {"p.json": profile(lambda d: d["ops"]["FWD"].update(bytes=1.5))},
    ),
    Case(
        "profile-batch-size-0",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "field 'batch_size'",
        "must be an integer >= 1, got 0",
        {"p.json": profile(lambda d: d.update(batch_size=0))},
    ),
    Case(
        "profile-truncated-json",
        ("simulate", "--profile", "p.json", *SIM_OUT),
        "profile p.json is not valid JSON (line",
        "fix the file",
        {"p.json": profile(lambda d: None)[:300]},
    ),
    Case(
        # used to end in a UnicodeDecodeError traceback
        "profile-binary",
        ("dag", "--profile", "p.json", "--out", "dag.json"),
        "profile p.json is not a text file",
        "fix the file",
        {"p.json": b"\x7fELF\x02\x01\x01\x00\xd0\xff"},
    ),
    Case(
        "profile-missing-file",
        ("simulate", "--profile", "nowhere.json", *SIM_OUT),
        "no profile 'nowhere.json'",
        "give a JSON file or one of the built-in profiles",
    ),
    # ---- schedules: tgpipe simulate --schedule FILE -------------------------------------
    Case(
        "schedule-missing-action",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "1 action(s) are not placed, e.g. FWD3",
        "add each to a lane",
        {"r.txt": ring(" FWD3 BWD3", " BWD3")},
    ),
    Case(
        "schedule-duplicated-action",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "SAMPLE2 is placed twice",
        "remove one",
        {"r.txt": ring("SAMPLE2", "SAMPLE2 SAMPLE2")},
    ),
    Case(
        "schedule-unknown-action",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "bad action 'FOO2'",
        "like FWD17",
        {"r.txt": ring("SAMPLE2", "SAMPLE2 FOO2")},
    ),
    Case(
        "schedule-unknown-lane",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "unknown lane 'tpu'",
        "use one of gpu, gpu2, h2d",
        {"r.txt": ring("rank 1 cpu", "rank 1 tpu")},
    ),
    Case(
        "schedule-rank-out-of-range",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "rank 2 is out of range: the schedule has 2 rank(s)",
        "fix the 'ranks' line",
        {"r.txt": ring("rank 1 cpu", "rank 2 cpu")},
    ),
    Case(
        "schedule-swapped-on-a-lane",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "rank 1 lane gpu position 2: BWD1 needs FWD1, which comes later on the same lane",
        "reorder that lane",
        {"r.txt": ring("FWD1 BWD1", "BWD1 FWD1")},
    ),
    Case(
        "schedule-swapped-across-lanes",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "MEM_WRITE2 needs MEM_ROOT2 (rank 0 lane gpu position 5), which cannot run either",
        "reorder that lane",
        {"r.txt": ring("MEM_WRITE0 MEM_WRITE2", "MEM_WRITE2 MEM_WRITE0")},
    ),
    Case(
        # the name promises PipeTGL's semantics on 2 ranks, (0,1,1); the file says (0,0,1)
        "schedule-contradicts-its-family",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "the name claims the pipetgl family, which has semantics 0,1,1 (its 'semantics' line "
        "says 0,0,1)",
        "rename the schedule",
        {"r.txt": ring("semantics 0,1,1", "semantics 0,0,1")},
    ),
    Case(
        "schedule-family-ranks",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "the name claims the pipetgl family, which has semantics 0,3,1",
        "4 rank(s) (its 'ranks' line says 2): fix those lines",
        {"r.txt": ring("name pipetgl(2)", "name pipetgl(4)")},
    ),
    Case(
        # GRAD_SYNC is the all-reduce of a group: with g=1 there is none
        "schedule-grad-sync-without-groups",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "GRAD_SYNC0 is not an action of this run: semantics (s_mem=0, s_w=0, g=1) have no "
        "GRAD_SYNC",
        "fix the 'semantics' line or remove the action",
        {"r.txt": DP.replace("name data_parallel(2)", "name mine").replace("0,0,2", "0,0,1")},
    ),
    Case(
        "schedule-batch-past-the-end",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "SAMPLE3 is not an action of this run: batch 3 is past the last (2)",
        "fix the 'batches' line",
        {"r.txt": ring("batches 4", "batches 3")},
    ),
    Case(
        "schedule-truncated-in-the-lanes",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "action(s) are not placed",
        "a truncated file?",
        {"r.txt": RING[: RING.index("rank 1 cpu")]},
    ),
    Case(
        "schedule-truncated-in-the-header",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "missing 'semantics' line",
        "is the file truncated?",
        {"r.txt": RING[: RING.index("semantics")]},
    ),
    Case(
        "schedule-bad-semantics-line",
        ("simulate", "--schedule", "r.txt", *SIM_OUT),
        "r.txt: 'semantics' line: unknown semantics '0,1'",
        "three integers s_mem,s_w,g",
        {"r.txt": ring("semantics 0,1,1", "semantics 0,1")},
    ),
    Case(
        "schedule-missing-file",
        ("simulate", "--schedule", "nothere.txt", *SIM_OUT),
        "no file nothere.txt",
        "give a schedule file",
    ),
    # ---- the command line ---------------------------------------------------------------
    Case(
        "cli-simulate-0-gpus",
        ("simulate", "--gpus", "0", *SIM_OUT),
        "argument --gpus: expected an integer >= 1, got 0",
        "see tgpipe simulate --help",
    ),
    Case(
        "cli-dag-0-gpus",
        ("dag", "--gpus", "0", "--out", "dag.json"),
        "argument --gpus: expected an integer >= 1, got 0",
        "see tgpipe dag --help",
    ),
    Case(
        "cli-search-0-gpus",
        ("search", "--gpus", "0", "-o", "best.txt", "--gantt", "g.html"),
        "argument --gpus: expected an integer >= 1, got 0",
        "see tgpipe search --help",
    ),
    Case(
        "cli-search-margin-100",
        ("search", "--margin", "100", "-o", "best.txt"),
        "argument --margin: expected a percentage >= 0 and < 100, got 100",
        "see tgpipe search --help",
    ),
    Case(
        "cli-simulate-0-batches",
        ("simulate", "--batches", "0", *SIM_OUT),
        "argument --batches: expected an integer >= 1, got 0",
        "see tgpipe simulate --help",
    ),
    Case(
        "cli-dag-0-batches",
        ("dag", "--batches", "0", "--out", "dag.json"),
        "argument --batches: expected an integer >= 1, got 0",
        "see tgpipe dag --help",
    ),
    Case(
        "cli-negative-prefetch",
        ("simulate", "--prefetch", "-1", *SIM_OUT),
        "argument --prefetch: expected an integer >= 0, got -1",
        "see tgpipe simulate --help",
    ),
    Case(
        # refused before any work, and so before the other outputs are written
        "cli-trace-into-missing-folder",
        ("simulate", "--batches", "20", "--gantt", "g.html", "--trace", "/nonexistent/dir/t.json"),
        "cannot write /nonexistent/dir/t.json: no folder /nonexistent/dir",
        "create it or choose another path",
    ),
    Case(
        "cli-gantt-into-read-only-folder",
        ("simulate", "--batches", "20", "--trace", "t.json", "--gantt", "{ro}/g.html"),
        "cannot write {ro}/g.html",
        "choose a writable path",
    ),
    Case(
        "cli-trace-onto-a-folder",
        ("simulate", "--batches", "20", "--gantt", "g.html", "--trace", "."),
        "cannot write .: it is a folder",
        "give a file name",
    ),
    Case(
        "cli-dag-out-below-a-file",
        ("dag", "--batches", "5", "--out", "d.csv/dag.json"),
        "cannot write d.csv/dag.json: d.csv is not a folder",
        "choose another path",
        {"d.csv": CSV},
    ),
    Case(
        "cli-search-out-into-missing-folder",
        ("search", "--gpus", "2", "-o", "no/best.txt"),
        "cannot write no/best.txt: no folder no",
        "create it or choose another path",
    ),
    Case(
        "gantt-of-a-profile",
        ("gantt", "p.json", "-o", "g.html", "--chrome", "c.json"),
        "p.json: not a tgpipe trace (expected an object with 'rows')",
        "give a trace saved by 'tgpipe simulate --trace'",
        {"p.json": profile(lambda d: None)},
    ),
    Case(
        "gantt-of-a-schedule",
        ("gantt", "r.txt", "-o", "g.html"),
        "trace r.txt is not valid JSON (line 1, column 1",
        "give a trace saved by",
        {"r.txt": RING},
    ),
    Case(
        "gantt-of-a-binary",
        ("gantt", "t.json", "-o", "g.html"),
        "trace t.json is not a text file",
        "give a trace saved by",
        {"t.json": b"\x7fELF\x02\x01\x01\x00\xd0\xff"},
    ),
    Case(
        "gantt-missing-trace",
        ("gantt", "nothere.json", "-o", "g.html"),
        "cannot read trace nothere.json",
        "check the path",
    ),
    Case(
        # an infinite end used to draw a chart of nothing
        "gantt-infinite-time",
        ("gantt", "t.json", "-o", "g.html"),
        "row 0 is not [rank, lane, op, batch, start, end]",
        "give a trace saved by",
        {"t.json": trace([[0, "gpu", "FWD", 0, 0.0, 1e999]]).replace("Infinity", "1e999")},
    ),
    Case(
        # used to end in a TypeError traceback
        "gantt-bad-meta",
        ("gantt", "t.json", "-o", "g.html"),
        "t.json: meta 'n_ranks'",
        "must be an integer >= 1, got 'two'",
        {"t.json": trace([[0, "gpu", "FWD", 0, 0.0, 1.0]], {"n_ranks": "two"})},
    ),
    Case(
        "gantt-rank-beyond-meta",
        ("gantt", "t.json", "-o", "g.html"),
        "row 0 is on rank 3, but meta 'n_ranks' is 2",
        "fix 'n_ranks' or the row",
        {"t.json": trace([[3, "gpu", "FWD", 0, 0.0, 1.0]], {"n_ranks": 2})},
    ),
    Case(
        "gantt-into-read-only-folder",
        ("gantt", "t.json", "-o", "{ro}/g.html"),
        "cannot write {ro}/g.html",
        "choose a writable path",
        {"t.json": trace([[0, "gpu", "FWD", 0, 0.0, 1.0]])},
    ),
    # ---- tgpipe run: refused in the launcher, before any rank starts ----------------------
    Case(
        "run-schedule-for-more-ranks",
        ("run", "--schedule", "ring.txt", "--data", "d.csv", "--batch-size", "875", "--nproc", "1"),
        "is for 2 ranks but 1 were started",
        "use --nproc 2",
        {"ring.txt": RING, "d.csv": LONG_CSV},
    ),
    Case(
        "run-schedule-for-other-batches",
        ("run", "--schedule", "ring.txt", "--data", "d.csv", "--nproc", "2"),
        "ring.txt has 4 batches but the data has 6 training batches",
        "make the schedule for 6",
        {"ring.txt": RING, "d.csv": LONG_CSV},
    ),
    Case(
        "run-unsorted-data",
        ("run", "--data", "d.csv"),
        "time 2 is earlier than the line before (5)",
        "sort the file by 'ts' first",
        {"d.csv": "u,i,ts,label\n0,10,5,0\n1,11,2,0\n"},
    ),
    Case(
        "run-resume-without-checkpoint",
        ("run", "--resume", "--data", "d.csv"),
        "--resume and --checkpoint-every need",
        "--checkpoint DIR",
        {"d.csv": LONG_CSV},
    ),
    Case(
        "run-resume-nothing",
        ("run", "--resume", "--checkpoint", "ck", "--data", "d.csv"),
        "no checkpoint in ck to resume",
        "run without --resume first",
        {"d.csv": LONG_CSV},
    ),
    Case(
        "run-resume-another-run",
        ("run", "--resume", "--checkpoint", "ck", "--data", "d.csv", "--batch-size", "500"),
        "the checkpoint in ck is of another run ({'batches': 6, 'batch_size': 600}",
        "resume with the same options",
        {
            "d.csv": LONG_CSV,
            "ck/checkpoint.json": json.dumps(
                {
                    "epoch": 0,
                    "batch": 2,
                    "run": {
                        "schedule": "pipetgl(2)",
                        "world": 2,
                        "batches": 6,
                        "batch_size": 600,
                        "events": 5000,
                        "seed": 0,
                    },
                }
            ),
        },
    ),
    Case(
        "run-checkpoint-unwritable",
        ("run", "--checkpoint", "{ro}/ck", "--data", "d.csv"),
        "cannot write",
        "",
        {"d.csv": LONG_CSV},
    ),
    # ---- tgpipe run: refused in a rank, as torchrun starts it -------------------------------
    Case(
        "run-shared-memory-on-two-machines",
        ("run", "--memory", "shared", "--data", "d.csv"),
        "--memory shared needs every rank on one machine, but this machine runs 1 of the 2",
        "use --memory rows",
        {"d.csv": LONG_CSV},
        # rank 0 of torchrun --nnodes 2 --nproc-per-node 1: refused before it meets the others
        {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"},
    ),
    # ---- snapshot workloads: tgpipe simulate / search --workload snapshot ------------------
    Case(
        "snapshot-bad-synthetic-spec",
        ("simulate", "--workload", "snapshot", "--data", "skewed:x", *SIM_OUT),
        "bad snapshot data 'skewed:x'",
        "use skewed:N",
    ),
    Case(
        "snapshot-zero-period",
        ("simulate", "--workload", "snapshot", "--data", "d.csv", "--period", "0", *SIM_OUT),
        "argument --period: expected a finite number > 0",
        "time units per snapshot",
        {"d.csv": CSV},
    ),
    Case(
        "snapshot-too-few-snapshots",
        ("search", "--workload", "snapshot", "--data", "d.csv", "-o", "s.txt"),
        "has 1 snapshot(s); training needs at least 4",
        "use a shorter --period",
        {"d.csv": CSV},
    ),
    Case(
        "snapshot-mtgnn-profile",
        ("simulate", "--workload", "snapshot", "--profile", "gpu-illustrative", *SIM_OUT),
        "is for the mtgnn workload, not snapshot",
        "give a snapshot profile",
    ),
    Case(
        "snapshot-profile-for-mtgnn",
        ("simulate", "--profile", "snapshot-gpu-illustrative", *SIM_OUT),
        "is for the snapshot workload, not mtgnn",
        "give a mtgnn profile",
    ),
    Case(
        "snapshot-data-without-workload",
        ("simulate", "--data", "skewed", *SIM_OUT),
        "--data is for --workload snapshot",
        "take --batches",
    ),
    Case(
        "snapshot-period-without-workload",
        ("run", "--data", "d.csv", "--period", "3600"),
        "--period is for --workload snapshot",
        "or leave it out",
        {"d.csv": CSV},
    ),
    Case(
        "snapshot-options-without-workload",
        ("simulate", "--group", "2", "--period", "60", *SIM_OUT),
        "--period and --group are for --workload snapshot",
        "or leave them out",
    ),
    Case(
        "snapshot-unknown-family",
        ("simulate", "--workload", "snapshot", "--schedule", "ring", *SIM_OUT),
        "no file ring",
        "a family (vertex_partition, snapshot_partition, blad)",
    ),
    Case(
        "snapshot-schedule-for-other-data",
        ("simulate", "--workload", "snapshot", "--schedule", "s.schedule", "--data", "skewed:12"),
        "is a schedule for other snapshots",
        "make it for this data",
        {"s.schedule": SNAPSHOT_SCHEDULE},
    ),
    Case(
        "snapshot-mtgnn-option",
        ("simulate", "--workload", "snapshot", "--batches", "50", *SIM_OUT),
        "--batches is for --workload mtgnn",
        "leave it out",
    ),
    Case(
        "snapshot-bad-groups",
        ("search", "--workload", "snapshot", "--groups", "2,x", "-o", "s.txt"),
        "--groups must list group sizes >= 1",
        "like 2,4,8",
    ),
    Case(
        "snapshot-mtgnn-schedule",
        ("simulate", "--workload", "snapshot", "--schedule", "r.txt", *SIM_OUT),
        "is an M-TGNN schedule",
        "drop --workload snapshot",
        {"r.txt": RING},
    ),
    # ---- tgpipe validate and tgpipe demo: refused before any profiling or rank ------------
    Case(
        "validate-unknown-family",
        ("validate", "--families", "sequential,foo", "--gantt", "g.html"),
        "unknown schedule family 'foo'",
        "use one of sequential",
    ),
    Case(
        "validate-missing-data",
        ("validate", "--data", "nothere.csv", "--gantt", "g.html"),
        "no such file or folder: nothere.csv",
        "check the path",
    ),
    Case(
        "demo-unwritable-gantt",
        ("demo", "--gantt", "no/g.html"),
        "cannot write no/g.html: no folder no",
        "create it or choose another path",
    ),
    # ---- tgpipe profile: refused in the launcher, before any rank starts ------------------
    Case(
        "measure-missing-data",
        ("profile", "--data", "nothere.csv", "-o", "p.json"),
        "no such file or folder: nothere.csv",
        "check the path",
    ),
    Case(
        "measure-into-missing-folder",
        ("profile", "-o", "no/p.json"),
        "cannot write no/p.json: no folder no",
        "create it or choose another path",
    ),
    Case(
        "measure-zero-repeats",
        ("profile", "--repeat", "0", "-o", "p.json"),
        "argument --repeat: expected an integer >= 1, got 0",
        "see tgpipe profile --help",
    ),
    *(
        []
        if torch.cuda.is_available()
        else [
            Case(
                "measure-cuda-without-gpu",
                ("profile", "--device", "cuda", "-o", "p.json"),
                "--device cuda: this torch",
                "sees no CUDA GPU here; use --device cpu",
            ),
            Case(
                "run-cuda-without-gpu",
                ("run", "--device", "cuda", "--trace", "t.json"),
                "--device cuda: this torch",
                "sees no CUDA GPU here; use --device cpu",
            ),
            Case(  # torchrun's rank finds no GPU either, before it waits for its peers
                "run-cuda-rank-without-gpu",
                ("run", "--device", "cuda", "--trace", "t.json"),
                "--device cuda: this torch",
                "sees no CUDA GPU here; use --device cpu",
                env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
            ),
        ]
    ),
    Case(
        "run-snapshot-on-cuda",
        ("run", "--workload", "snapshot", "--device", "cuda", "--trace", "t.json"),
        "--workload snapshot runs on CPUs only",
        "use --device cpu",
    ),
]

#: Output names of the cases: none may appear, wherever the case points them.
OUTPUT_OPTIONS = {"--trace", "--gantt", "--save-schedule", "--out", "-o", "--chrome"}


def _read_only_folder(base: Path) -> Path | None:
    """A folder in which no file can be created: permission bits for a user; for root, who
    ignores them, sysfs (which refuses new files to everyone)."""
    if os.geteuid() != 0:
        folder = base / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/sys") if Path("/sys").is_dir() else None


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(case: Case, folder: Path) -> dict:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    ro = None
    if any("{ro}" in a for a in case.args):
        ro = _read_only_folder(folder)
        if ro is None:
            return {"skip": "no read-only folder on this machine (root without /sys)"}
    args = [a.replace("{ro}", str(ro)) for a in case.args]
    before = _listing(folder)
    r = subprocess.run(
        [sys.executable, "-m", "tgpipe", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        env={**os.environ, **case.env},
    )
    outputs = [args[k + 1] for k, a in enumerate(args[:-1]) if a in OUTPUT_OPTIONS]
    return {
        "args": args,
        "ro": str(ro),
        "result": r,
        "before": before,
        "after": _listing(folder),
        "left": [
            p
            for p in outputs
            if (folder / p).exists() and not (folder / p).is_dir() and p not in case.files
        ],
        "tmp_left": [
            str(p)
            for out in outputs
            for p in ((folder / out).parent.glob(f".{Path(out).name}.*.tmp"))
            if (folder / out).parent.is_dir()
        ],
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once, two or three at a time (threads wait on subprocesses)."""
    base = tmp_path_factory.mktemp("bad-input")
    folders = {}
    for case in CASES:
        folders[case.id] = base / case.id
        folders[case.id].mkdir()
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = {c.id: pool.submit(_run, c, folders[c.id]) for c in CASES}
    return {name: future.result() for name, future in done.items()}


def test_the_table_is_big_enough_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    areas = {i.split("-")[0] for i in ids}
    assert {"data", "profile", "schedule", "cli", "gantt", "run"} <= areas


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(results, case):
    got = results[case.id]
    if "skip" in got:
        pytest.skip(got["skip"])
    r = got["result"]
    err = r.stderr.strip()
    assert r.returncode == 2, (got["args"], r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, r.stderr
    command = case.args[0]
    assert err.startswith(f"tgpipe {command}: error: "), err
    for part in (case.problem, case.remedy):
        part = part.replace("{ro}", got["ro"])
        assert part in err, f"expected {part!r} in: {err}"
    assert r.stdout.count("wrote") == 0, r.stdout
    assert got["left"] == [] and got["tmp_left"] == [], (got["left"], got["tmp_left"])
    assert got["after"] == got["before"], sorted(got["after"] ^ got["before"])


# ---- look like bad input, accepted on purpose (see tgpipe.executor.data) --------------------
def _info(tmp_path, text: str) -> dict[str, str]:
    (tmp_path / "d.csv").write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "tgpipe", "data", "info", "d.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return {line[:10].strip(): line[11:] for line in r.stdout.splitlines()}


def test_huge_sparse_ids_load_renumbered(tmp_path):
    """Ids up to 2^53 - 1, far apart, are renumbered 0..N-1: no array as large as the ids."""
    info = _info(tmp_path, "u,i,ts,label\n9007199254740991,1000000000000,1,0\n5,7,2,0\n")
    assert info["events"] == "2" and info["nodes"].startswith("4 ")


def test_duplicate_rows_are_kept_and_counted(tmp_path):
    """Two identical rows are two events (TGN and JODIE keep them); info counts them."""
    info = _info(tmp_path, "u,i,ts,label\n0,10,1,0\n0,10,1,0\n1,11,2,0\n")
    assert info["events"] == "3"
    assert "1 duplicate events (same pair and time, kept)" in info["repeats"]
