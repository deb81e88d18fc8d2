"""Checkpoints of a distributed run: taken at consistent cuts, committed atomically.

A checkpoint is taken where every rank has finished batches 0..k-1 of an epoch and started
none after (`RankRunner.run_batches` drains there), so the ranks' states fit together. Each
rank writes its own state (`RankRunner.state_dict`: memory replica and undo records,
weights and Adam state, the packed learners later batches need, its losses) into a folder
named for the position; when all have written, rank 0 writes ``checkpoint.json``, the
manifest that names the folder, and only then removes older folders. Every file goes
through a temporary file and a rename, so a run killed at any moment (also during a write)
leaves the last committed checkpoint whole. Sampling and negatives are pure functions of
(seed, epoch, batch) and need no state; the torch RNG state is saved anyway, for models
that draw (dropout).

`--resume` reads the manifest, checks that the run is the same one (schedule, ranks,
batches, batch size, data size, seed), and goes on from the position: a resumed run ends
exactly where the uninterrupted run ends. Ranks on several machines need a folder all of
them reach (a shared file system).

Examples
--------
>>> segment_ends(10, every=4, g=1)
[4, 8, 10]
>>> segment_ends(10, every=3, g=2)  # cuts never split a synchronous group
[4, 8, 10]
>>> segment_ends(10, every=None, g=1)
[10]
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import torch

from tgpipe.errors import InputError
from tgpipe.files import atomic_open

__all__ = ["MANIFEST", "Checkpoints", "segment_ends"]

MANIFEST = "checkpoint.json"
#: Test hook: "EPOCH:BATCH" makes rank 0 die half-way through writing that checkpoint.
_DIE_IN = "TGPIPE_TEST_DIE_IN_CHECKPOINT"


def segment_ends(n_batches: int, every: int | None, g: int) -> list[int]:
    """Where an epoch of `n_batches` is cut for checkpoints every `every` batches (rounded
    up to whole synchronous groups of `g`); the last end is the epoch's."""
    if not every:
        return [n_batches]
    step = -(-every // g) * g
    return [*range(step, n_batches, step), n_batches]


class Checkpoints:
    """The checkpoints of one run in `folder`; `meta` identifies the run."""

    def __init__(self, folder: str | os.PathLike, meta: dict):
        self.folder, self.meta = Path(folder), meta

    def latest(self) -> tuple[int, int] | None:
        """(epoch, batch) of the last committed checkpoint, None if there is none; a
        checkpoint of another run is refused with one line."""
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
            position = (int(manifest["epoch"]), int(manifest["batch"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a tgpipe checkpoint manifest ({exc})") from None
        differ = [k for k, v in self.meta.items() if manifest.get("run", {}).get(k) != v]
        if differ:
            got = {k: manifest.get("run", {}).get(k) for k in differ}
            want = {k: self.meta[k] for k in differ}
            raise InputError(
                f"the checkpoint in {self.folder} is of another run ({got}, this run: {want}): "
                "resume with the same options, or use another --checkpoint folder"
            )
        return position

    def load(self, position: tuple[int, int], rank: int) -> dict:
        state = torch.load(self._part(position, rank), map_location="cpu", weights_only=False)
        torch.set_rng_state(state.pop("rng"))
        return state

    def save(self, position: tuple[int, int], rank: int, state: dict | None, barrier) -> None:
        """Write this rank's part (None: a rank without batches writes nothing); after
        `barrier` (every rank's part is written), rank 0 commits."""
        if state is not None:
            part = self._part(position, rank)
            part.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save({**state, "rng": torch.get_rng_state()}, buffer)
            data = buffer.getvalue()
            with atomic_open(part, "wb") as f:
                if rank == 0 and os.environ.get(_DIE_IN) == "{}:{}".format(*position):
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os._exit(9)
                f.write(data)
        barrier()
        if rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            manifest = {"epoch": position[0], "batch": position[1], "run": self.meta}
            with atomic_open(self.folder / MANIFEST) as f:
                json.dump(manifest, f, indent=1)
            for old in self.folder.glob("epoch*-batch*"):
                if old != self._part(position, 0).parent:
                    shutil.rmtree(old, ignore_errors=True)

    def _part(self, position: tuple[int, int], rank: int) -> Path:
        epoch, batch = position
        return self.folder / f"epoch{epoch}-batch{batch}" / f"rank{rank}.pt"
