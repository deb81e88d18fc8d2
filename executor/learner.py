"""The weights and their optimizer: what STEP changes and what a weight ring carries.

A `Learner` owns a model and its Adam state and counts its steps. Gradients come from
outside as a list (one tensor per parameter, in ``model.parameters()`` order), because with
stale weights they were computed on another copy of the weights, on this rank or another.

The whole learner lives in one flat float32 tensor, `flat`: the weights, the Adam moments
and the step count, in `pack`'s layout. The model's parameters and the moments are views
into it, and Adam steps the weights as one tensor. So `pack` is one copy, `unpack` one copy
into place, and `adopt` none: a ring that receives a packed learner makes it the learner's
storage as it is, and the storage it leaves behind stays what it was, for whoever still
sends or reads it (`tgpipe.executor.weight_plan.WeightPlan` says when that is safe).

Examples
--------
>>> from tgpipe.executor.model import TGNConfig, build_model
>>> a = Learner(build_model(TGNConfig(memory_dim=4, time_dim=2, embed_dim=4)), lr=0.1)
>>> a.step([torch.ones_like(p) for p in a.params])
>>> b = Learner(build_model(TGNConfig(memory_dim=4, time_dim=2, embed_dim=4), seed=1), lr=0.1)
>>> b.unpack(a.pack())
>>> b.steps, bool(torch.equal(a.pack(), b.pack()))
(1, True)
>>> packed = a.pack()
>>> b.adopt(packed)
>>> b.flat is packed
True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Learner", "copy_params", "load_weights", "snapshot_params"]


def snapshot_params(model: nn.Module) -> list[torch.Tensor]:
    """Detached copies of the model's parameters."""
    return [p.detach().clone() for p in model.parameters()]


def copy_params(model: nn.Module, params: list[torch.Tensor]) -> None:
    """Load parameter values (as `snapshot_params` gives them) into `model`."""
    with torch.no_grad():
        for p, value in zip(model.parameters(), params, strict=True):
            p.copy_(value)


def load_weights(model: nn.Module, flat: torch.Tensor) -> None:
    """Load the weights of a packed learner (`Learner.pack`) into `model`, nothing else:
    a copy to compute with."""
    params = list(model.parameters())
    chunks = flat[: sum(p.numel() for p in params)].split([p.numel() for p in params])
    copy_params(model, [c.view_as(p) for c, p in zip(chunks, params, strict=True)])


class Learner:
    """A model, its Adam optimizer and the number of steps taken, in one flat tensor."""

    def __init__(self, model: nn.Module, lr: float = 1e-4):
        self.model = model
        self.params = list(model.parameters())
        self._sizes = [p.numel() for p in self.params]
        n = sum(self._sizes)
        device = self.params[0].device
        flat = torch.zeros(3 * n + 1, device=device)
        flat[:n] = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.weights = nn.Parameter(flat[:n])  #: what Adam steps: all parameters at once
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self._grad = torch.empty(n, device=device)  #: the gradients, flat, for Adam
        self.adopt(flat)

    @property
    def steps(self) -> int:
        return int(self._step.item())

    def _check(self, flat: torch.Tensor) -> None:
        if flat.numel() != self.packed_size():
            raise ValueError(
                f"packed learner has {flat.numel()} numbers, expected {self.packed_size()}"
            )

    def adopt(self, flat: torch.Tensor) -> None:
        """Become the packed learner `flat` by using it as this learner's storage (no copy):
        from now on `step` changes `flat`, and the storage this learner had is left as it
        was."""
        self._check(flat)
        n = len(self.weights)
        self.flat = flat
        with torch.no_grad():
            self.weights.data = flat[:n]
            for p, chunk in zip(self.params, flat[:n].split(self._sizes), strict=True):
                p.data = chunk.view_as(p)
        self._step = flat[-1:]
        self.optimizer.state[self.weights] = {
            "step": torch.tensor(float(flat[-1])),
            "exp_avg": flat[n : 2 * n],
            "exp_avg_sq": flat[2 * n : 3 * n],
        }

    def step(self, grads: list[torch.Tensor]) -> None:
        """One Adam step with these gradients."""
        torch.cat([g.reshape(-1).to(self._grad.device) for g in grads], out=self._grad)
        self.weights.grad = self._grad
        self.optimizer.step()
        self.weights.grad = None
        self._step.add_(1)

    def pack(self) -> torch.Tensor:
        """Weights, Adam moments and step count as one flat float32 tensor (a copy)."""
        return self.flat.clone()

    def packed_size(self) -> int:
        """Numbers in `pack`'s tensor (what a receiver allocates), without packing."""
        return 3 * sum(self._sizes) + 1

    def unpack(self, flat: torch.Tensor) -> None:
        """Become the learner that `pack` described (a copy into this learner's storage)."""
        self._check(flat)
        self.flat.copy_(flat)
        self.optimizer.state[self.weights]["step"].fill_(float(flat[-1]))
