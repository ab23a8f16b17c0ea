"""Re-identification: the inverse of each reversible mode, for the key holder only.

This module is imported by the privileged `privtel reidentify` command and by
nothing on the collector's query side, which never holds a tenant key.
Tokens are one-way by design: the holder can only test candidates (e.g. the
site's own inventory) against a token, never invert it.
"""

from __future__ import annotations

import contextlib
import ipaddress

from pipelines.digest import HmacSha256, same
from pipelines.pseudonym.core import TOKEN_PREFIX, non_identifying
from pipelines.pseudonym.cryptopan import CryptoPAn, LimitedPrefix
from pipelines.pseudonym.errors import PseudonymError
from pipelines.pseudonym.ipcrypt import Deterministic, Ndx, Pfx
from pipelines.pseudonym.keys import TenantKey
from pipelines.pseudonym.policy import PrivacyPolicy
from pipelines.pseudonym.scan import format_mac, parse_mac, parse_v4

MODES = ("prefix", "ipcrypt", "ipcrypt-pfx", "ipcrypt-ndx", "mac", "token")


class Reidentifier:
    def __init__(self, key: TenantKey, policy: PrivacyPolicy | None = None) -> None:
        self.key = key
        pol = policy or PrivacyPolicy()
        cp = CryptoPAn(key.secret)
        host = CryptoPAn(key.derive("cryptopan-host"))
        self._v4 = LimitedPrefix(cp, host, 32, pol.preserve_prefix_v4)
        self._v6 = LimitedPrefix(cp, host, 128, pol.preserve_prefix_v6)
        self._mac = CryptoPAn(key.derive("cryptopan-mac"))
        self._det = Deterministic(key.derive("ipcrypt", 16))
        self._pfx = Pfx(key.derive("ipcrypt-pfx"))
        self._ndx = Ndx(key.derive("ipcrypt-ndx"))
        self._token_mac = HmacSha256(key.derive("token"))
        self._passthrough = pol.passthrough

    def _parse(self, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        s = text.strip()
        a = parse_v4(s)
        if a is not None:
            return a
        try:
            return ipaddress.IPv6Address(s)
        except ValueError:
            raise PseudonymError("not an address pseudonym (expected IPv4 or IPv6)") from None

    def address(self, text: str, mode: str = "prefix") -> str:
        if mode == "ipcrypt-ndx" and ("." in text or ":" in text):
            a = self._parse(text)
            if self._kept(a):
                return str(a)
        if mode == "ipcrypt-ndx":
            try:
                data = bytes.fromhex(text.strip())
            except ValueError:
                raise PseudonymError("an ipcrypt-ndx pseudonym is 64 hex characters") from None
            if len(data) != 32:
                raise PseudonymError("an ipcrypt-ndx pseudonym is 64 hex characters")
            return str(self._ndx.decrypt(data))
        if mode == "mac":
            return self.mac(text)
        if mode not in MODES or mode == "token":
            names = ", ".join(m for m in MODES if m != "token")
            raise PseudonymError(f"mode must be one of {names}")
        a = self._parse(text)
        if a.version == 6 and a.ipv4_mapped is not None and mode == "prefix":
            return "::ffff:" + self.address(str(a.ipv4_mapped), mode)
        if self._kept(a):
            return str(a)
        x = self._decrypt(a, mode)
        while self._kept(x):  # undo the forward cycle-walk
            x = self._decrypt(x, mode)
        return str(x)

    def _kept(self, a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return non_identifying(a) or any(
            a.version == n.version and a in n for n in self._passthrough)

    def _decrypt(self, a: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 mode: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if mode == "ipcrypt":
            return self._det.decrypt(a)
        if mode == "ipcrypt-pfx":
            return self._pfx.decrypt(a)
        if a.version == 4:
            return ipaddress.IPv4Address(self._v4.decrypt(int(a)))
        return ipaddress.IPv6Address(self._v6.decrypt(int(a)))

    def mac(self, text: str) -> str:
        m = parse_mac(text.strip())
        if m is None:
            raise PseudonymError("not a MAC pseudonym")
        return format_mac(self._mac.decrypt(m[0], 48), ":")

    def token(self, token: str, candidates: list[str]) -> str | None:
        """The candidate whose token is `token`, if any."""
        tag = TOKEN_PREFIX + self.key.key_id[:6] + "-"
        if not token.startswith(TOKEN_PREFIX):
            raise PseudonymError("not a token")
        if not token.startswith(tag):
            raise PseudonymError("this token was made with another key (see its key id)")
        for c in candidates:
            for form in _forms(c):
                d = self._token_mac.hex(form.encode("utf-8", "surrogatepass"))[:20]
                if same(tag + d, token):
                    return c
        return None


def _forms(candidate: str) -> list[str]:
    """Tokens of addresses are made from their canonical text; try that too."""
    out = [candidate]
    a = parse_v4(candidate.strip())
    if a is not None:
        out.append(str(a))
    else:
        with contextlib.suppress(ValueError):
            out.append(str(ipaddress.IPv6Address(candidate.strip())))
    m = parse_mac(candidate.strip())
    if m is not None:
        out.append(format_mac(m[0], ":"))
    return out
