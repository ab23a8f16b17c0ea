"""Names a site already knows: once learnt as `user` or `host` for a tenant, a name
is replaced wherever it appears as a word in that tenant's text.

Why digests. The learnt set is kept across restarts under the agent's state dir
(agents/learnt_names.py does the file I/O); a file of raw login names would be
the very leak this prevents, so only keyed digests (HMAC under a subkey of the
tenant key) are kept, in memory and on disk. A word of text is replaced when
its digest is in the set; the raw word is then in hand to make its token.

Bounded: past `limit` names the oldest are forgotten first. Names shorter than
three characters, numbers and common words are never learnt: as words they
would match ordinary text (`user`, `root`, `admin` are in every log template).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

from pipelines.digest import HmacSha256

MIN_LEN = 3
COMMON = frozenset((
    "root", "admin", "administrator", "user", "users", "guest", "test", "nobody", "daemon",
    "system", "operator", "support", "oracle", "postgres", "mysql", "www-data", "apache",
    "nginx", "ftp", "git", "backup", "service", "default", "from", "for", "port", "sshd",
    "session", "opened", "closed", "invalid", "none", "unknown", "local", "localhost",
    "console",
))
WORD = re.compile(r"(?<![\w.@-])[A-Za-z0-9_][\w.-]*[A-Za-z0-9_]")


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


class KnownNames:
    """A tenant's learnt names as keyed digests: digest -> class, oldest first."""

    def __init__(self, key: bytes, limit: int = 100_000) -> None:
        self._mac = HmacSha256(key)
        self.limit = limit
        self._digests: dict[str, str] = {}
        self._words: dict[str, str | None] = {}  # word -> class or None (a cache)
        self._clean: set[str] = set()  # the words of `_words` that are no name
        self._hits: dict[str, bool] = {}  # `hit` of short texts, until a name is added
        self._pieces_seen: set[str] = set()
        self._raw: set[str] = set()  # names learnt by this process (memory only)
        self._pieces_hit: set[str] = set()
        self.changed = False

    def __len__(self) -> int:
        return len(self._digests)

    def digest(self, name: str) -> str:
        return self._mac.hex(name.encode("utf-8", "surrogatepass"))[:32]

    @staticmethod
    def learnable(name: str) -> bool:
        """Addresses are never learnt as names: the ip class keeps them prefix-preserving."""
        n = name.strip()
        return len(n) >= MIN_LEN and not n.isdigit() and n.lower() not in COMMON \
            and not n.startswith("tk-") and not is_address(n)

    def learn(self, cls: str, name: str) -> bool:
        """Remember `name` as class `cls`; True when it was new."""
        if name in self._raw:  # learnt before in this process: no digest to compute
            return False
        if not self.learnable(name):
            return False
        if len(self._raw) > self.limit:
            self._raw.clear()
        self._raw.add(name)
        d = self.digest(name.strip())
        if d in self._digests:
            return False
        self.add(d, cls)
        return True

    def add(self, digest: str, cls: str) -> None:
        """One digest as stored (a restart reloads these)."""
        self._digests[digest] = cls
        if len(self._digests) > self.limit:
            del self._digests[next(iter(self._digests))]
        self._words.clear()  # what a word or piece is may have changed
        self._clean.clear()
        self._hits.clear()
        self._pieces_seen.clear()
        self._pieces_hit.clear()
        self.changed = True

    def entries(self) -> list[tuple[str, str]]:
        return list(self._digests.items())

    def load(self, entries: Iterable[tuple[str, str]]) -> None:
        for d, cls in entries:
            self.add(d, cls)
        self.changed = False

    def known(self, word: str) -> str | None:
        cls = self._words.get(word, "")
        if cls == "":
            cls = self._digests.get(self.digest(word)) if self.learnable(word) else None
            if cls is None and "." in word:  # a learnt host's first label
                first = word.split(".", 1)[0]
                cls = self._digests.get(self.digest(first)) if self.learnable(first) else None
            if len(self._words) > 200_000:
                self._words.clear()
                self._clean.clear()
            self._words[word] = cls
            if cls is None:
                self._clean.add(word)
        return cls

    def _pieces(self, token: str) -> list[tuple[str, str]]:
        """(class, word) for the known names inside one blank-separated piece."""
        return [(c, w) for w in WORD.findall(token) if (c := self.known(w)) is not None]

    def hit(self, text: str) -> bool:
        """Whether any blank-separated piece of `text` holds a known name. Set
        operations in C on the pieces, each piece judged once: the warm path."""
        memo = self._hits
        got = memo.get(text)
        if got is not None:  # short field values repeat (an app name, a transport)
            return got
        got = self._hit(text)
        if len(text) <= 64:
            if len(memo) > 65536:
                memo.clear()
            memo[text] = got
        return got

    def _hit(self, text: str) -> bool:
        pieces = text.split()  # a list: the set methods below take it without a copy
        seen = self._pieces_seen
        if not seen.issuperset(pieces):
            if len(seen) > 200_000:
                seen.clear()
                self._pieces_hit.clear()
            new = [t for t in pieces if t not in seen]
            # the new pieces' words in one scan (WORD never spans a blank); when none
            # is a name, as for a new timestamp or port, no piece needs judging alone
            clean = self._clean
            words = WORD.findall(" ".join(new))
            if clean.issuperset(words) or all(
                    w in clean or w.isdigit() or self.known(w) is None for w in words):
                seen.update(new)
            else:
                for t in new:
                    seen.add(t)
                    if self._pieces(t):
                        self._pieces_hit.add(t)
        return not self._pieces_hit.isdisjoint(pieces)

    def rewrite(self, text: str, token: Callable[[str, str], str]) -> str:
        """`text` with every known name, as a whole word, replaced by its token."""
        if not self._digests or not self.hit(text):
            return text
        known = self.known

        def sub(m: re.Match[str]) -> str:
            w = m.group()
            cls = known(w)
            return w if cls is None else token(cls, w)

        return WORD.sub(sub, text)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(class, word) for each known name in `text` (the leak guard's question)."""
        if not self._digests:
            return []
        return [(c, w) for w in WORD.findall(text) if (c := self.known(w)) is not None]
