"""The device simulator itself: clear errors for bad arguments, vendor answers."""

from __future__ import annotations

import pytest

from privtel.sim import SshDeviceSim
from privtel.sim.ssh import recording_name


@pytest.mark.parametrize(("kw", "why"), [
    ({"vendor": "dlink"}, "vendor must be one of"),
    ({"vendor": "cisco_ios", "fault": "explode"}, "fault must be one of"),
    ({"vendor": "cisco_ios", "port": 70000}, "port must be 0-65535"),
])
def test_bad_arguments(kw: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SshDeviceSim(**kw)


def test_answers() -> None:
    sim = SshDeviceSim("juniper_junos", hostname="edge-9")
    assert sim.answer("set cli screen-length 0") == "Screen length set to 0"
    assert "Hostname: edge-9" in (sim.answer("show version") or "")
    assert "unknown command" in (sim.answer("show bogus thing") or "")
    assert sim.prompt("ops") == "ops@edge-9> "
    sim.overrides["show version"] = "custom"
    assert sim.answer("show version") == "custom"
    assert recording_name("show log messages | last 200") == "show_log_messages_last_200.txt"
    assert sim.commands[-1] == "show version"


async def test_start_twice_is_an_error() -> None:
    sim = SshDeviceSim("arista_eos")
    await sim.start()
    try:
        assert sim.port > 0
        with pytest.raises(RuntimeError, match="already started"):
            await sim.start()
    finally:
        await sim.stop()
    await sim.stop()
