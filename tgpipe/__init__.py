"""tgpipe: find, see and run the pipeline schedule that wastes the least GPU time when
training memory-based temporal GNNs.

Subpackages: `tgpipe.dag` (the runtime-analysis DAG, cost profiles, bounds),
`tgpipe.schedules`, `tgpipe.simulator`, `tgpipe.executor`. This package root holds what they
share: the error type, file writing and the command line.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
