"""Profile file validation, output parsing and the device's [devices.ssh] options."""

from __future__ import annotations

import pytest
from factories import agent_head

from agents import config as agent_config
from agents.ssh.poller import SshOptions, classify
from agents.ssh.profiles import (
    LogCursor,
    ParseError,
    builtin_profiles,
    finish,
    parse_profiles,
    parse_rows,
    parse_uptime,
)
from pipelines.config import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [
    ("3 weeks, 2 days, 4 hours, 15 minutes", ((3 * 7 + 2) * 24 + 4) * 3600 + 900),
    ("1 year, 2 weeks, 0 days, 1 hour, 1 minute", 365 * 86400 + 14 * 86400 + 3660),
    ("6 weeks, 1 day, 3 hours and 41 minutes", ((6 * 7 + 1) * 24 + 3) * 3600 + 41 * 60),
    ("12 day(s), 3 hour(s), 4 minute(s), 5 second(s)", 12 * 86400 + 3 * 3600 + 245),
    ("39 days,  2:11", 39 * 86400 + 2 * 3600 + 660),
    ("2:11", 7860),
    ("18 mins", 1080),
])
def test_uptime_phrasings(text: str, seconds: int) -> None:
    assert parse_uptime(text) == seconds


def test_uptime_garbage_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_uptime("since forever")


def test_builtin_profiles_cover_required_device_types() -> None:
    profiles = builtin_profiles()
    assert {"cisco_ios", "cisco_nxos", "arista_eos", "juniper_junos", "linux"} <= set(profiles)
    for p in profiles.values():
        records = {e.record for c in p.commands for e in c.emits}
        assert {"ssh.inventory", "if.errors", "log.line"} <= records or p.device_type == "linux"
        assert any(c.is_log for c in p.commands)
    assert {t for t, p in profiles.items() if p.enable} == {"cisco_ios", "cisco_nxos", "arista_eos"}


BAD = {
    "unknown_record": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "lines"\n'
                       'emit = [{ record = "bogus", fields = { a = "B" } }]\n', "record"),
    "unknown_converter": ('[cisco_ios]\n[[cisco_ios.commands]]\ncommand = "show version"\n'
                          'template = "ntc"\nemit = [{ record = "ssh.inventory", '
                          'fields = { a = "B|wat" } }]\n', "unknown converter"),
    "no_ntc_template": ('[cisco_ios]\n[[cisco_ios.commands]]\ncommand = "show nothing here"\n'
                        'template = "ntc"\nemit = [{ record = "ssh.inventory", '
                        'fields = { a = "B" } }]\n', "ntc-templates has no template"),
    "missing_own_template": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "nope.textfsm"\n'
                             'emit = [{ record = "host.cpu", fields = { a = "B" } }]\n',
                             "no template"),
    "health_field": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "top_cpu.textfsm"\n'
                     'emit = [{ record = "device.health", fields = { up = "IDLE" } }]\n',
                     "only uptime_s"),
    "unknown_key": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "top_cpu.textfsm"\n'
                    'colour = "red"\nemit = [{ record = "host.cpu", fields = { a = "IDLE" } }]\n',
                    "unknown key"),
    "lines_non_log": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "lines"\n'
                      'emit = [{ record = "host.cpu", fields = { a = "LINE" } }]\n', "log.line"),
    "bad_regex": ('[x]\n[[x.commands]]\ncommand = "show x"\ntemplate = "lines"\nmatch = "(("\n'
                  'emit = [{ record = "log.line", fields = { message = "LINE" } }]\n',
                  "regular expression"),
    "no_commands": ("[x]\n", "at least one command"),
    "enable_not_bool": ('[x]\nenable = "yes"\n[[x.commands]]\ncommand = "show x"\n'
                        'template = "lines"\n'
                        'emit = [{ record = "log.line", fields = { message = "LINE" } }]\n',
                        r"x\.enable"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profiles_are_rejected_with_the_key(case: str) -> None:
    text, why = BAD[case]
    with pytest.raises(ConfigError, match=why):
        parse_profiles(text, "profiles.toml")


def test_parse_error_names_the_command_never_the_output() -> None:
    cmd = builtin_profiles()["cisco_ios"].commands[0]
    with pytest.raises(ParseError) as e:
        parse_rows("cisco_ios", cmd, "show version", "secret-looking garbage 10.9.8.7")
    assert e.value.command == "show version"
    assert "10.9.8.7" not in str(e.value) and "garbage" not in str(e.value)


def test_finish_brings_vendor_values_to_the_contract() -> None:
    assert finish("host.memory", {"mem_total_bytes": 100, "mem_free_bytes": 30}) == {
        "mem_total_bytes": 100, "mem_used_bytes": 70}
    assert finish("host.memory", {"mem_total_bytes": 200, "mem_used_pct": 25.0}) == {
        "mem_total_bytes": 200, "mem_used_bytes": 50}
    assert finish("host.cpu", {"cpu_idle_pct": 91.1}) == {"cpu_util_pct": 8.9}


def test_log_cursor() -> None:
    c = LogCursor()
    assert c.new_lines(["a", "b", "c"]) == ["a", "b", "c"]
    assert c.new_lines(["a", "b", "c"]) == []
    assert c.new_lines(["b", "c", "d", "e"]) == ["d", "e"]
    assert c.new_lines(["x", "y"]) == ["x", "y"]  # buffer cleared or wrapped past us
    assert c.new_lines([]) == []
    assert c.new_lines(["x", "y", "x", "y", "z"]) == ["z"]


AGENT = agent_head("a1") + """[[devices]]
name = "core1"
address = "127.0.0.1"
protocol = "ssh"
{extra}
"""


def test_agent_config_reads_ssh_options() -> None:
    cfg = agent_config.parse(AGENT.format(extra='[devices.ssh]\ndevice_type = "arista_eos"\n'
                                          'credential = "lab"\nhost_key_policy = "tofu"\n'
                                          'known_hosts = "kh"\n'), "/etc/privtel/agent.toml")
    (dev,) = cfg.devices
    assert dev.port == 22
    opts = dev.options
    assert isinstance(opts, SshOptions)
    assert (opts.device_type, opts.credential, opts.host_key_policy) == (
        "arista_eos", "lab", "tofu")
    assert str(opts.known_hosts) == "/etc/privtel/kh"


@pytest.mark.parametrize(("extra", "why"), [
    ("", "devices\\[0\\].ssh.device_type: is required"),
    ('[devices.ssh]\ndevice_type = "cisco_ios"\n', "ssh.credential: is required"),
    ('[devices.ssh]\ndevice_type = "dlink"\ncredential = "x"\n', "must be one of"),
    ('[devices.ssh]\ndevice_type = "linux"\ncredential = "x"\npassword = "p"\n',
     "password: unknown key"),
    ('[devices.ssh]\ndevice_type = "linux"\ncredential = "x"\nhost_key_policy = "yolo"\n',
     "host_key_policy: must be one of strict, tofu"),
    ('[devices.ssh]\ndevice_type = "linux"\ncredential = "x"\nconnect_timeout_s = 30\n'
     'poll_timeout_s = 5\n', "poll_timeout_s: must be at least connect_timeout_s"),
])
def test_bad_ssh_options(extra: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        agent_config.parse(AGENT.format(extra=extra), "agent.toml")


def test_classify_plain_errors() -> None:
    assert classify(ConnectionRefusedError(), "connect") == "refused"
    assert classify(TimeoutError(), "connect") == "timeout"
    assert classify(RuntimeError("boom"), "prompt") == "unexpected_prompt"
    assert classify(RuntimeError("boom"), "command") == "error"
