"""SNMP polling for the agent.

Layout: `options` (per-device config), `values` (the one value model both
clients produce), `errors` (the error tree and reason codes), `client`
(pysnmp 7, the reference for every version and operation), `fastcodec` +
`fastclient` (lean BER and USM for the hot v2c/v3 GET/GETBULK loop), `profiles`
(declarative OID sets), `poller` (registers protocol "snmp"), `traps`.
"""
