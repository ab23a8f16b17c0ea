"""The edge side: pollers, pseudonymisation on the way out, spool, publisher."""
