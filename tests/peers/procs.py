"""Stopping a peer started by a test: SIGTERM, then SIGKILL if it will not go (the
demo's own helper, one place)."""

from privtel.demo.children import stop

__all__ = ["stop"]
