"""The machine shape: how many ranks, how many per machine, and what each resource counts.

Batch b runs on rank b mod W unless a schedule says otherwise; ranks 0..k-1 share machine 0,
k..2k-1 machine 1, and so on. Each rank owns one GPU with one copy engine each way and a
network port; the CPU cores are shared by the ranks of a machine.

Examples
--------
>>> c = Cluster(8, gpus_per_machine=4)
>>> c.machines, c.same_machine(3, 4)
(2, False)
"""

from __future__ import annotations

from typing import NamedTuple

from tgpipe.dag.profile import CostProfile
from tgpipe.errors import InputError

__all__ = ["PER_RANK_RESOURCES", "Cluster"]

#: Resource kinds that every rank has one of; ``cpu`` is per machine (its cores).
PER_RANK_RESOURCES = ("gpu", "h2d", "d2h", "net")


class Cluster(NamedTuple):
    """W ranks, `gpus_per_machine` of them on each machine (None: all on one)."""

    n_ranks: int = 1
    gpus_per_machine: int | None = None

    def validate(self) -> Cluster:
        for name, value in (
            ("number of GPUs", self.n_ranks),
            ("GPUs per machine", self.gpus_per_machine or 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        return self

    @property
    def per_machine(self) -> int:
        return self.gpus_per_machine or self.n_ranks

    @property
    def machines(self) -> int:
        return -(-self.n_ranks // self.per_machine)

    def machine(self, rank: int) -> int:
        return rank // self.per_machine

    def same_machine(self, a: int, b: int) -> bool:
        return self.machine(a) == self.machine(b)

    def resource_count(self, kind: str, profile: CostProfile) -> int:
        """How many of a resource kind the whole cluster has."""
        if kind == "cpu":
            return profile.cpu_cores * self.machines
        if kind in PER_RANK_RESOURCES:
            return self.n_ranks
        raise InputError(f"unknown resource {kind!r}")
