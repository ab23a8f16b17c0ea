from peers.snmpd import snmpd  # noqa: F401  (fixture)
