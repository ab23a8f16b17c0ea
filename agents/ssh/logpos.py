"""Where each device's log buffer was read up to, kept across agent restarts.

Without it the first poll after a restart would ship the device's whole log
buffer again. A position is the keyed digests (HMAC-SHA256, truncated) of the
last few lines seen, never the lines: the state dir then holds no log content
and no address, and a digest of a short, guessable line cannot be checked
against guesses without the key, which sits beside the positions (0600) and
never leaves the agent. File names are digests of the device name too.

One small JSON file per device, replaced atomically (write, fsync, rename),
so a crash leaves the old position or the new one, never half of either. A
damaged file is treated as no position: the buffer is sent again, once.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import hashes, hmac

from plumbing.files import write_private

log = logging.getLogger(__name__)

VERSION = 1
KEY_BYTES = 32
DIGEST_HEX = 32
_MAX_FILE = 64 * 1024


def _digest(key: bytes, text: str) -> str:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.finalize().hex()[:DIGEST_HEX]


class Digester:
    """Keyed line digests. Without a directory the key lives in memory only, which
    is all a poller that keeps no state on disk needs."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(KEY_BYTES)

    def __call__(self, text: str) -> str:
        return _digest(self._key, text)


class LogPositions:
    """The positions of every device polled by one agent, under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._digester: Digester | None = None
        self._lock = threading.Lock()

    @property
    def digest(self) -> Digester:
        """The digest function positions are written with (its key made on first use;
        first polls of many devices ask at once, from worker threads)."""
        with self._lock:
            if self._digester is None:
                self._digester = Digester(self._key())
            return self._digester

    def _key(self) -> bytes:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / "positions.key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = b""
        else:
            if len(key) == KEY_BYTES:
                return key
            # a damaged key only costs one re-send of each buffer; say so, go on
            log.warning("ssh log positions: key file is damaged; starting afresh")
        key = os.urandom(KEY_BYTES)
        write_private(path, key)  # whole or not at all: never a short key on disk
        return key

    def _file(self, device: str) -> Path:
        return self.directory / f"{self.digest('device:' + device)}.json"

    def load(self, device: str) -> dict[str, list[str]]:
        """Command digest -> tail digests for one device; empty when none is kept."""
        path = self._file(device)
        try:
            data = path.read_bytes()[:_MAX_FILE + 1]
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.warning("ssh log positions of %s unreadable (%s); the buffer is sent again",
                        device, type(e).__name__)
            return {}
        try:
            doc = orjson.loads(data)
            if len(data) > _MAX_FILE or doc.get("v") != VERSION:
                raise ValueError("unknown format")
            out = {str(k): [str(x) for x in v] for k, v in doc["cursors"].items()
                   if isinstance(v, list)}
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("ssh log positions of %s are damaged; the buffer is sent again", device)
            return {}
        return out

    def save(self, device: str, cursors: dict[str, list[str]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self._file(device), orjson.dumps({"v": VERSION, "cursors": cursors},
                                                        option=orjson.OPT_SORT_KEYS))
