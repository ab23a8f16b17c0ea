"""Shared I/O floor: what both sides need that touches disk or network.

Sits between `pipelines/` (pure) and `agents/` / `collector/`: it imports only
`pipelines`, and either side may import it. One place for TLS contexts, broker
URLs, owner-only files, key files, reconnect backoff and the batch transport,
so the two sides cannot drift apart on any of them.
"""
