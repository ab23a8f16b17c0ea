"""Tenant keys on the query side, used forward only (indicator search, DSR
subjects): no method returns a key or reverses a pseudonym."""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.search.query import TENANT_RE, Network, NoKeyError, QueryError, token_key
from pipelines.config import ConfigError
from pipelines.pseudonym import PrivacyPolicy, PseudonymError, Pseudonymiser, TenantKey
from pipelines.pseudonym.keys import archive_name, archived_epochs, current_epoch
from pipelines.pseudonym.subjects import Subject, forward
from plumbing.keyfiles import read_tenant_key

_KEY_FILE = re.compile(r"^tenant-([a-z0-9][a-z0-9_\-]{0,62})\.key$")


class TenantKeys:
    """The tenant keys this API process holds, used forward only.

    Holding keys on the query side is the price of indicator search: a raw
    address can only be matched by computing its pseudonym. Whoever takes over
    this process can re-identify that tenant's pseudonyms, so keys are loaded
    only for tenants listed, read from owner-only files, kept out of every
    repr, log and response, and each use is audited (see docs/api.md).
    """

    def __init__(self, keys: Mapping[str, list[TenantKey]] | None = None,
                 policy: PrivacyPolicy | None = None) -> None:
        self.policy = policy or PrivacyPolicy()
        self._lock = threading.Lock()
        self._p: dict[str, list[Pseudonymiser]] = {}
        for tenant, ks in (keys or {}).items():
            if not TENANT_RE.match(tenant):
                raise ConfigError("tenant keys", tenant, "is not a valid tenant name")
            self._p[tenant] = [Pseudonymiser(k, self.policy)
                               for k in sorted(ks, key=lambda k: -k.epoch)]

    @classmethod
    def from_dir(cls, directory: str | Path, policy: PrivacyPolicy | None = None
                 ) -> TenantKeys:
        """`tenant-<name>.key` as `privtel keys init` writes it, and the
        `tenant-<name>.key.epoch<N>` archives that rotation leaves beside it (the
        rule of `pipelines.pseudonym.keys.archive_name`); each must be mode 0600."""
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(str(d), "", "tenant key directory does not exist")
        names = sorted(p.name for p in d.iterdir())
        keys: dict[str, list[TenantKey]] = {}
        for name in names:
            m = _KEY_FILE.match(name)
            if not m:
                continue
            archived = archived_epochs(names, name)
            files = [(d / name, current_epoch(1, archived))]
            files += [(d / archive_name(name, e), e) for e in archived]
            for path, epoch in files:
                k = read_tenant_key(path, epoch)
                keys.setdefault(m.group(1), []).append(k)
        return cls(keys, policy)

    @property
    def tenants(self) -> list[str]:
        return sorted(self._p)

    def has(self, tenant: str) -> bool:
        return tenant in self._p

    def _get(self, tenant: str) -> list[Pseudonymiser]:
        try:
            return self._p[tenant]
        except KeyError:
            raise NoKeyError("the server holds no pseudonymisation key for this tenant, "
                             "so raw indicators cannot be searched") from None

    def networks(self, tenant: str, raw: Network) -> list[Network]:
        """The pseudonymous ranges a raw address or prefix maps to, one per key epoch.
        A prefix longer than the policy preserves has no pseudonymous range."""
        keep = self.policy.preserve_prefix_v4 if raw.version == 4 \
            else self.policy.preserve_prefix_v6
        if raw.prefixlen != raw.max_prefixlen and raw.prefixlen > keep:
            raise QueryError(f"indicator prefixes must be at most /{keep} for IPv{raw.version}"
                             " (pseudonyms keep no structure below that)")
        out = []
        with self._lock:
            for p in self._get(tenant):
                pseudo = ipaddress.ip_address(p.ip(raw.network_address))
                out.append(ipaddress.ip_network(f"{pseudo}/{raw.prefixlen}", strict=False))
        return out

    def tokens(self, tenant: str, subjects: Sequence[Subject]) -> list[str]:
        """The index tokens (keyed `tk-` tokens, MAC pseudonyms) of subjects of any
        class but ip/net, one per key epoch, in the form the index keeps them."""
        others = [s for s in subjects if s.cls not in ("ip", "net")]
        out: list[str] = []
        with self._lock:
            for p in self._get(tenant):
                try:
                    out += [token_key(f.value) for f in forward(others, p)]
                except PseudonymError as e:
                    raise QueryError(str(e)) from None
        return sorted(set(out))

    def ips(self, tenant: str, raw: str) -> list[str]:
        with self._lock:
            return [p.ip(raw) for p in self._get(tenant)]

    def text(self, tenant: str, s: str) -> str:
        """Free text with every address pseudonymised under the current key."""
        with self._lock:
            return self._get(tenant)[0].text(s)

    def value(self, tenant: str, name: str, v: Any) -> Any:
        """A field value pseudonymised as the agent does for a field of that name."""
        with self._lock:
            return self._get(tenant)[0].value(name, v)

    def __repr__(self) -> str:
        return f"TenantKeys(tenants={self.tenants})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("TenantKeys is not picklable")

