"""Training semantics: which memory and which weights each batch reads.

A schedule is only worth comparing with another if both compute the same thing, or if the
difference is stated. `Semantics(s_mem, s_w, g)` states it:

- ``s_mem`` memory staleness: batch group G reads the node memory left by group G-1-s_mem;
- ``s_w`` weight staleness: group G's forward uses the weights after group G-1-s_w's step;
- ``g`` synchronous group size: g consecutive batches read one memory version and share one
  optimizer step (their gradients are averaged).

With g = 1 a group is a batch. The presets are those of the reference systems.

Examples
--------
>>> pipetgl(4)
Semantics(s_mem=0, s_w=3, g=1)
>>> Semantics.parse("mspipe:3", n_ranks=2)
Semantics(s_mem=2, s_w=0, g=2)
"""

from __future__ import annotations

from typing import NamedTuple

from tgpipe.errors import InputError

__all__ = ["PRESETS", "Semantics", "data_parallel", "mspipe", "pipetgl", "sequential"]


class Semantics(NamedTuple):
    """Memory staleness, weight staleness and synchronous group size (see module doc)."""

    s_mem: int = 0
    s_w: int = 0
    g: int = 1

    def validate(self) -> Semantics:
        """Return self, or raise InputError naming the bad field."""
        for field, low in (("s_mem", 0), ("s_w", 0), ("g", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"semantics {field} must be an integer >= {low}, got {value!r}")
        return self

    def group(self, batch: int) -> int:
        """The synchronous group a batch belongs to."""
        return batch // self.g

    def __str__(self) -> str:
        return f"(s_mem={self.s_mem}, s_w={self.s_w}, g={self.g})"

    @staticmethod
    def parse(text: str, n_ranks: int = 1) -> Semantics:
        """A preset name (``pipetgl``, ``mspipe:K``...) or an explicit ``s_mem,s_w,g``."""
        text = text.strip()
        name, _, arg = text.partition(":")
        if name in PRESETS:
            if arg and name != "mspipe":
                raise InputError(f"semantics {name!r} takes no ':' argument")
            try:
                args = (int(arg),) if arg else ()
            except ValueError:
                raise InputError(f"mspipe bound must be an integer, got {arg!r}") from None
            return PRESETS[name](n_ranks, *args)
        parts = text.split(",")
        if len(parts) == 3:
            try:
                return Semantics(*(int(p) for p in parts)).validate()
            except ValueError:
                pass
        raise InputError(
            f"unknown semantics {text!r}: use one of {', '.join(PRESETS)} (mspipe:K for bound K) "
            "or three integers s_mem,s_w,g"
        )


def _check_ranks(n_ranks: int) -> int:
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int) or n_ranks < 1:
        raise InputError(f"number of GPUs must be an integer >= 1, got {n_ranks!r}")
    return n_ranks


def sequential(n_ranks: int = 1) -> Semantics:
    """Exact training, one batch after the other: (0, 0, 1)."""
    _check_ranks(n_ranks)
    return Semantics(0, 0, 1)


def pipetgl(n_ranks: int) -> Semantics:
    """PipeTGL ring on W ranks: exact memory, weights W-1 steps old: (0, W-1, 1)."""
    return Semantics(0, _check_ranks(n_ranks) - 1, 1)


def data_parallel(n_ranks: int) -> Semantics:
    """TGL/GNNFlow data parallel on W ranks: groups of W batches: (0, 0, W)."""
    return Semantics(0, 0, _check_ranks(n_ranks))


def mspipe(n_ranks: int, k: int = 2) -> Semantics:
    """MSPipe with staleness bound k on W ranks: (k-1, 0, W)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"mspipe staleness bound k must be an integer >= 1, got {k!r}")
    return Semantics(k - 1, 0, _check_ranks(n_ranks))


#: Preset name -> function of the number of ranks.
PRESETS = {
    "sequential": sequential,
    "pipetgl": pipetgl,
    "data_parallel": data_parallel,
    "mspipe": mspipe,
}
