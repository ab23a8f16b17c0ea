"""The names agents write and the collector reads, in one place.

Record names and health reason codes used to be string literals in each
poller and in the NOC exporter; a typo in one of them silently split a series.
Both are `StrEnum`s, so a member compares equal to its string and records,
stores and labels are unchanged; docs/architecture.md lists what each means.
"""

from __future__ import annotations

from enum import StrEnum


class RecordName(StrEnum):
    DEVICE_HEALTH = "device.health"
    AGENT_HEARTBEAT = "agent.heartbeat"
    SNMP_SYSTEM = "snmp.system"
    SNMP_TRAP = "snmp.trap"
    IF = "if"
    IF_ERRORS = "if.errors"
    HOST_CPU = "host.cpu"
    HOST_MEMORY = "host.memory"
    HOST_LOAD = "host.load"
    SSH_INVENTORY = "ssh.inventory"
    SSH_PARSE_ERROR = "ssh.parse_error"
    LOG_LINE = "log.line"
    SYSLOG = "syslog"


class Reason(StrEnum):
    """Why a `device.health` record has `up` 0 (`AGENT_SILENT` is the collector's own)."""

    TIMEOUT = "timeout"
    AUTH_FAILED = "auth_failed"
    UNKNOWN_USER = "unknown_user"
    WRONG_ENGINE_TIME = "wrong_engine_time"
    MALFORMED_REPLY = "malformed_reply"
    PARTIAL_WALK = "partial_walk"
    REFUSED = "refused"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    UNEXPECTED_PROMPT = "unexpected_prompt"
    PARSE_ERROR = "parse_error"
    NO_CREDENTIAL = "no_credential"
    ERROR = "error"
    AGENT_SILENT = "agent_silent"


HEALTH_REASONS: frozenset[str] = frozenset(r.value for r in Reason if r is not Reason.AGENT_SILENT)
"""Reason codes a poller may put in a `device.health` record."""


class TrapName(StrEnum):
    """The `trap` field of an `snmp.trap` record for the generic traps of RFC 3418."""

    COLD_START = "coldStart"
    WARM_START = "warmStart"
    LINK_DOWN = "linkDown"
    LINK_UP = "linkUp"
    AUTHENTICATION_FAILURE = "authenticationFailure"
    UNKNOWN = "unknown"
