"""RFC 5424 / RFC 3164 parsing and RFC 6587 framing, pure."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pipelines.syslog import FrameDecoder, SyslogParser, frames

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


def parse(data: bytes, now: float = NOW, **kw: object) -> tuple[float | None, dict]:
    return SyslogParser(**kw).parse(data, now)  # type: ignore[arg-type]


def test_rfc5424_with_structured_data_and_bom() -> None:
    ts, f = parse(b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 42 ID47 '
                  b'[exampleSDID@32473 iut="3" eventSource="App\\"x\\]"][ex@1 a="b"] '
                  b'\xef\xbb\xbfAn application event')
    assert ts == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC).timestamp()
    assert f == {"format": "rfc5424", "facility": 20, "severity": 5, "time_quality": "exact",
                 "hostname": "mymachine.example.com", "app_name": "evntslog", "procid": "42",
                 "msgid": "ID47",
                 "structured_data": '[exampleSDID@32473 iut="3" eventSource="App\\"x\\]"]'
                                    '[ex@1 a="b"]',
                 "message": "An application event"}


def test_rfc5424_nil_values_offset_and_nanoseconds() -> None:
    ts, f = parse(b"<34>1 2003-08-24T05:14:15.123456789-07:00 - - - - -")
    assert ts == datetime(2003, 8, 24, 12, 14, 15, 123456, tzinfo=UTC).timestamp()
    assert f == {"format": "rfc5424", "facility": 4, "severity": 2, "time_quality": "exact",
                 "message": ""}
    ts, f = parse(b"<34>1 - host app - - - no time")
    assert ts is None and f["time_quality"] == "received" and f["message"] == "no time"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"), (b"plain text", "no_pri"), (b"<192>x", "bad_pri"), (b"<013>x", "bad_pri"),
    (b"<13>1 2003-10-11T22:14:15Z host", "bad_header"),
    (b"<13>1 2003-10-11T22:14:15Z host app - - [broken sd", "bad_structured_data"),
    (b"<13>1 2003-13-45T99:14:15Z host app - - - m", "bad_timestamp"),
])
def test_malformed_is_kept_raw_with_its_reason(data: bytes, reason: str) -> None:
    ts, f = parse(data)
    assert ts is None
    assert f["format"] == "raw" and f["parse_error"] == reason
    assert f["message"] == data.decode()
    assert (f["facility"], f["severity"]) == (1, 5)


def test_rfc3164_host_tag_pid() -> None:
    ts, f = parse(b"<38>Dec  7 11:59:58 fw-edge sshd[4242]: Accepted password for alice "
                  b"from 192.0.2.7 port 51000 ssh2")
    assert ts == datetime(2026, 12, 7, 11, 59, 58, tzinfo=UTC).timestamp()
    assert f == {"format": "rfc3164", "facility": 4, "severity": 6, "time_quality": "inferred",
                 "hostname": "fw-edge", "app_name": "sshd", "procid": "4242",
                 "message": "Accepted password for alice from 192.0.2.7 port 51000 ssh2"}


def test_rfc3164_without_hostname_and_cisco_form() -> None:
    _, f = parse(b"<13>Dec  7 11:00:00 su: pam session opened")
    assert "hostname" not in f and f["app_name"] == "su"
    ts, f = parse(b"<189>52: *Dec  7 10:46:11.123 UTC: %SYS-5-CONFIG_I: Configured from "
                  b"console by admin on vty0 (10.0.0.1)")
    assert ts == datetime(2026, 12, 7, 10, 46, 11, 123000, tzinfo=UTC).timestamp()
    assert f["time_quality"] == "inferred" and f["facility"] == 23 and f["severity"] == 5
    assert f["message"].startswith("Configured from console") and "hostname" not in f
    ts2, f = parse(b"<189>53: edge-rtr1.example.net: *Dec  7 10:46:11.123 UTC: %SYS-5-CONFIG_I: "
                   b"Configured from console")
    assert ts2 == ts and f["hostname"] == "edge-rtr1.example.net"
    assert f["app_name"] == "%SYS-5-CONFIG_I" and f["message"] == "Configured from console"


@pytest.mark.parametrize(("stamp", "now", "year"), [
    (b"Dec 31 23:59:59", datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), 2026),  # old year
    (b"Jan  1 00:00:03", datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC), 2027),  # clock ahead
    (b"Feb  5 10:00:00", datetime(2026, 12, 7, tzinfo=UTC), 2026),  # old, not next Feb
    (b"Dec 10 10:00:00", datetime(2026, 12, 7, tzinfo=UTC), 2026),  # 3 days ahead: slack
])
def test_rfc3164_year_rule(stamp: bytes, now: datetime, year: int) -> None:
    ts, _ = parse(b"<13>" + stamp + b" host app: m", now.timestamp())
    assert ts is not None
    assert datetime.fromtimestamp(ts, UTC).year == year


def test_rfc3164_zone_is_configured_unless_stated() -> None:
    paris = ZoneInfo("Europe/Paris")
    ts, _ = parse(b"<13>Dec  7 12:00:00 host app: m", tz=paris)
    assert ts == datetime(2026, 12, 7, 12, 0, tzinfo=paris).timestamp()
    ts, _ = parse(b"<13>Dec  7 12:00:00 UTC: app: m", tz=paris)
    assert ts == datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


def test_rfc3339_stamp_in_bsd_frame() -> None:  # rsyslog's forwarding format
    ts, f = parse(b"<86>2026-12-07T11:00:00.5+01:00 relay sudo: alice : TTY=pts/0")
    assert ts == datetime(2026, 12, 7, 10, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert f["hostname"] == "relay" and f["app_name"] == "sudo"
    assert f["time_quality"] == "exact" and f["facility"] == 10


def test_over_size_cut_and_flagged_without_splitting_a_character() -> None:
    msg = b"<13>Dec  7 11:00:00 host app: " + "é".encode() * 100
    _, f = parse(msg, max_size=101)
    assert f["truncated"] is True and f["octets"] == len(msg)
    assert "invalid_utf8" not in f and not f["message"].endswith("\ufffd")
    assert len(f["message"].encode()) <= 101


def test_invalid_utf8_and_nul_are_flagged_and_kept() -> None:
    _, f = parse(b"<13>Dec  7 11:00:00 host app: bad \xff\xfe and \x00 nul")
    assert f["invalid_utf8"] is True and f["nul_bytes"] is True
    assert f["message"] == "bad \ufffd\ufffd and \u2400 nul"


def test_random_bytes_always_give_fields() -> None:
    rnd = random.Random(7)
    p = SyslogParser(max_size=512)
    for _ in range(2000):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 700)))
        _, f = p.parse(b"<" + data if rnd.random() < 0.3 else data, NOW)
        assert isinstance(f["message"], str) and len(f["message"]) <= 512
        assert 0 <= f["facility"] <= 23 and 0 <= f["severity"] <= 7


# framing ----------------------------------------------------------------------

def test_octet_counting_and_lines_mixed_in_any_chunking() -> None:
    msgs = [b"<13>one", b"<13>two words", b"<13>" + b"x" * 300]
    stream = b"".join(b"%d %s" % (len(m), m) for m in msgs) + b"<13>line a\n<13>line b\r\n"
    want = [(m, len(m)) for m in msgs] + [(b"<13>line a", 10), (b"<13>line b", 10)]
    for _ in range(50):
        d = FrameDecoder(1024)
        got: list[tuple[bytes, int]] = []
        pos = 0
        while pos < len(stream):
            n = random.randint(1, 40)
            got += d.feed(stream[pos:pos + n])
            pos += n
        got += d.end()
        assert got == want and not d.anomalies


def test_over_size_frames_are_cut_and_memory_stays_bounded() -> None:
    d = FrameDecoder(100)
    out = d.feed(b"1000 <13>" + b"a" * 200)
    assert out == [(b"<13>" + b"a" * 96, 1000)]
    for _ in range(20):
        assert d.feed(b"b" * 37) == [] and d.buffered == 0
    tail = 1000 - 204 - 20 * 37
    out = d.feed(b"c" * tail + b"5 <13>z")
    assert out == [(b"<13>z", 5)]
    d = FrameDecoder(100)
    got: list[tuple[bytes, int]] = []
    for _ in range(16):  # a 1 MiB line
        got += d.feed(b"<13>" + os.urandom(32768).replace(b"\n", b"-") * 2)
        assert d.buffered <= 102
    got += d.feed(b"\n<13>after\n")
    assert len(got) == 2 and len(got[0][0]) == 100 and got[0][1] > 100
    assert got[1] == (b"<13>after", 9)


def test_stream_faults_are_counted() -> None:
    assert list(frames(b"50 <13>short", 100)) == [(b"<13>short", 50)]
    d = FrameDecoder(100)
    d.feed(b"50 <13>short")
    d.end()
    assert d.anomalies == {"short_frame": 1}
    d = FrameDecoder(100)
    assert d.feed(b"<13>no newline") == [] and d.end() == [(b"<13>no newline", 14)]
    assert d.anomalies == {"incomplete_line": 1}
    d = FrameDecoder(100)
    assert d.feed(b"12abc rest\n") == [(b"12abc rest", 10)]
    assert d.anomalies == {"bad_octet_count": 1}
