"""The SimPy discrete-event simulator of schedules.

Not built yet: see the simulator issue.
"""

__all__: list[str] = []
