"""The central side: ingest, store, metrics, queries and data-subject requests."""
