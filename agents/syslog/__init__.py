"""Syslog receiver: UDP, TCP and TLS listeners whose messages become `log` records.

`config` reads `[syslog]`; `senders` maps a sender to a configured device;
`receiver` owns the listeners, the bounded hand-over to the agent's `emit`
and the self-metrics. Parsing and framing are pure, in `pipelines.syslog`.
"""
