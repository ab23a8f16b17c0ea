"""Real SNMP agents for the SNMP tests (see tests/peers/snmpd.py)."""

from peers.snmpd import snmpd, snmpsim  # noqa: F401  (fixtures)
