"""The reference trainer: any `Semantics(s_mem, s_w, g)`, exactly, in one process.

It is the yardstick of every distributed run: a schedule that claims some semantics must
end with the memory, mailbox, weights, optimizer state and per-batch losses that this
trainer computes for them. It walks the batches in order and calls the same op functions as
the runtime (`tgpipe.executor.ops`); the semantics enter in two places only:

- memory reads: batch b of group G = b // g reads store version max(0, G - s_mem) * g
  (`tgpipe.executor.versions`), rebuilt by the versioned store when later batches already
  wrote;
- weights: the batches of group G compute with theta_max(0, G - s_w), and the step of group
  G is ``theta_{G+1} = Adam(theta_G, mean of the group's gradients)``: sequential steps with
  stale gradients. Each epoch starts with a drained pipeline (theta of the epoch's start)
  and zero memory.

Sequential = (0, 0, 1) is plain TGN training. Evaluation is the standard transductive one:
after training, the validation batches and then the test batches run forward in order, with
the final weights, updating a copy of the memory as they go; AP and AUC are the means over
batches of each batch's AP and AUC (as TGN, TGL and PyG's example report them).

Examples
--------
>>> import numpy as np
>>> from tgpipe.executor.graph import TemporalGraph
>>> from tgpipe.dag.semantics import pipetgl
>>> rng = np.random.default_rng(0)
>>> g = TemporalGraph(rng.integers(0, 5, 60), rng.integers(5, 9, 60), np.arange(60.0))
>>> cfg = TGNConfig(memory_dim=8, time_dim=4, embed_dim=8)
>>> result = train(g, pipetgl(2), batch_size=10, config=cfg)
>>> len(result.losses[0]), result.learner.steps, 0.5 < result.test[0] <= 1
(5, 5, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tgpipe.dag.semantics import Semantics
from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.learner import Learner, copy_params, snapshot_params
from tgpipe.executor.memory import MemoryStore
from tgpipe.executor.model import TGN, TGNConfig, build_model
from tgpipe.executor.ops import (
    BatchState,
    average_grads,
    bwd,
    feat,
    fwd,
    mem_fetch,
    mem_root,
    mem_support,
    mem_write,
    open_batch,
    sample,
    step,
)
from tgpipe.executor.scores import average_precision, roc_auc
from tgpipe.executor.stream import PHASES, TEST, TRAIN, VAL, Stream
from tgpipe.executor.versions import memory_version, weight_version
from tgpipe.progress import Progress

__all__ = ["Reference", "TrainResult", "evaluate", "train"]


@dataclass
class TrainResult:
    """What a reference run ends with."""

    semantics: Semantics
    losses: list[list[float]]  #: per epoch, per training batch
    seconds: list[float]  #: training time of each epoch (evaluation not counted)
    store: MemoryStore  #: the memory after the last training batch (before evaluation)
    learner: Learner  #: final weights and optimizer state
    val: list[tuple[float, float]] = field(default_factory=list)  #: (AP, AUC) per evaluation
    test: tuple[float, float] | None = None  #: (AP, AUC) after the last epoch


class Reference:
    """A model, its optimizer and a memory store, trained one batch at a time."""

    def __init__(
        self,
        stream: Stream,
        semantics: Semantics | None = None,
        config: TGNConfig | None = None,
    ):
        self.stream = stream
        self.semantics = (semantics or Semantics()).validate()
        self.config = config or TGNConfig()
        if self.config.neighbors != stream.sampler.k:
            raise InputError(
                f"the model attends to {self.config.neighbors} neighbours but the stream "
                f"samples {stream.sampler.k}"
            )
        model = self._new_model()
        self.learner = Learner(model, self.config.lr)
        self.store = MemoryStore(
            stream.graph.n_nodes, self.config.memory_dim, model.mail_dim, stream.device
        )
        self._stale = self._new_model() if self.semantics.s_w else None  # older weights
        self._stale_version: int | None = None

    def _new_model(self) -> TGN:
        s = self.stream
        return build_model(self.config, s.edge_dim, s.node_dim, s.seed).to(s.device)

    def _weights(self, version: int, snapshots: dict[int, list[torch.Tensor]], base: int) -> TGN:
        """The model holding theta_version (counted from the epoch's start)."""
        if version == self.learner.steps - base:
            return self.learner.model
        if self._stale_version != version:
            copy_params(self._stale, snapshots[version])
            self._stale_version = version
        return self._stale

    def train_epoch(self, epoch: int = 0, progress: Progress | None = None) -> list[float]:
        """One epoch under the semantics; returns each batch's loss."""
        sem, stream, store = self.semantics, self.stream, self.store
        store.reset()
        n = stream.n_batches(TRAIN)
        base = self.learner.steps
        snapshots = {0: snapshot_params(self.learner.model)} if sem.s_w else {}
        self._stale_version = None
        losses = []
        for first in range(0, n, sem.g):
            version = weight_version(sem, first)
            model = self._weights(version, snapshots, base)
            grads = []
            for b in range(first, min(first + sem.g, n)):
                state = open_batch(stream, b, epoch=epoch, semantics=sem)
                forward(state, stream, store, model)
                bwd(state, model)
                losses.append(state.loss_value)
                grads.append(state.grads)
                if progress:
                    progress.update(note=f"loss {state.loss_value:.4f}")
            step(self.learner, grads[0] if len(grads) == 1 else average_grads(grads))
            store.prune(memory_version(sem, first + sem.g))
            if sem.s_w:
                done = self.learner.steps - base
                snapshots[done] = snapshot_params(self.learner.model)
                for old in [v for v in snapshots if v < done - sem.s_w]:
                    del snapshots[old]
        return losses

    def evaluate(self, phases: tuple[int, ...] = (VAL, TEST)) -> dict[int, tuple[float, float]]:
        """`evaluate` with this trainer's stream, weights and memory."""
        return evaluate(self.stream, self.learner.model, self.store, phases)


def forward(state: BatchState, stream: Stream, store: MemoryStore, model: TGN) -> None:
    """A batch's ops up to its loss, in the DAG's order, one after the other: what training
    and evaluation share (training goes on with BWD and STEP)."""
    sample(state, stream)
    feat(state, stream)
    mem_fetch(state, store)
    mem_root(state, model)
    mem_write(state, store)
    mem_support(state, store, model)
    fwd(state, model)


@torch.no_grad()
def evaluate(
    stream: Stream, model: TGN, store: MemoryStore, phases: tuple[int, ...] = (VAL, TEST)
) -> dict[int, tuple[float, float]]:
    """Mean per-batch (AP, AUC) of each phase, run in order from the training memory `store`.

    The validation batches run before the test ones even when only the test is asked for,
    since the test's memory is the one the validation leaves. `store` itself is left as it
    is. The reference trainer and `tgpipe run` both score with this function.
    """
    scores: dict[int, tuple[float, float]] = {}
    for phase in range(VAL, max(phases) + 1):
        store = store.copy()  # versions count from 0 in each phase
        aps, aucs = [], []
        for b in range(stream.n_batches(phase)):
            state = open_batch(stream, b, phase=phase)
            forward(state, stream, store, model)
            logits = torch.cat([state.pos_logit, state.neg_logit]).cpu().numpy()
            labels = np.repeat([1, 0], state.size)
            aps.append(average_precision(logits, labels))
            aucs.append(roc_auc(logits, labels))
            store.prune(store.version)
        if phase in phases:
            if not aps:
                raise InputError(f"the {PHASES[phase]} part of the split is empty")
            scores[phase] = (float(np.mean(aps)), float(np.mean(aucs)))
    return scores


def train(
    graph: TemporalGraph,
    semantics: Semantics | None = None,
    *,
    epochs: int = 1,
    batch_size: int = 600,
    seed: int = 0,
    config: TGNConfig | None = None,
    device: torch.device | str = "cpu",
    evaluate: bool = True,
    validate_each_epoch: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train on the graph's training part under `semantics` (sequential by default).

    With `evaluate`, validation and test AP/AUC are measured after the last epoch (and
    validation after every epoch with `validate_each_epoch`).
    """
    config = config or TGNConfig()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"number of epochs must be an integer >= 1, got {epochs!r}")
    stream = Stream(graph, batch_size, seed=seed, neighbors=config.neighbors, device=device)
    ref = Reference(stream, semantics, config)
    result = TrainResult(ref.semantics, [], [], ref.store, ref.learner)
    for epoch in range(epochs):
        bar = Progress(stream.n_batches(TRAIN), f"epoch {epoch}", "batch") if progress else None
        start = time.perf_counter()
        result.losses.append(ref.train_epoch(epoch, bar))
        result.seconds.append(time.perf_counter() - start)
        last = epoch == epochs - 1
        if evaluate and last:
            scores = ref.evaluate((VAL, TEST))
            result.val.append(scores[VAL])
            result.test = scores[TEST]
        elif evaluate and validate_each_epoch:
            result.val.append(ref.evaluate((VAL,))[VAL])
    return result
