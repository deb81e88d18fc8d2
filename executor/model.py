"""TGN: node memory updated by a GRU, one temporal attention layer, a link predictor.

The model is cut along the DAG's ops, so that each op calls one method:

- `TGN.update_memory` (MEM_ROOT, MEM_SUPPORT): a node's memory after its pending mail,
  ``GRU([mail, time(mail_ts - mem_ts)], mem)``; a pure function of the node's stored rows,
  so every copy of a node in a batch gets the same value and may be computed once;
- `TGN.embed` (FWD): for each node to embed, attention of its memory (plus projected node
  features) over its sampled neighbours' memories, edge features and time(t - t_event), t
  being the batch's time; one embedding per distinct node and batch, like the memory;
- `TGN.link_logits` (FWD): a score for (src, dst) and (src, negative).

Mails follow TGL: the mail of an event (u, v, e) to u is ``[mem_u, mem_v, edge_feat_e]``, with
the memories just updated in the batch, and its time is the event's.

Examples
--------
>>> model = build_model(TGNConfig(memory_dim=4, time_dim=2, embed_dim=4), edge_dim=0, seed=0)
>>> model.mail_dim, sum(p.numel() for p in model.parameters()) > 0
(8, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tgpipe.errors import InputError
from tgpipe.executor.memory import MemoryRows

__all__ = ["TGN", "TGNConfig", "TimeEncoder", "build_model"]


@dataclass(frozen=True)
class TGNConfig:
    """Model and optimizer sizes; the defaults are TGN's on the JODIE data sets."""

    memory_dim: int = 100
    time_dim: int = 100
    embed_dim: int = 100
    heads: int = 2
    neighbors: int = 10
    lr: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("memory_dim", "time_dim", "embed_dim", "heads", "neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model {name} must be an integer >= 1, got {value!r}")
        if self.embed_dim % self.heads:
            raise InputError(f"embed_dim {self.embed_dim} must be a multiple of heads {self.heads}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be > 0, got {self.lr!r}")


class TimeEncoder(nn.Module):
    """cos(t w + b), with frequencies spread over nine decades at the start (as in TGL)."""

    def __init__(self, dim: int):
        super().__init__()
        self.freq = nn.Parameter(1.0 / 10 ** torch.linspace(0, 9, dim))
        self.phase = nn.Parameter(torch.zeros(dim))

    def forward(self, dt: torch.Tensor) -> torch.Tensor:
        return torch.cos(dt.unsqueeze(-1) * self.freq + self.phase)


class TGN(nn.Module):
    """The parameters of TGN and the three computations the ops run (see the module doc)."""

    def __init__(self, config: TGNConfig, edge_dim: int = 0, node_dim: int = 0):
        super().__init__()
        c = config
        self.config, self.edge_dim, self.node_dim = c, edge_dim, node_dim
        self.mail_dim = 2 * c.memory_dim + edge_dim
        # memory updater
        self.memory_time = TimeEncoder(c.time_dim)
        self.gru = nn.GRUCell(self.mail_dim + c.time_dim, c.memory_dim)
        # embedding: node features join the memory; keys and values are a projection of the
        # neighbour's memory (done once per distinct node) plus one of edge feature and time
        self.node_proj = nn.Linear(node_dim, c.memory_dim) if node_dim else None
        self.attn_time = TimeEncoder(c.time_dim)
        self.query = nn.Linear(c.memory_dim + c.time_dim, c.embed_dim)
        self.kv_memory = nn.Linear(c.memory_dim, 2 * c.embed_dim)
        self.kv_event = nn.Linear(edge_dim + c.time_dim, 2 * c.embed_dim, bias=False)
        self.merge = nn.Linear(c.embed_dim + c.memory_dim, c.embed_dim)
        self.norm = nn.LayerNorm(c.embed_dim)
        # link predictor
        self.pred_src = nn.Linear(c.embed_dim, c.embed_dim)
        self.pred_dst = nn.Linear(c.embed_dim, c.embed_dim)
        self.pred_out = nn.Linear(c.embed_dim, 1)

    def update_memory(self, rows: MemoryRows) -> torch.Tensor:
        """Memory of each row's node after its pending mail [n, memory_dim]."""
        dt = (rows.mail_ts - rows.mem_ts).to(rows.mem.dtype)
        return self.gru(torch.cat([rows.mail, self.memory_time(dt)], dim=1), rows.mem)

    def embed(
        self,
        memory: torch.Tensor,
        query: torch.Tensor,
        nbr: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor,
        dt: torch.Tensor,
        edge: torch.Tensor | None = None,
        node_feat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings [Q, embed_dim] of Q nodes.

        `memory` [T, d] holds one row per distinct node of the batch; `query` [Q] and `nbr`
        [Q, k] index it; `mask` [Q, k] marks real neighbours; `slots` [V] are the flat
        indices of the real ones (``mask.view(-1).nonzero()``), and for them `dt` [V] is the
        batch's time minus the event's, `edge` [V, edge_dim] the event's features;
        `node_feat` [T, node_dim]. Padding costs no time encoding.
        """
        c = self.config
        if self.node_proj is not None:
            memory = memory + self.node_proj(node_feat)
        n_query, k = nbr.shape
        h_query = memory[query]
        zero = self.attn_time(dt.new_zeros(1)).expand(n_query, -1)
        q = self.query(torch.cat([h_query, zero], dim=1))
        event = self.attn_time(dt)
        if self.edge_dim:
            event = torch.cat([edge, event], dim=1)
        kv = self.kv_memory(memory)[nbr].view(n_query * k, -1)
        kv = kv.index_add(0, slots, self.kv_event(event))
        key, value = kv.view(n_query, k, -1).split(c.embed_dim, dim=2)
        head = c.embed_dim // c.heads
        q = q.view(n_query, 1, c.heads, head)
        key = key.reshape(n_query, k, c.heads, head)
        value = value.reshape(n_query, k, c.heads, head)
        score = (q * key).sum(-1) / math.sqrt(head)  # [Q, k, heads]
        keep = mask.unsqueeze(-1)
        weight = torch.softmax(score.masked_fill(~keep, -1e9), dim=1) * keep
        attended = (weight.unsqueeze(-1) * value).sum(1).reshape(n_query, c.embed_dim)
        return self.norm(torch.relu(self.merge(torch.cat([attended, h_query], dim=1))))

    def link_logits(
        self, z_src: torch.Tensor, z_dst: torch.Tensor, z_neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the positive pairs (src, dst) and the negative ones (src, neg)."""
        src = self.pred_src(z_src)
        pos = self.pred_out(torch.relu(src + self.pred_dst(z_dst))).squeeze(-1)
        neg = self.pred_out(torch.relu(src + self.pred_dst(z_neg))).squeeze(-1)
        return pos, neg


def build_model(config: TGNConfig, edge_dim: int = 0, node_dim: int = 0, seed: int = 0) -> TGN:
    """A TGN whose initial weights depend on `seed` only (not on the global RNG's state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TGN(config, edge_dim, node_dim)
