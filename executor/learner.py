"""The weights and their optimizer: what STEP changes and what a weight ring carries.

A `Learner` owns a model and its Adam state and counts its steps. Gradients come from
outside as a list (one tensor per parameter, in ``model.parameters()`` order), because with
stale weights they were computed on another copy of the weights, on this rank or another.
`pack` and `unpack` turn the whole learner (weights, Adam moments, step count) into one flat
tensor and back, for a ring that sends the weights with their optimizer state.

Examples
--------
>>> from tgpipe.executor.model import TGNConfig, build_model
>>> a = Learner(build_model(TGNConfig(memory_dim=4, time_dim=2, embed_dim=4)), lr=0.1)
>>> a.step([torch.ones_like(p) for p in a.params])
>>> b = Learner(build_model(TGNConfig(memory_dim=4, time_dim=2, embed_dim=4), seed=1), lr=0.1)
>>> b.unpack(a.pack())
>>> b.steps, bool(torch.equal(a.pack(), b.pack()))
(1, True)
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
    """A model, its Adam optimizer and the number of steps taken."""

    def __init__(self, model: nn.Module, lr: float = 1e-4):
        self.model = model
        self.params = list(model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.steps = 0

    def step(self, grads: list[torch.Tensor]) -> None:
        """One Adam step with these gradients."""
        for p, grad in zip(self.params, grads, strict=True):
            p.grad = grad.to(p.device)
        self.optimizer.step()
        for p in self.params:
            p.grad = None
        self.steps += 1

    def _moments(self) -> list[torch.Tensor]:
        out = []
        for key in ("exp_avg", "exp_avg_sq"):
            for p in self.params:
                state = self.optimizer.state.get(p)
                out.append(state[key] if state else torch.zeros_like(p))
        return out

    def pack(self) -> torch.Tensor:
        """Weights, Adam moments and step count as one flat float32 tensor."""
        parts = [p.detach().reshape(-1) for p in self.params]
        parts += [m.reshape(-1) for m in self._moments()]
        parts.append(torch.tensor([float(self.steps)], device=self.params[0].device))
        return torch.cat(parts)

    def packed_size(self) -> int:
        """Numbers in `pack`'s tensor (what a receiver allocates), without packing."""
        return 3 * sum(p.numel() for p in self.params) + 1

    def unpack(self, flat: torch.Tensor) -> None:
        """Become the learner that `pack` described."""
        sizes = [p.numel() for p in self.params] * 3 + [1]
        if flat.numel() != sum(sizes):
            raise ValueError(f"packed learner has {flat.numel()} numbers, expected {sum(sizes)}")
        chunks = list(flat.split(sizes))
        n = len(self.params)
        self.steps = int(chunks[-1].item())
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(chunks[i].view_as(p))
                if self.steps:
                    self.optimizer.state[p] = {
                        "step": torch.tensor(float(self.steps)),
                        "exp_avg": chunks[n + i].view_as(p).clone(),
                        "exp_avg_sq": chunks[2 * n + i].view_as(p).clone(),
                    }
                else:
                    self.optimizer.state.pop(p, None)
