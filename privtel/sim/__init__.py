"""Simulated devices for tests and `privtel demo`."""

from privtel.sim.ssh import SshDeviceSim

__all__ = ["SshDeviceSim"]
