"""The tenant's learnt names on disk: keyed digests only, owner-only, under the state dir.

The pure part (what is learnt, how a word is matched) is pipelines/pseudonym/known.py;
this module only loads and saves it, so that names learnt before a restart are
still replaced after it. The file holds the key id the digests were made under:
after a key rotation the old digests match nothing and are dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from pipelines.config import require_private
from pipelines.pseudonym import Pseudonymiser
from plumbing.files import write_private

log = logging.getLogger(__name__)
FILE_NAME = "learnt-names.json"


class LearntNamesFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, p: Pseudonymiser) -> int:
        """Learnt digests of `p`'s key into `p`; how many. A damaged file is set aside."""
        if not self.path.exists():
            return 0
        require_private(str(self.path), self.path.stat().st_mode)
        try:
            doc = orjson.loads(self.path.read_bytes())
            if doc.get("key_id") != p.key_id:
                return 0
            entries = [(str(d), str(c)) for d, c in doc["names"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.error("learnt names file is damaged; starting with none",
                      extra={"path": str(self.path)})
            return 0
        p.known.load(entries)
        return len(entries)

    def save(self, p: Pseudonymiser) -> bool:
        """Write when something new was learnt; True when written."""
        if not p.known.changed:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"key_id": p.key_id, "names": p.known.entries()}
        write_private(self.path, orjson.dumps(doc))
        p.known.changed = False
        return True
