"""The batches of a run: split, event ranges, negatives, and the sampler they share.

A `Stream` is what every rank needs to open any batch by number, in any order: the graph,
its chronological train / validation / test split, the batch size, the neighbour sampler
over the whole graph (validation batches see training events, as in transductive
evaluation), and the pool of negative destinations.

Negatives are a pure function of (seed, epoch, phase, batch): each batch draws from a
generator seeded by those four numbers, so the reference and every rank draw the same ones
whatever the execution order. Evaluation draws with epoch 0, the same negatives every epoch.

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> g = TemporalGraph(np.arange(20) % 3, 3 + np.arange(20) % 2, np.arange(20.0))
>>> s = Stream(g, batch_size=6)
>>> s.n_batches(TRAIN), s.events(TRAIN, 2), s.events(VAL, 0)
(3, (12, 14), (14, 17))
>>> bool((s.negatives(TRAIN, 0, 1, 6) == s.negatives(TRAIN, 0, 1, 6)).all())
True
"""

from __future__ import annotations

import numpy as np
import torch

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.sampler import RecentSampler

__all__ = ["PHASES", "TEST", "TRAIN", "VAL", "Stream"]

TRAIN, VAL, TEST = 0, 1, 2
PHASES = ("train", "val", "test")


class Stream:
    """One graph cut into numbered batches per phase (see the module doc)."""

    def __init__(
        self,
        graph: TemporalGraph,
        batch_size: int = 600,
        *,
        seed: int = 0,
        neighbors: int = 10,
        device: torch.device | str = "cpu",
        val: float = 0.15,
        test: float = 0.15,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {seed!r}")
        self.graph, self.batch_size, self.seed = graph, batch_size, seed
        self.device = torch.device(device)
        self.sampler = RecentSampler(graph, neighbors)
        parts = graph.split(val, test)
        cuts = np.cumsum([0] + [len(p) for p in parts])
        self.bounds = tuple(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
        self.pool = np.unique(graph.dst)  #: the destinations negatives are drawn from
        if len(parts[0]) == 0:
            raise InputError(f"{graph.name}: the training part of the split is empty")

    @property
    def edge_dim(self) -> int:
        return 0 if self.graph.edge_feat is None else self.graph.edge_feat.shape[1]

    @property
    def node_dim(self) -> int:
        return 0 if self.graph.node_feat is None else self.graph.node_feat.shape[1]

    def n_batches(self, phase: int) -> int:
        start, stop = self.bounds[phase]
        return -(-(stop - start) // self.batch_size)

    def events(self, phase: int, batch: int) -> tuple[int, int]:
        """The event range [start, stop) of a batch, in the whole graph's numbering."""
        first, last = self.bounds[phase]
        if not 0 <= batch < self.n_batches(phase):
            raise InputError(f"no {PHASES[phase]} batch {batch}: there are {self.n_batches(phase)}")
        start = first + batch * self.batch_size
        return start, min(start + self.batch_size, last)

    def negatives(self, phase: int, epoch: int, batch: int, n: int) -> np.ndarray:
        """`n` destinations drawn uniformly from `pool` for that batch (pure, see above)."""
        rng = np.random.default_rng([self.seed, epoch, phase, batch])
        return self.pool[rng.integers(0, len(self.pool), size=n)]
