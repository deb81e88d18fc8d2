"""The SimPy discrete-event simulator of schedules."""

from tgpipe.simulator.sim import Deadlock, simulate

__all__ = ["Deadlock", "simulate"]
