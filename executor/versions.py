"""Which memory version and which weights each batch reads, under given semantics.

The one definition of the contract between the reference trainer and the distributed
runtime (see `tgpipe.dag.semantics`). Batches b = 0..n-1 form groups G = b // g.

- Memory: version V_k of the store is what the writes of groups 0..k-1 leave, applied in
  batch order; a batch of group G reads V_max(0, G - s_mem). In the store's own counting (one
  version per batch write) that is version ``max(0, G - s_mem) * g``.
- Weights: theta_k is the weights (and optimizer state) after k steps, one step per group;
  a batch of group G computes with theta_max(0, G - s_w). Counted from the start of the
  epoch: each epoch starts from a drained pipeline, and its memory from zero.

Examples
--------
>>> from tgpipe.dag.semantics import Semantics
>>> [memory_version(Semantics(0, 0, 2), b) for b in range(5)]
[0, 0, 2, 2, 4]
>>> [weight_version(Semantics(0, 2, 1), b) for b in range(5)]
[0, 0, 0, 1, 2]
"""

from __future__ import annotations

from tgpipe.dag.semantics import Semantics

__all__ = ["memory_version", "weight_version"]


def memory_version(semantics: Semantics, batch: int) -> int:
    """The store version (number of batch writes applied) that `batch` reads."""
    s_mem, _, g = semantics
    return max(0, batch // g - s_mem) * g


def weight_version(semantics: Semantics, batch: int) -> int:
    """How many of the epoch's optimizer steps the weights that `batch` uses have taken."""
    _, s_w, g = semantics
    return max(0, batch // g - s_w)
