"""SNMP errors, translated once from pysnmp and our codec into one small tree.

    SnmpError(reason)              every failure of one request, with a reason code
    ├── SnmpTimeout                no answer within timeout x retries ("timeout")
    ├── SnmpAuthError              USM rejected us: auth_failed / unknown_user /
    │                              wrong_engine_time
    └── SnmpDecodeError            bytes that are not a valid SNMP message
                                   ("malformed_reply")

A reason is one of the codes in docs/architecture.md so a failure becomes a
`device.health` record without further mapping. Messages never carry the
device address or credentials: callers name the device by its config name.
"""

from __future__ import annotations

from pipelines.vocab import Reason

TIMEOUT = Reason.TIMEOUT
AUTH_FAILED = Reason.AUTH_FAILED
UNKNOWN_USER = Reason.UNKNOWN_USER
WRONG_ENGINE_TIME = Reason.WRONG_ENGINE_TIME
MALFORMED = Reason.MALFORMED_REPLY
PARTIAL = Reason.PARTIAL_WALK
ERROR = Reason.ERROR


class SnmpError(Exception):
    """One SNMP request failed; `reason` is a health reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SnmpTimeout(SnmpError):
    def __init__(self, detail: str = "no response") -> None:
        super().__init__(TIMEOUT, detail)


class SnmpAuthError(SnmpError):
    pass


class SnmpDecodeError(SnmpError):
    def __init__(self, detail: str) -> None:
        super().__init__(MALFORMED, detail)
