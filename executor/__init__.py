"""The executor: real models trained by a schedule on torch.distributed.

Data loaders (`data`, `snapshots`), the TGN and the snapshot GNN cut into the DAG's ops
(`ops`, `snapshot_model`, `snapshot_parts`), their one-process reference trainers, the
runtimes that run a schedule's lanes on gloo ranks (`rank`, `snapshot_runtime`), and the
profilers that measure a `CostProfile` (`profiler`, `snapshot_profiler`). Modules are
imported where used: torch is heavy.
"""

__all__: list[str] = []
