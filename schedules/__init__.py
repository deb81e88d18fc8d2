"""Schedules: the IR that places every DAG node on a rank and a lane, and its families.

Not built yet: see the simulator issue.
"""

__all__: list[str] = []
