"""The runtime-analysis DAG of M-TGNN training, its costs and its lower bounds."""

from tgpipe.dag.bounds import (
    MEMORY_BACKENDS,
    Bound,
    lower_bound,
    max_cycle_ratio,
    periodic_graph,
    resource_bound,
)
from tgpipe.dag.build import (
    EDGE_KINDS,
    batch_edges,
    batch_ops,
    build_dag,
    count_by_kind,
    critical_path,
    edge_bytes,
    predecessors,
    save_dag,
)
from tgpipe.dag.cluster import Cluster
from tgpipe.dag.ops import LANES, OPS, Op, node_name, op_names, parse_node, require_op
from tgpipe.dag.profile import CostProfile, Link, OpCost, builtin_profiles, load_profile
from tgpipe.dag.semantics import PRESETS, Semantics, data_parallel, mspipe, pipetgl, sequential

__all__ = [
    "EDGE_KINDS",
    "LANES",
    "MEMORY_BACKENDS",
    "OPS",
    "PRESETS",
    "Bound",
    "Cluster",
    "CostProfile",
    "Link",
    "Op",
    "OpCost",
    "Semantics",
    "batch_edges",
    "batch_ops",
    "build_dag",
    "builtin_profiles",
    "count_by_kind",
    "critical_path",
    "edge_bytes",
    "predecessors",
    "data_parallel",
    "load_profile",
    "lower_bound",
    "max_cycle_ratio",
    "mspipe",
    "node_name",
    "op_names",
    "parse_node",
    "periodic_graph",
    "pipetgl",
    "require_op",
    "resource_bound",
    "save_dag",
    "sequential",
]
