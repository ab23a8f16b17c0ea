"""Query parsing: a search body from the API or the CLI into a `SearchQuery`, and
the errors the API answers 400 with. Pure: no database, no keys."""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipelines.pseudonym.errors import PseudonymError
from pipelines.pseudonym.idscan import TOKEN
from pipelines.pseudonym.scan import find, format_mac, parse_v4
from pipelines.pseudonym.subjects import Subject, parse_subject
from pipelines.record import Kind

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_INDICATORS = 100
MAX_TEXT = 256
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_QUERY_KEYS = ("tenant", "since", "until", "site", "device", "kind", "name", "text", "ip",
               "token", "indicators", "subjects", "limit", "cursor")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class QueryError(ValueError):
    """A query the API refuses (400). The text never repeats an address or text
    the caller sent: it names the parameter and what is expected."""


class NoKeyError(QueryError):
    """The server holds no key for the tenant, so it cannot pseudonymise indicators."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    tenant: str
    since: float | None = None
    until: float | None = None
    site: str | None = None
    device: str | None = None
    kind: str | None = None
    name: str | None = None
    text: str | None = None
    ip: Network | None = None
    indicators: tuple[Network, ...] = ()
    limit: int = DEFAULT_LIMIT
    cursor: tuple[float, str] | None = None
    token: str | None = None  # a pseudonymous token or MAC pseudonym, as stored
    subjects: tuple[Subject, ...] = ()  # raw identifiers of any other class: never logged

    @property
    def by_identifier(self) -> bool:
        """Whether the query names raw identifiers the server must pseudonymise."""
        return bool(self.indicators or self.subjects)

    def audit_detail(self) -> dict[str, Any]:
        """What the audit trail keeps of the query: filters, the pseudonymous ip, the
        text with any address masked, the number of indicators (never their values)."""
        d: dict[str, Any] = {}
        for k in ("since", "until", "site", "device", "kind", "name"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.text is not None:
            d["text"] = mask_addresses(self.text)
        if self.ip is not None:
            d["ip"] = str(self.ip)
        if self.token is not None:
            d["token"] = self.token
        if self.indicators:
            d["indicators"] = len(self.indicators)
        if self.subjects:
            d["subjects"] = subject_classes(self.subjects)
        d["limit"] = self.limit
        return d


def mask_addresses(s: str) -> str:
    out = s
    for f in sorted(find(s), key=lambda f: -len(f.text)):
        out = out.replace(f.text, "<address>")
    return out


def unknown_names(given: list[str], known: tuple[str, ...] | set[str], what: str) -> str:
    """The refusal for unknown names without echoing them: a name the caller sent
    may be an address, a login or an e-mail in any spelling, so the reason holds
    only our own words (how many, the closest known name, the known names)."""
    names = sorted(known)
    close = sorted({m for g in given for m in difflib.get_close_matches(str(g)[:64], names, 1)})
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"{len(given)} unknown {what}(s){hint}; known: {', '.join(names)}"


def subject_classes(subjects: tuple[Subject, ...]) -> dict[str, int]:
    """How many subjects of each class: all an audit entry or a log line may keep."""
    out: dict[str, int] = {}
    for s in subjects:
        out[s.cls] = out.get(s.cls, 0) + 1
    return dict(sorted(out.items()))


def token_key(value: str) -> str:
    """A pseudonymous token as the index keeps it: a MAC pseudonym in canonical
    colon form, anything else as given."""
    v = value.strip()
    for f in find(v):
        if f.kind == "mac" and f.text == v:
            return format_mac(int(f.value), ":")  # type: ignore[arg-type]
    return v


def parse_token(name: str, v: Any) -> str:
    """A pseudonymous token as the records show it (`tk-...` or a MAC pseudonym)."""
    if isinstance(v, str) and (TOKEN.fullmatch(v.strip()) or any(
            f.kind == "mac" and f.text == v.strip() for f in find(v.strip()))):
        return token_key(v)
    raise QueryError(f"{name} must be a pseudonymous token (tk-...) or MAC pseudonym as "
                     "stored")


def parse_subjects(name: str, v: Any) -> tuple[tuple[Network, ...], tuple[Subject, ...]]:
    """A subject list from the API: a JSON list of {"class", "value"} objects or of
    `class:value` strings, or one string in the subject-file format (one a line).
    `ip:`/`net:` become networks (searched through the address index), the rest
    stay raw `Subject`s for the server to pseudonymise. Errors name the entry,
    never its value."""
    if isinstance(v, str):
        lines = [ln.split("#", 1)[0].strip() for ln in v.splitlines()]
        items: list[Any] = [ln for ln in lines if ln]
    elif isinstance(v, list):
        items = v
    else:
        items = []
    if not 0 < len(items) <= MAX_INDICATORS:
        raise QueryError(f"{name} must list 1 to {MAX_INDICATORS} identifiers, each "
                         '{"class": ..., "value": ...} or "class:value"')
    nets: list[Network] = []
    subjects: list[Subject] = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if isinstance(item, Mapping):
            cls, value = item.get("class"), item.get("value")
            if set(item) - {"class", "value"} or not isinstance(cls, str) \
                    or not isinstance(value, str):
                raise QueryError(f'{where} must be {{"class": ..., "value": ...}} with '
                                 "string values")
            line = f"{cls}:{value}"
        elif isinstance(item, str):
            line = item
        else:
            raise QueryError(f'{where} must be "class:value" or {{"class", "value"}}')
        if not 0 < len(line) <= 320 or "\x00" in line or "\n" in line:
            raise QueryError(f"{where} must be one line of at most 320 characters")
        try:
            s = parse_subject(line, where)
        except PseudonymError as e:
            raise QueryError(str(e)) from None
        if s.cls in ("ip", "net"):
            nets.append(parse_network(where, s.value))
        else:
            subjects.append(s)
    return tuple(nets), tuple(dict.fromkeys(subjects))


def parse_identifiers(body: Mapping[str, Any], addresses_hint: str
                      ) -> tuple[tuple[Network, ...], tuple[Subject, ...]]:
    """A request's subject: `addresses` (raw addresses and prefixes) and `subjects` (any
    class, `parse_subjects`), the networks of both together, at most MAX_INDICATORS
    identifiers in all; ((), ()) when the body names neither."""
    addrs, named = body.get("addresses"), body.get("subjects")
    nets: tuple[Network, ...] = ()
    if addrs is not None:
        if not isinstance(addrs, list) or not 0 < len(addrs) <= MAX_INDICATORS:
            raise QueryError(f"addresses must be a list of 1 to {MAX_INDICATORS} IP addresses"
                             f" or CIDR prefixes {addresses_hint}")
        nets = tuple(parse_network(f"addresses[{i}]", a) for i, a in enumerate(addrs))
    subjects: tuple[Subject, ...] = ()
    if named is not None:
        more, subjects = parse_subjects("subjects", named)
        nets = tuple(dict.fromkeys(nets + more))
    if len(nets) + len(subjects) > MAX_INDICATORS:
        raise QueryError(f"a subject is at most {MAX_INDICATORS} identifiers")
    return nets, subjects


def parse_window(body: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """`since` and `until` of a request, since before until when both are given."""
    since, until = parse_time("since", body.get("since")), parse_time("until", body.get("until"))
    if since is not None and until is not None and since >= until:
        raise QueryError("since must be before until")
    return since, until


def parse_time(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise QueryError(f"{name} must be unix seconds or an ISO 8601 time")
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str) and len(v) <= 40:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(f"{name} must be unix seconds or an ISO 8601 time "
                             "like 2026-01-31T12:00:00Z") from None
        if dt.tzinfo is None:
            raise QueryError(f"{name} needs a time zone (e.g. a trailing Z for UTC)")
        f = dt.timestamp()
    else:
        raise QueryError(f"{name} must be unix seconds or an ISO 8601 time")
    if not 0 <= f < 4102444800:
        raise QueryError(f"{name} must be between 1970 and 2100")
    return f


def _str(body: Mapping[str, Any], name: str, maxlen: int = 128) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not 0 < len(v) <= maxlen:
        raise QueryError(f"{name} must be a non-empty string of at most {maxlen} characters")
    if "\x00" in v:
        raise QueryError(f"{name} must not contain NUL characters")
    return v


def parse_network(name: str, v: Any) -> Network:
    if not isinstance(v, str) or not 0 < len(v) <= 64:
        raise QueryError(f"{name} must be an IPv4/IPv6 address or CIDR prefix")
    s = v.strip()
    try:
        if "/" not in s:
            a4 = parse_v4(s)
            a = a4 if a4 is not None else ipaddress.ip_address(s)
            return ipaddress.ip_network(a)
        return ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise QueryError(f"{name} must be an IPv4/IPv6 address or CIDR prefix") from None


def decode_cursor(v: Any) -> tuple[float, str]:
    bad = QueryError("cursor is not one this API issued; start again without a cursor")
    if not isinstance(v, str) or not 0 < len(v) <= 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        ts, rid = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise bad from None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(rid, str) \
            or not re.fullmatch(r"[0-9a-f]{32}", rid):
        raise bad
    return float(ts), rid


def encode_cursor(ts: float, rid: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts, rid])).rstrip(b"=").decode()


def parse_query(body: Any) -> SearchQuery:
    """A search body from the API (or the CLI) into a query; QueryError for anything off."""
    if not isinstance(body, Mapping):
        raise QueryError("the request body must be a JSON object")
    unknown = sorted(str(k) for k in set(body) - set(_QUERY_KEYS))
    if unknown:
        raise QueryError(unknown_names(unknown, _QUERY_KEYS, "field"))
    tenant = body.get("tenant")
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise QueryError("tenant is required: lowercase letters, digits, '-' or '_'")
    kind = _str(body, "kind", 16)
    if kind is not None and kind not in {k.value for k in Kind}:
        raise QueryError(f"kind must be one of {', '.join(k.value for k in Kind)}")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueryError("limit must be a positive integer")
    if limit > MAX_LIMIT:
        raise QueryError(f"limit must be at most {MAX_LIMIT}; page with the cursor instead")
    since, until = parse_window(body)
    inds = body.get("indicators")
    indicators: tuple[Network, ...] = ()
    if inds is not None:
        if not isinstance(inds, list) or not 0 < len(inds) <= MAX_INDICATORS:
            raise QueryError(f"indicators must be a list of 1 to {MAX_INDICATORS} addresses "
                             "or CIDR prefixes")
        indicators = tuple(parse_network(f"indicators[{i}]", v) for i, v in enumerate(inds))
    subjects: tuple[Subject, ...] = ()
    if body.get("subjects") is not None:
        nets, subjects = parse_subjects("subjects", body["subjects"])
        indicators = tuple(dict.fromkeys(indicators + nets))
        if len(indicators) + len(subjects) > MAX_INDICATORS:
            raise QueryError(f"indicators and subjects together must be at most "
                             f"{MAX_INDICATORS}")
    ip = body.get("ip")
    token = body.get("token")
    cursor = body.get("cursor")
    return SearchQuery(
        tenant=tenant, since=since, until=until, site=_str(body, "site"),
        device=_str(body, "device"), kind=kind, name=_str(body, "name", 64),
        text=_str(body, "text", MAX_TEXT),
        ip=None if ip is None else parse_network("ip", ip), indicators=indicators,
        limit=limit, cursor=None if cursor is None else decode_cursor(cursor),
        token=None if token is None else parse_token("token", token), subjects=subjects)


