"""Accuracy and speed of our sequential TGN beside a TGN built from torch-geometric's parts.

    pip install -e '.[bench]'
    python bench/bench_accuracy.py --epochs 3 --threads 1

Both train on ``../shared/data/wikipedia.csv`` (or ``--data``) with the same chronological
70/15/15 split, batch 600, dims 100, one uniformly drawn negative destination per positive,
Adam at 1e-4, the same epochs and the same number of torch threads, then evaluate on the
validation and test parts with the memory carried through. AP and AUC are the means over
test batches, computed by the same functions for both. Seconds per epoch count training
only. The baseline follows torch-geometric's TGN example: `TGNMemory` with
`IdentityMessage` and `LastAggregator`, `LastNeighborLoader` (10 neighbours), one
`TransformerConv` layer with 2 heads, and a two-layer link predictor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.launch import keep_freed_memory
from tgpipe.executor.model import TGNConfig
from tgpipe.executor.reference import train
from tgpipe.executor.scores import average_precision, roc_auc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia.csv"
DIM, BATCH, NEIGHBORS, LR = 100, 600, 10, 1e-4


def load(path: Path, limit: int | None) -> TemporalGraph:
    """The JODIE 4-column csv (u,i,ts,label): one id space, no edge features."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, max_rows=limit)
    src, dst = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    return TemporalGraph(src, dst, table[:, 2], name=path.stem)


def run_ours(graph: TemporalGraph, epochs: int, seed: int) -> dict:
    config = TGNConfig(DIM, DIM, DIM, heads=2, neighbors=NEIGHBORS, lr=LR)
    result = train(graph, epochs=epochs, batch_size=BATCH, seed=seed, config=config)
    return {
        "seconds": result.seconds,
        "loss": float(np.mean(result.losses[-1])),
        "val": result.val[-1],
        "test": result.test,
    }


def run_pyg(graph: TemporalGraph, epochs: int, seed: int) -> dict:
    from torch_geometric.data import TemporalData
    from torch_geometric.loader import TemporalDataLoader
    from torch_geometric.nn import TGNMemory, TransformerConv
    from torch_geometric.nn.models.tgn import IdentityMessage, LastAggregator, LastNeighborLoader

    torch.manual_seed(seed)
    n_nodes = graph.n_nodes
    msg_dim = 1  # featureless events: one zero column (torch-geometric's stores reject width 0)
    data = TemporalData(
        src=torch.from_numpy(graph.src),
        dst=torch.from_numpy(graph.dst),
        t=torch.from_numpy(graph.ts.astype(np.int64)),
        msg=torch.zeros(graph.n_events, msg_dim),
    )
    cuts = np.cumsum([0] + [len(p) for p in graph.split()])
    parts = [data[int(a) : int(b)] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    loaders = [TemporalDataLoader(p, batch_size=BATCH, neg_sampling_ratio=1.0) for p in parts]

    class Attention(torch.nn.Module):
        """One TransformerConv layer whose edges carry time(last update - event time)."""

        def __init__(self, time_enc):
            super().__init__()
            self.time_enc = time_enc
            edge_dim = msg_dim + time_enc.out_channels
            self.conv = TransformerConv(DIM, DIM // 2, heads=2, dropout=0.1, edge_dim=edge_dim)

        def forward(self, x, last_update, edge_index, t, msg):
            rel = self.time_enc((last_update[edge_index[0]] - t).to(x.dtype))
            return self.conv(x, edge_index, torch.cat([rel, msg], dim=-1))

    class Predictor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.src, self.dst = torch.nn.Linear(DIM, DIM), torch.nn.Linear(DIM, DIM)
            self.out = torch.nn.Linear(DIM, 1)

        def forward(self, z_src, z_dst):
            return self.out(torch.relu(self.src(z_src) + self.dst(z_dst))).squeeze(-1)

    memory = TGNMemory(
        n_nodes, msg_dim, DIM, DIM, IdentityMessage(msg_dim, DIM, DIM), LastAggregator()
    )
    gnn, predictor = Attention(memory.time_enc), Predictor()
    modules = (memory, gnn, predictor)
    params = {p for m in modules for p in m.parameters()}
    optimizer = torch.optim.Adam(params, lr=LR)
    neighbors = LastNeighborLoader(n_nodes, size=NEIGHBORS)
    assoc = torch.empty(n_nodes, dtype=torch.long)

    def batch_logits(batch):
        n_id, edge_index, e_id = neighbors(batch.n_id)
        assoc[n_id] = torch.arange(n_id.size(0))
        z, last_update = memory(n_id)
        z = gnn(z, last_update, edge_index, data.t[e_id], data.msg[e_id])
        src = z[assoc[batch.src]]
        return predictor(src, z[assoc[batch.dst]]), predictor(src, z[assoc[batch.neg_dst]])

    def after(batch):
        memory.update_state(batch.src, batch.dst, batch.t, batch.msg)
        neighbors.insert(batch.src, batch.dst)

    seconds, losses = [], []
    for _ in range(epochs):
        for m in modules:
            m.train()
        memory.reset_state()
        neighbors.reset_state()
        start = time.perf_counter()
        losses = []
        for batch in loaders[0]:
            optimizer.zero_grad()
            pos, neg = batch_logits(batch)
            loss = F.binary_cross_entropy_with_logits(
                pos, torch.ones_like(pos)
            ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
            after(batch)
            loss.backward()
            optimizer.step()
            memory.detach()
            losses.append(float(loss))
        seconds.append(time.perf_counter() - start)

    scores = []
    with torch.no_grad():
        for m in modules:
            m.eval()
        for loader in loaders[1:]:
            aps, aucs = [], []
            for batch in loader:
                pos, neg = batch_logits(batch)
                logits = torch.cat([pos, neg]).numpy()
                labels = np.repeat([1, 0], len(pos))
                aps.append(average_precision(logits, labels))
                aucs.append(roc_auc(logits, labels))
                after(batch)
            scores.append((float(np.mean(aps)), float(np.mean(aucs))))
    return {"seconds": seconds, "loss": float(np.mean(losses)), "val": scores[0], "test": scores[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=None, help="use only the first N events")
    parser.add_argument("--only", choices=("ours", "pyg"), default=None)
    args = parser.parse_args()
    keep_freed_memory()  # as every tgpipe rank does; both systems run in this one process
    torch.set_num_threads(args.threads)
    graph = load(args.data, args.events)
    print(
        f"{graph.name}: {graph.n_events:,} events, {graph.n_nodes:,} nodes; batch {BATCH}, "
        f"{args.epochs} epochs, {args.threads} thread(s)"
    )
    systems = {"ours: tgpipe sequential": run_ours, "pyg: torch-geometric TGN": run_pyg}
    if args.only:
        systems = {k: v for k, v in systems.items() if args.only in k.lower()}
    rows = {}
    for name, fn in systems.items():
        rows[name] = fn(graph, args.epochs, args.seed)
        r = rows[name]
        times = ", ".join(f"{s:.1f}" for s in r["seconds"])
        print(f"  {name}: epochs took {times} s, last epoch's mean loss {r['loss']:.4f}")
    base = min(np.mean(r["seconds"]) for r in rows.values())
    print()
    print(
        f"{'system':<26}{'epochs':>7}{'s/epoch':>9}{'val AP':>8}{'test AP':>9}"
        f"{'test AUC':>10}{'time ratio':>12}"
    )
    pyg = rows.get("pyg: torch-geometric TGN")
    for name, r in rows.items():
        per_epoch = float(np.mean(r["seconds"]))
        ratio = per_epoch / np.mean(pyg["seconds"]) if pyg else per_epoch / base
        print(
            f"{name:<26}{args.epochs:>7}{per_epoch:>9.2f}{r['val'][0]:>8.4f}{r['test'][0]:>9.4f}"
            f"{r['test'][1]:>10.4f}{ratio:>12.2f}"
        )
    print("(time ratio: seconds per epoch over torch-geometric's)")


if __name__ == "__main__":
    main()
