"""Syslog messages (RFC 5424, RFC 3164) as `log` record fields, and TCP framing (RFC 6587).

Pure and on the agent's hot path: one regular expression per header form, one
UTF-8 decode per message, and timestamps of RFC 3164 (which repeat within a
second) remembered rather than recomputed.

Nothing is dropped for being malformed: a message that does not parse becomes
a raw record (`format = "raw"`, `parse_error` = a reason code, the whole text as
`message`, facility/severity from its PRI when it has one, else user.notice as
RFC 3164 section 4.3.3 tells a relay to assume). A message over the size limit
is cut at the limit (`truncated = True`, `octets` = its size before the cut).

RFC 3164 timestamps carry neither a year nor a time zone. The rules here:
the zone is the configured one (`tz`, default UTC) unless the stamp itself ends
in `UTC`/`GMT`; the year is the latest of {next, this, last} that puts the stamp
no more than 7 days after the time of receipt. So a `Dec 31 23:59:59` line
received on 1 January is of the old year, a `Jan  1 00:00:00` line from a clock
running a little ahead on 31 December is of the new one, and a `Feb  5` line
received in December is of this February (old, not ten weeks ahead). Such
times are marked `time_quality = "inferred"`; RFC 5424 times with an offset
are `"exact"`; a message with no usable time gets the time of receipt,
`"received"`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from typing import Final

Scalar = str | int | float | bool | None

FACILITIES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7")
SEVERITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
DEFAULT_PRI: Final = 13  # user.notice
PARSE_ERRORS: Final = ("no_pri", "bad_pri", "bad_header", "bad_timestamp",
                       "bad_structured_data", "empty")
MAX_OCTET_DIGITS: Final = 10
FUTURE_SLACK_S: Final = 7 * 86400.0
NUL_SIGN: Final = "\u2400"  # SYMBOL FOR NULL

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_PRI = re.compile(r"<(\d{1,3})>")
_SD_ELEMENT = r'\[[^ =\]"]{1,32}(?: [^ =\]"]{1,32}="(?:[^"\\]|\\.)*")*\]'
_V5424 = re.compile(
    r"1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) (-|(?:" + _SD_ELEMENT + r")+)"
    r"(?: (.*))?\Z", re.S)
_V5424_HEAD = re.compile(r"1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) ")
_BSD_TIME = re.compile(  # Cisco: optional sequence number and `origin-id` host name first
    r"(?:\d{1,10}: )?(?:([\w.\-]{1,255}): )?[*.]?([A-Z][a-z]{2}) ([ \d]?\d) (?:(\d{4}) )?"
    r"(\d\d):(\d\d):(\d\d)"
    r"(?:\.(\d{1,6}))?(?: (UTC|GMT))?:? ?")
_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)?) ")
_TAG = re.compile(r"([^\s\[\]:]{1,48})(?:\[([^\]\s]{1,128})\])?: ?")
_BARE_TAG = re.compile(r"([\w.\-/]{1,32}) ")
_HOST = re.compile(r"([^\s:\[\]]{1,255}) ")
_BOM = "\ufeff"


def _pri(v: int) -> tuple[int, int]:
    return v >> 3, v & 7


def _iso(text: str, tz: tzinfo) -> tuple[float, bool] | None:
    """RFC 3339 seconds and whether the stamp named its own offset."""
    if len(text) > 35:
        return None
    frac_cut = text.find(".")
    if frac_cut != -1:  # fromisoformat takes at most 6 fraction digits
        end = frac_cut + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - frac_cut > 7:
            text = text[:frac_cut + 7] + text[end:]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    exact = dt.tzinfo is not None
    if not exact:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp(), exact


class SyslogParser:
    """Turns one message's bytes into (time or None, fields). One per receiver;
    keeps a small cache of RFC 3164 stamps, so not shared across threads."""

    def __init__(self, *, tz: tzinfo = UTC, max_size: int = 8192) -> None:
        if max_size < 64:
            raise ValueError("max_size must be at least 64 bytes")
        self.tz, self.max_size = tz, max_size
        self._stamps: dict[tuple[str | None, ...], float | None] = {}
        self._stamp_hour = -1

    def parse(self, data: bytes, received: float, *,
              size: int | None = None) -> tuple[float | None, dict[str, Scalar]]:
        """`size` is the message's size on the wire when `data` was already cut (framing)."""
        original = len(data) if size is None else size
        if len(data) > self.max_size:
            data = data[: self.max_size]
        extra: dict[str, Scalar] = {}
        if original > len(data):
            extra["truncated"] = True
            extra["octets"] = original
        try:
            text = data.decode()
        except UnicodeDecodeError as e:
            cut = _decode_cut(data, e) if "truncated" in extra else None
            if cut is None:
                cut = data.decode(errors="replace")
                extra["invalid_utf8"] = True
            text = cut
        if "\0" in text:  # PostgreSQL refuses NUL in text; one character for one
            text = text.replace("\0", NUL_SIGN)
            extra["nul_bytes"] = True
        text = text.rstrip("\r\n")
        ts, fields = self._fields(text, received)
        if extra:
            fields.update(extra)
        return ts, fields

    def _fields(self, text: str, received: float) -> tuple[float | None, dict[str, Scalar]]:
        if not text:
            return None, _raw(text, "empty", DEFAULT_PRI)
        m = _PRI.match(text)
        if m is None:
            return None, _raw(text, "no_pri", DEFAULT_PRI)
        pri = int(m.group(1))
        if pri > 191 or (len(m.group(1)) > 1 and m.group(1)[0] == "0"):
            return None, _raw(text, "bad_pri", DEFAULT_PRI)
        rest = text[m.end():]
        if rest.startswith("1 "):
            return self._rfc5424(text, rest, pri)
        return self._rfc3164(text, rest, pri, received)

    def _rfc5424(self, text: str, rest: str, pri: int) -> tuple[float | None,
                                                                 dict[str, Scalar]]:
        m = _V5424.match(rest)
        if m is None:
            reason = "bad_structured_data" if _V5424_HEAD.match(rest) else "bad_header"
            return None, _raw(text, reason, pri)
        stamp, host, app, procid, msgid, sd, msg = m.groups()
        ts: float | None = None
        quality = "received"
        if stamp != "-":
            got = _iso(stamp, self.tz)
            if got is None:
                return None, _raw(text, "bad_timestamp", pri)
            ts, exact = got
            quality = "exact" if exact else "inferred"
        fac, sev = _pri(pri)
        fields: dict[str, Scalar] = {
            "format": "rfc5424", "facility": fac, "severity": sev,
            "time_quality": quality,
        }
        if host != "-":
            fields["hostname"] = host
        if app != "-":
            fields["app_name"] = app
        if procid != "-":
            fields["procid"] = procid
        if msgid != "-":
            fields["msgid"] = msgid
        if sd != "-":
            fields["structured_data"] = sd
        if msg:
            fields["message"] = msg[1:] if msg[0] == _BOM else msg
        else:
            fields["message"] = ""
        return ts, fields

    def _rfc3164(self, text: str, rest: str, pri: int, received: float) -> tuple[
            float | None, dict[str, Scalar]]:
        fac, sev = _pri(pri)
        fields: dict[str, Scalar] = {"format": "rfc3164", "facility": fac, "severity": sev}
        ts: float | None = None
        m = _BSD_TIME.match(rest)
        origin = None
        if m is not None:
            ts = self._bsd_time(m.groups()[1:], received)
            if ts is None:
                return None, _raw(text, "bad_timestamp", pri)
            fields["time_quality"] = "inferred" if m.group(4) is None or m.group(9) is None \
                else "exact"
            origin = m.group(1)
            rest = rest[m.end():]
        else:
            mi = _ISO_TIME.match(rest)
            if mi is not None:
                got = _iso(mi.group(1), self.tz)
                if got is None:
                    return None, _raw(text, "bad_timestamp", pri)
                ts = got[0]
                fields["time_quality"] = "exact" if got[1] else "inferred"
                rest = rest[mi.end():]
            else:
                fields["time_quality"] = "received"
        if origin is not None:
            fields["hostname"] = origin
        elif ts is not None:
            # a host name follows the time unless the next word is already the tag
            mh = _HOST.match(rest)
            if mh is not None and not _TAG.match(rest):
                fields["hostname"] = mh.group(1)
                rest = rest[mh.end():]
        mt = _TAG.match(rest)
        if mt is not None:
            fields["app_name"] = mt.group(1)
            if mt.group(2) is not None:
                fields["procid"] = mt.group(2)
            rest = rest[mt.end():]
        elif "hostname" in fields:
            # a full header: the TAG ends at the first non-alphanumeric character
            # (RFC 3164 4.1.3), a space too, as rsyslog reads it
            mw = _BARE_TAG.match(rest)
            if mw is not None:
                fields["app_name"] = mw.group(1)
                rest = rest[mw.end():]
        fields["message"] = rest
        return ts, fields

    def _bsd_time(self, g: tuple[str | None, ...], received: float) -> float | None:
        hour = int(received // 3600)
        if hour != self._stamp_hour or len(self._stamps) > 4096:
            self._stamps.clear()
            self._stamp_hour = hour
        mon, day, year, h, mi, sec, frac, zone = g
        # zone offsets change on the hour: the hour's start is computed once
        key = (mon, day, year, h, zone)
        start = self._stamps.get(key, False)
        if start is False:
            start = self._stamps[key] = bsd_timestamp(
                (mon, day, year, h, "00", "00", None, zone), received, self.tz)
        m, s = int(mi or ""), int(sec or "")
        if start is None or m > 59 or s > 60:
            return None
        t = start + m * 60 + s
        return t + int(frac.ljust(6, "0")) / 1e6 if frac else t


def bsd_timestamp(g: tuple[str | None, ...], received: float, tz: tzinfo) -> float | None:
    """Seconds of an RFC 3164 stamp (month, day, year|None, h, m, s, fraction|None,
    zone|None) under the year and zone rules in the module doc; None if no such time."""
    mon_s, day_s, year_s, h, mi, s, frac, zone = g
    month = _MONTHS.get(mon_s or "")
    if month is None:
        return None
    zone_tz = UTC if zone else tz
    micro = int((frac or "0").ljust(6, "0")) if frac else 0
    try:
        day, hh, mm, ss = int(day_s or ""), int(h or ""), int(mi or ""), int(s or "")
    except ValueError:
        return None
    if year_s is not None:
        years = [int(year_s)]
    else:
        y = datetime.fromtimestamp(received, zone_tz).year
        years = [y + 1, y, y - 1]
    fallback: float | None = None
    for year in years:
        try:
            t = datetime(year, month, day, hh, mm, ss, micro, tzinfo=zone_tz).timestamp()
        except ValueError:  # Feb 29 in a year without one, hour 25, ...
            continue
        if year_s is not None or t <= received + FUTURE_SLACK_S:
            return t
        fallback = t if fallback is None else fallback
    return fallback


def _decode_cut(data: bytes, e: UnicodeDecodeError) -> str | None:
    """A cut may split the last character: drop that part, keep the rest valid."""
    if e.start >= len(data) - 3 and e.reason == "unexpected end of data":
        try:
            return data[: e.start].decode()
        except UnicodeDecodeError:
            return None
    return None


def _raw(text: str, reason: str, pri: int) -> dict[str, Scalar]:
    fac, sev = _pri(pri)
    return {"format": "raw", "facility": fac, "severity": sev, "parse_error": reason,
            "time_quality": "received", "message": text}


def facility_name(code: int) -> str:
    return FACILITIES[code] if 0 <= code < len(FACILITIES) else str(code)


def severity_name(code: int) -> str:
    return SEVERITIES[code] if 0 <= code < len(SEVERITIES) else str(code)


# RFC 6587 framing -------------------------------------------------------------

Frame = tuple[bytes, int]
"""A message's bytes (at most the size limit) and its size on the wire."""

INCOMPLETE_LINE: Final = "incomplete_line"
SHORT_FRAME: Final = "short_frame"
BAD_OCTET_COUNT: Final = "bad_octet_count"


class FrameDecoder:
    """Incremental RFC 6587 decoder for one stream: octet counting (`LEN SP MSG`) when a
    frame starts with a digit, else a line ended by LF (a CR before it is dropped).

    Memory stays within about one size limit per stream whatever the peer sends:
    a frame or line longer than the limit is handed on cut at the limit, with its
    true size, and the rest is skipped as it arrives. `anomalies` counts what the
    stream did wrong by kind (`bad_octet_count`, and at `end()` `short_frame` for an
    octet count larger than the data, `incomplete_line` for a last line without LF).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = b""
        self._skip = 0          # bytes of an over-size octet-counted frame still to drop
        self._skip_line = False  # inside an over-size line: drop up to the next LF
        self._line_size = 0
        self.anomalies: dict[str, int] = {}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _anomaly(self, kind: str) -> None:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip:]
            self._skip = 0
        if self._skip_line:
            nl = data.find(b"\n")
            if nl == -1:
                self._line_size += len(data)
                return out
            self._skip_line = False
            data = data[nl + 1:]
        buf = self._buf + data if self._buf else data
        pos, n, limit = 0, len(buf), self.max_size
        while pos < n:
            c = buf[pos]
            if 48 <= c <= 57:  # octet counting
                sp = buf.find(b" ", pos, pos + MAX_OCTET_DIGITS + 1)
                if sp == -1:
                    if n - pos <= MAX_OCTET_DIGITS:
                        break  # the count may still be arriving
                    self._anomaly(BAD_OCTET_COUNT)
                    pos = self._line(buf, pos, n, out)
                    if pos < 0:
                        return out
                    continue
                digits = buf[pos:sp]
                if not digits.isdigit():
                    self._anomaly(BAD_OCTET_COUNT)
                    pos = self._line(buf, pos, n, out)
                    if pos < 0:
                        return out
                    continue
                size = int(digits)
                start = sp + 1
                if size <= limit:
                    if n - start < size:
                        break
                    out.append((buf[start:start + size], size))
                    pos = start + size
                    continue
                if n - start < limit:
                    break  # wait for the first `limit` bytes of it
                out.append((buf[start:start + limit], size))
                if n < start + size:
                    self._skip = start + size - n
                    self._buf = b""
                    return out
                pos = start + size
                continue
            if c == 10:  # empty line between frames
                pos += 1
                continue
            pos = self._line(buf, pos, n, out)
            if pos < 0:
                return out
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _line(self, buf: bytes, pos: int, n: int, out: list[Frame]) -> int:
        """One LF-ended frame from `pos`: the new position, or -1 when the buffer was
        consumed (kept or skipped)."""
        nl = buf.find(b"\n", pos, pos + self.max_size + 2)
        if nl != -1:
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            out.append((buf[pos:end], end - pos))
            return nl + 1
        if n - pos <= self.max_size + 1:
            self._buf = buf[pos:]
            return -1
        nl = buf.find(b"\n", pos)
        if nl != -1:
            out.append((buf[pos:pos + self.max_size], nl - pos))
            return nl + 1
        out.append((buf[pos:pos + self.max_size], n - pos))
        self._skip_line, self._line_size = True, n - pos
        self._buf = b""
        return -1

    def end(self) -> list[Frame]:
        """The stream closed: what is left is a frame cut short; handed on, counted."""
        buf, self._buf = self._buf, b""
        if self._skip or self._skip_line:
            self._skip, self._skip_line = 0, False
            return []
        if not buf.strip():
            return []
        if buf[:1].isdigit():
            sp = buf.find(b" ", 0, MAX_OCTET_DIGITS + 1)
            if sp != -1 and buf[:sp].isdigit():
                self._anomaly(SHORT_FRAME)
                return [(buf[sp + 1:sp + 1 + self.max_size], int(buf[:sp]))]
        self._anomaly(INCOMPLETE_LINE)
        return [(buf[: self.max_size], len(buf))]


def frames(data: bytes, max_size: int) -> Iterator[Frame]:
    """Every frame of a complete stream (tests, tools)."""
    d = FrameDecoder(max_size)
    yield from d.feed(data)
    yield from d.end()


__all__ = ["FACILITIES", "SEVERITIES", "FrameDecoder", "SyslogParser", "bsd_timestamp",
           "facility_name", "frames", "severity_name"]
