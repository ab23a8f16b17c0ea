"""The pseudonymiser: one tenant key, one policy, applied to records, addresses and text.

Caching. Repeated addresses are the common case (the same interfaces every
poll, the same peers in every log line), so results are kept in a
two-generation cache (an O(1) approximation of LRU): a hit in the old
generation moves the entry to the hot one; when the hot one is full it becomes
the old one. The same generations remember which pseudonyms were produced, and
that is what the leak guard asks: an address in an outgoing record that this
pseudonymiser did not produce is a raw address. Caches and the produced set
rotate together, so anything a cache can still return is still known as
produced. Not thread-safe: one instance per thread or event loop.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from pipelines.digest import HmacSha256
from pipelines.pseudonym.classes import canonical as class_canonical
from pipelines.pseudonym.cryptopan import CryptoPAn, LimitedPrefix
from pipelines.pseudonym.errors import PseudonymError
from pipelines.pseudonym.geo import coarsen_lat, coarsen_lon, place
from pipelines.pseudonym.idscan import EMAIL, PHONE, Finder, PublicNames
from pipelines.pseudonym.idscan import _phone as phone_e164
from pipelines.pseudonym.ipcrypt import Deterministic, Ndx, Pfx
from pipelines.pseudonym.keys import TenantKey
from pipelines.pseudonym.known import KnownNames
from pipelines.pseudonym.names import DeviceNames
from pipelines.pseudonym.policy import FieldClass, PrivacyPolicy, classify
from pipelines.pseudonym.scan import Found, format_mac, parse_mac, parse_v4, rewrite
from pipelines.record import Kind, Record, Scalar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TOKEN_PREFIX = "tk-"
_KEEP, _TEXT, _GEO, _VALUE = 0, 1, 2, 3
_NAMED = frozenset({Kind.LOG, Kind.EVENT})  # kinds whose text is scanned for own names


def _masks() -> frozenset[int]:
    nets = {((1 << n) - 1) << (32 - n) for n in range(33)}
    return frozenset(nets | {~m & 0xFFFFFFFF for m in nets})


_MASKS_V4 = _masks()


def non_identifying(addr: IPAddress) -> bool:
    """Values that name no host and always pass unchanged: the 33 IPv4 netmasks
    (0.0.0.0 ... 255.255.255.255), the 33 wildcard masks (0.0.0.255 ...), and the
    IPv6 unspecified address ::. A small set on purpose: a pseudonym lands in it
    with negligible probability, and if it does, cycle-walking moves it out."""
    if addr.version == 6:
        return int(addr) == 0
    return int(addr) in _MASKS_V4


def canonical(found: Found) -> str:
    """The form the pseudonymiser writes, and so the form the leak guard compares."""
    if found.kind == "mac":
        return format_mac(int(found.value), ":")
    a = found.value
    assert not isinstance(a, int)
    if a.version == 6 and a.ipv4_mapped is not None:
        return "::ffff:" + str(a.ipv4_mapped)
    return str(a)


class _Generations:
    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self.prod_hot: set[str] = set()
        self.prod_old: set[str] = set()
        self.spaces: list[_Space] = []

    def space(self, values_are_lists: bool = False, limit: int | None = None) -> _Space:
        s = _Space(self, values_are_lists, limit)
        self.spaces.append(s)
        return s

    def rotate(self) -> None:
        self.prod_old, self.prod_hot = self.prod_hot, set()
        for s in self.spaces:
            s.old, s.hot = s.hot, {}
        self.count = 0

    def produced(self, canon: str) -> bool:
        return canon in self.prod_hot or canon in self.prod_old


class _Space:
    __slots__ = ("gen", "hot", "lists", "old", "own_limit")

    def __init__(self, gen: _Generations, lists: bool, limit: int | None) -> None:
        self.gen, self.lists, self.own_limit = gen, lists, limit
        self.hot: dict[str, Any] = {}
        self.old: dict[str, Any] = {}

    def _touch(self, v: Any) -> None:
        if self.lists:
            self.gen.prod_hot.update(v[1])
        else:
            self.gen.prod_hot.add(v)

    def get(self, k: str) -> Any:
        v = self.hot.get(k)
        if v is None:
            v = self.old.get(k)
            if v is not None:
                self.put(k, v)
        return v

    def put(self, k: str, v: Any) -> None:
        self.hot[k] = v
        self._touch(v)
        if self.own_limit is not None:
            if len(self.hot) > self.own_limit:
                self.old, self.hot = self.hot, {}
            return
        self.gen.count += 1
        if self.gen.count > self.gen.limit:
            self.gen.rotate()


class _AddressMode:
    """One way of replacing addresses (a mode), with its own cache space."""

    def __init__(self, mode: str, key: TenantKey, policy: PrivacyPolicy,
                 gen: _Generations, token: Callable[[str], str]) -> None:
        self.mode = mode
        self.deterministic = mode != "ipcrypt-ndx"
        self.cache = gen.space()
        self.passthrough = policy.passthrough
        self.token = token
        cp = CryptoPAn(key.secret)
        host = CryptoPAn(key.derive("cryptopan-host"))
        self.v4 = LimitedPrefix(cp, host, 32, policy.preserve_prefix_v4)
        self.v6 = LimitedPrefix(cp, host, 128, policy.preserve_prefix_v6)
        self.mac_cp = CryptoPAn(key.derive("cryptopan-mac"))
        self.det = Deterministic(key.derive("ipcrypt", 16)) if mode == "ipcrypt" else None
        self.pfx = Pfx(key.derive("ipcrypt-pfx")) if mode == "ipcrypt-pfx" else None
        self.ndx = Ndx(key.derive("ipcrypt-ndx")) if mode == "ipcrypt-ndx" else None

    def kept(self, a: IPAddress) -> bool:
        if non_identifying(a):
            return True
        return any(a.version == n.version and a in n for n in self.passthrough)

    def address(self, a: IPAddress) -> str:
        if a.version == 6 and a.ipv4_mapped is not None:
            if self.mode == "prefix":
                return "::ffff:" + self.address(a.ipv4_mapped)
            a = a.ipv4_mapped
        if self.kept(a):
            return str(a)
        m = self.mode
        if m == "token":
            return self.token(str(a))
        if m == "ipcrypt-ndx":
            assert self.ndx is not None
            return self.ndx.encrypt(a).hex()
        out = self.encrypt(a)
        while self.kept(out):  # cycle-walk: a pseudonym never looks like a kept address
            out = self.encrypt(out)
        return str(out)

    def encrypt(self, a: IPAddress) -> IPAddress:
        m = self.mode
        if m == "prefix":
            if a.version == 4:
                return ipaddress.IPv4Address(self.v4.encrypt(int(a)))
            return ipaddress.IPv6Address(self.v6.encrypt(int(a)))
        if m == "ipcrypt":
            assert self.det is not None
            return self.det.encrypt(a)
        assert self.pfx is not None
        return self.pfx.encrypt(a)

    def mac(self, value: int) -> str:
        if self.mode == "token":
            return self.token(format_mac(value, ":"))
        return format_mac(self.mac_cp.encrypt(value, 48), ":")

    def found(self, f: Found) -> str:
        if not self.deterministic and f.kind != "mac":
            assert not isinstance(f.value, int)
            return self.address(f.value)
        out: str | None = self.cache.get(f.text)
        if out is None:
            if f.kind == "mac":
                out = self.mac(int(f.value))
            else:
                assert not isinstance(f.value, int)
                out = self.address(f.value)
            self.cache.put(f.text, out)
        return out


class Pseudonymiser:
    """Applies a tenant key and a privacy policy to records, addresses and text."""

    def __init__(self, key: TenantKey, policy: PrivacyPolicy | None = None,
                 device_key: TenantKey | None = None) -> None:
        """`device_key`, when given, keys the record's `device` id instead of `key`: a
        per-tenant label key that does not rotate with the tenant key, so a device
        keeps its id across epochs (docs/privacy.md says what that links)."""
        if not isinstance(key, TenantKey):
            raise PseudonymError("Pseudonymiser needs a TenantKey")
        if device_key is not None and not isinstance(device_key, TenantKey):
            raise PseudonymError("device_key must be a TenantKey")
        self.key = key
        self.policy = policy or PrivacyPolicy()
        self.key_id = key.key_id
        self._gen = _Generations(self.policy.cache_size)
        self._token_mac = HmacSha256(key.derive("token"))
        self._token_tag = TOKEN_PREFIX + key.key_id[:6] + "-"
        self.token = functools.lru_cache(  # type: ignore[method-assign]
            maxsize=self.policy.cache_size)(self._token)
        self.device_token = self.token
        if device_key is not None:
            label_mac = HmacSha256(device_key.derive("token"))  # so `reidentify` works on it
            label_tag = TOKEN_PREFIX + device_key.key_id[:6] + "-"

            def device_token(value: str) -> str:
                return label_tag + label_mac.hex(value.encode("utf-8", "surrogatepass"))[:20]

            self.device_token = functools.lru_cache(maxsize=self.policy.cache_size)(
                device_token)
        modes = self.policy.modes
        self._modes: dict[str, _AddressMode] = {}
        for name in {modes["ip"], modes["text_ip"], modes["mac"]}:
            self._modes[name] = _AddressMode(name, key, self.policy, self._gen, self.token)
        self._ip_mode = self._modes[modes["ip"]]
        self._text_mode = self._modes[modes["text_ip"]]
        self._mac_mode = self._modes[modes["mac"]]
        self._memo = self._gen.space(values_are_lists=True) \
            if self._text_mode.deterministic else None
        self._field_memo = self._gen.space(values_are_lists=True,
                                           limit=self.policy.cache_size)
        self._classes: dict[str, FieldClass | None] = {}
        self._plans: dict[str, int] = {}
        self._inert: set[str] = set()
        self._names = DeviceNames()
        classes = self.policy.classes
        self.finder = Finder(classes=classes & {"user", "email", "phone", "host"},
                             public=PublicNames(self.policy.public_names))
        self._ids_on = bool(self.finder.classes)
        self.known = KnownNames(key.derive("known-names"))
        self._addr_classes = classes & {"ip", "mac"}
        if self._addr_classes != {"ip", "mac"}:
            self._replace_found = self._replace_some  # type: ignore[method-assign]

    def _token(self, value: str) -> str:
        digest = self._token_mac.hex(value.encode("utf-8", "surrogatepass"))
        return self._token_tag + digest[:20]

    def token(self, value: str) -> str:  # replaced per instance by a cached version
        """Keyed token (HMAC-SHA256, 80 bits, key id prefix): equal in, equal out, no structure."""
        return self._token(value)

    def id_token(self, cls: str, value: str) -> str:
        """The one token of a user, e-mail, phone, host or person value, the same
        whether it came from a field or from text (classes.py)."""
        return self.token(class_canonical(cls, value))

    def learn_name(self, cls: str, value: str) -> None:
        """A name this tenant now knows (a real session's login, a device's name):
        replaced wherever it appears in the tenant's text from now on (known.py)."""
        if cls in ("user", "host"):
            self.known.learn(cls, value)

    def ip(self, addr: str | IPAddress) -> str:
        """One address (text or ipaddress object) under the policy's ip mode. Text that
        is not a bare address (a CIDR, a port, a sentence) is scrubbed as free text."""
        return self._ip(addr, self._ip_mode)

    def _ip(self, addr: str | IPAddress, mode: _AddressMode) -> str:
        if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return mode.found(Found("v4" if addr.version == 4 else "v6", addr, str(addr)))
        if not isinstance(addr, str):
            raise PseudonymError(f"an address must be text, not {type(addr).__name__}")
        s = addr.strip()
        if mode.deterministic:  # the warm path: `found` would answer from this cache
            out: str | None = mode.cache.get(s)
            if out is not None:
                return out
        a: IPAddress | None = parse_v4(s)
        if a is not None:
            return mode.found(Found("v4", a, s))
        if ":" in s and "%" not in s:
            try:
                a = ipaddress.IPv6Address(s)
            except ValueError:
                a = None
            if a is not None:
                return mode.found(Found("v6", a, s))
        return self.text(addr)

    def mac(self, value: str) -> str:
        m = parse_mac(value.strip())
        if m is None:
            return self.text(value)
        return self._mac_mode.found(Found("mac", m[0], value.strip(), m[1]))

    def text(self, s: str) -> str:
        """Free text with every identifier of the policy's classes replaced in place:
        grammar-found names, e-mails, phones, address-bearing host names, known
        names, then every IPv4, IPv6 and MAC address."""
        if self._ids_on:
            s = self._ids(s)
        return rewrite(s, self._replace_found, self._memo)

    def _ids(self, s: str) -> str:
        s = self.finder.rewrite(s, self.id_token, self.learn_name)
        if len(self.known):
            s = self.known.rewrite(s, self.id_token)
        return s

    def contact(self, s: str) -> str:
        """A contact text (`sys_contact`: a name, an e-mail, a phone) as person, email
        and phone tokens, in that order; nothing of it in clear."""
        out: list[str] = []
        rest = s
        for m in EMAIL.finditer(s):
            out.append(self.id_token("email", m.group()))
            rest = rest.replace(m.group(), " ")
        for m in PHONE.finditer(rest):
            e164 = phone_e164(m.group())
            if e164 is not None:
                out.append(self.id_token("phone", e164))
                rest = rest.replace(m.group(), " ")
        name = " ".join(w for w in rest.replace("<", " ").replace(">", " ").replace(
            ",", " ").split() if any(c.isalnum() for c in w))
        if name:
            out.insert(0, self.id_token("person", name))
        return " ".join(out)

    def field_text(self, s: str) -> str:
        """`text` for record fields: whole values repeat every poll (interface
        descriptions, aliases), so the whole value is cached too."""
        memo = self._field_memo
        hit = memo.hot.get(s)
        if hit is None:
            hit = memo.get(s)
        if hit is not None:
            return hit[0]  # type: ignore[no-any-return]
        if not self._text_mode.deterministic:
            return self.text(s)
        made: list[str] = []
        raw = s
        if self._ids_on:
            s = self._ids(s)
        # the address memo of `text` too (a log message is a field): each address
        # parsed once, its pseudonyms collected for this value's own memo entry
        out = rewrite(s, self._replace_found, self._memo, made)
        memo.put(raw, (out, made))
        return out

    def _replace_found(self, f: Found) -> str:
        return (self._mac_mode if f.kind == "mac" else self._text_mode).found(f)

    def _replace_some(self, f: Found) -> str:
        """`_replace_found` when the policy narrows the classes (`--classes`)."""
        if ("mac" if f.kind == "mac" else "ip") not in self._addr_classes:
            return f.text
        return (self._mac_mode if f.kind == "mac" else self._text_mode).found(f)

    def is_pseudonym(self, canon: str) -> bool:
        """Whether this pseudonymiser produced `canon` recently (see the module doc)."""
        return self._gen.produced(canon)

    def is_kept(self, found: Found) -> bool:
        """Addresses allowed through unchanged: non-identifying or configured passthrough."""
        if found.kind == "mac":
            return False
        assert not isinstance(found.value, int)
        a = found.value
        if a.version == 6 and a.ipv4_mapped is not None:
            a = a.ipv4_mapped
        return self._ip_mode.kept(a) and self._text_mode.kept(a)

    def field_class(self, name: str, value: Scalar) -> FieldClass:
        try:
            cls = self._classes[name]
        except KeyError:
            cls = self._classes[name] = classify(name, self.policy.fields)
        if cls is None:
            return FieldClass.TEXT if isinstance(value, str) else FieldClass.MEASUREMENT
        return cls

    def value(self, name: str, value: Scalar, lat: Any = None) -> Scalar:
        """One field's value under the policy, by its class."""
        if value is None or isinstance(value, bool):
            return value
        cls = self.field_class(name, value)
        modes = self.policy.modes
        if cls is FieldClass.MEASUREMENT:
            return self.text(value) if isinstance(value, str) else value
        if cls is FieldClass.PUBLIC:
            return value
        if cls is FieldClass.TEXT:
            if not isinstance(value, str):
                return value
            tm = modes["text"]
            return self.text(value) if tm == "scrub" else self.token(value) if tm == "token" \
                else None
        if cls is FieldClass.IDENTIFIER:
            return self.token(value if isinstance(value, str) else str(value))
        if cls is FieldClass.USER:
            return self.id_token("user", value if isinstance(value, str) else str(value))
        if cls is FieldClass.EMAIL:
            return self.id_token("email", str(value))
        if cls is FieldClass.PHONE:
            e164 = phone_e164(str(value))
            return self.id_token("phone", e164 if e164 is not None else str(value))
        if cls is FieldClass.PERSON:
            return self.contact(str(value))
        if cls is FieldClass.IP:
            if isinstance(value, int) and 0 <= value < 2**32:
                out = self.ip(ipaddress.IPv4Address(value))
                v4 = parse_v4(out)
                return int(v4) if v4 is not None else out
            return self.ip(value) if isinstance(value, str) else self.token(str(value))
        if cls is FieldClass.MAC:
            return self.mac(value) if isinstance(value, str) else self.token(str(value))
        if modes["geo"] == "drop":
            return None
        grid = self.policy.geo_grid_km
        if cls is FieldClass.GEO_PLACE:
            if not isinstance(value, str):
                return None
            kept, _ = place(value, self.policy.place_level)
            return self.text(kept) if kept is not None else self.id_token("person", value)
        try:
            f = float(value)
        except ValueError:
            return None
        if f != f or f in (float("inf"), float("-inf")):
            return None
        if cls is FieldClass.GEO_LAT:
            return coarsen_lat(f, grid)
        try:
            lat_f = coarsen_lat(float(lat), grid) if lat is not None else None
        except (TypeError, ValueError):
            lat_f = None
        return coarsen_lon(f, grid, lat_f)

    def _plan(self, name: str) -> int:
        """How a field is processed on the fast path: _KEEP, _TEXT (scrub if a
        string), _GEO (needs the whole record) or _VALUE (through `value`)."""
        cls = classify(name, self.policy.fields)
        if cls in (FieldClass.GEO_LAT, FieldClass.GEO_LON, FieldClass.GEO_PLACE):
            return _GEO
        if cls is FieldClass.PUBLIC:
            return _KEEP
        if cls is None or cls is FieldClass.MEASUREMENT or (
                cls is FieldClass.TEXT and self.policy.modes["text"] == "scrub"):
            return _TEXT
        return _VALUE

    def _plan_name(self, name: str) -> int:
        h = self._plans[name] = self._plan(name)
        if h in (_KEEP, _TEXT):
            self._inert.add(name)
        return h

    def record(self, r: Record) -> Record:
        """The record with every field under the policy, `device` tokenised and `pkid` set."""
        if r.kind != Kind.METRIC:
            self._learn(r)
        return self._apply(r)

    def _apply(self, r: Record) -> Record:
        """`record` once the device's names are learnt.

        Most values are numbers in fields whose plan leaves numbers alone (_KEEP,
        _TEXT), so a non-string value costs one set lookup (`_inert`); strings
        and the other plans are dispatched by the field's plan, in record order."""
        plans = self._plans
        inert = self._inert
        src = r.fields
        if r.kind in _NAMED:  # the device's own names first, before any grammar sees them
            rewrite, dev, token = self._names.rewrite, r.device, self.token
            src = {k: rewrite(dev, v, token) if type(v) is str and (
                       plans[k] if k in plans else self._plan_name(k)) == _TEXT
                   else v for k, v in src.items()}
        fields: dict[str, Scalar] = dict(src)  # numbers and public values stay as is
        geo: list[str] = []
        memo = self._field_memo
        hot = memo.hot
        for k, v in src.items():
            if type(v) is str:
                h = plans.get(k)
                if h is None:
                    h = self._plan_name(k)
                if h == _TEXT:
                    hit = hot.get(v)
                    fields[k] = hit[0] if hit is not None else self.field_text(v)
                    hot = memo.hot  # a miss may have rotated the generations
                    continue
            elif k in inert:
                continue
            else:
                h = plans.get(k)
                if h is None:
                    h = self._plan_name(k)
            if h == _GEO:
                geo.append(k)
            elif h == _VALUE:
                fields[k] = self.value(k, v)
        if geo:
            self._geo(r, geo, fields)
        fields["pkid"] = self.key_id
        return r.with_fields(fields, device=self.device_token(r.device))

    def _learn(self, r: Record) -> None:
        """Remember the device's own names from its identifier-class fields (names.py),
        and the tenant's user and host names for all of its text (known.py)."""
        for k, v in r.fields.items():
            if type(v) is str:
                c = self.field_class(k, v)
                if c is FieldClass.IDENTIFIER:
                    self._names.learn(r.device, v)
                    self.known.learn("host", v)
                elif c is FieldClass.USER:
                    self.known.learn("user", v)

    def _geo(self, r: Record, names: list[str], fields: dict[str, Scalar]) -> None:
        lat = next((r.fields[k] for k in names
                    if self.field_class(k, r.fields[k]) is FieldClass.GEO_LAT), None)
        coords = False
        levels: list[str] = []
        for k in names:
            fields[k] = self.value(k, r.fields[k], lat)
            v = r.fields[k]
            if self.field_class(k, v) is FieldClass.GEO_PLACE:
                levels.append(place(v, self.policy.place_level)[1]
                              if isinstance(v, str) else "token")
            else:
                coords = True
        if self.policy.modes["geo"] == "generalise":
            if coords:
                fields["geo_precision_km"] = self.policy.geo_grid_km
            if levels:  # the finest level any place field really kept
                fields["geo_level"] = "token" if "token" in levels else \
                    "region" if "region" in levels else "country"

    def records(self, rs: list[Record]) -> list[Record]:
        """Names are learnt from the whole list first, so a poll's log lines are
        scrubbed of the hostname its own inventory record reports."""
        for r in rs:
            if r.kind != Kind.METRIC:
                self._learn(r)
        return [self._apply(r) for r in rs]
