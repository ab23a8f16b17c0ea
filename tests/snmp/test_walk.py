"""Walk edge cases that a healthy snmpd never shows, through an in-memory fake agent."""

from __future__ import annotations

from collections.abc import Sequence

from agents.snmp import errors as E
from agents.snmp.client import PduError, TooBig
from agents.snmp.values import (
    COUNTER32,
    END_OF_MIB_VIEW,
    NO_SUCH_INSTANCE,
    Oid,
    VarBind,
)
from agents.snmp.walk import walk

ROOT = (1, 3, 6, 1, 2, 1, 2, 2, 1, 10)
TABLE = [((*ROOT, i), COUNTER32, i * 100) for i in range(1, 41)]
AFTER = ((1, 3, 6, 1, 2, 1, 2, 2, 1, 11, 1), COUNTER32, 7)


class FakeAgent:
    """An agent over a sorted list of varbinds, with switchable misbehaviour."""

    def __init__(self, data: list[VarBind], *, version: str = "2c", too_big_over: int = 0,
                 drop_bulk: bool = False, ignore_bulk: bool = False, loop_at: int = 0,
                 fail_after: int = 0) -> None:
        self.data, self.version = sorted(data), version
        self.too_big_over, self.drop_bulk, self.ignore_bulk = too_big_over, drop_bulk, ignore_bulk
        self.loop_at, self.fail_after = loop_at, fail_after
        self.calls: list[tuple[str, int]] = []

    def _after(self, oid: Oid, n: int) -> list[VarBind]:
        out = [vb for vb in self.data if vb[0] > oid][:n]
        if len(out) < n:
            out.append((out[-1][0] if out else oid, END_OF_MIB_VIEW, None))
        return out

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        raise NotImplementedError

    async def next(self, oids: Sequence[Oid]) -> list[VarBind]:
        self.calls.append(("next", 1))
        self._maybe_fail()
        if self.version == "1":
            nxt = [vb for vb in self.data if vb[0] > oids[0]]
            if not nxt:
                raise PduError(2, 1)
            return nxt[:1]
        return self._after(oids[0], 1)

    async def bulk(self, oids: Sequence[Oid], max_repetitions: int) -> list[VarBind]:
        self.calls.append(("bulk", max_repetitions))
        self._maybe_fail()
        if self.drop_bulk:
            raise E.SnmpTimeout()
        if self.too_big_over and max_repetitions > self.too_big_over:
            raise TooBig()
        if self.loop_at and oids[0] >= TABLE[self.loop_at][0]:
            return [TABLE[0]]  # goes backwards: would loop forever if followed
        return self._after(oids[0], 1 if self.ignore_bulk else max_repetitions)

    def _maybe_fail(self) -> None:
        if self.fail_after and len(self.calls) > self.fail_after:
            raise E.SnmpTimeout()

    async def close(self) -> None:
        pass


async def test_plain_walk_stops_at_subtree_end() -> None:
    agent = FakeAgent([*TABLE, AFTER])
    res = await walk(agent, ROOT, 16)
    assert res.varbinds == TABLE and res.error is None
    assert res.requests == 3


async def test_too_big_halves_repetitions() -> None:
    agent = FakeAgent(TABLE, too_big_over=5)
    res = await walk(agent, ROOT, 40)
    assert res.varbinds == TABLE and res.error is None
    assert [r for _, r in agent.calls[:5]] == [40, 20, 10, 5, 5]


async def test_end_of_mib_view() -> None:
    res = await walk(FakeAgent(TABLE), ROOT, 25)
    assert res.varbinds == TABLE and res.error is None


async def test_agent_answering_bulk_like_getnext() -> None:
    agent = FakeAgent(TABLE, ignore_bulk=True)
    res = await walk(agent, ROOT, 25)
    assert res.varbinds == TABLE and res.requests == 41


async def test_agent_dropping_bulk_falls_back_to_getnext() -> None:
    agent = FakeAgent(TABLE, drop_bulk=True)
    res = await walk(agent, ROOT, 25)
    assert res.varbinds == TABLE and res.bulk_refused
    assert agent.calls[0] == ("bulk", 25) and {c for c, _ in agent.calls[1:]} == {"next"}
    again = await walk(agent, ROOT, 25, use_bulk=False)
    assert again.varbinds == TABLE


async def test_v1_walk_with_no_such_name_end() -> None:
    agent = FakeAgent(TABLE, version="1")
    res = await walk(agent, ROOT, 25)
    assert res.varbinds == TABLE and res.error is None
    assert {c for c, _ in agent.calls} == {"next"}


async def test_non_increasing_oid_is_a_partial_walk() -> None:
    res = await walk(FakeAgent(TABLE, loop_at=10), ROOT, 5)
    assert res.error is not None and res.error.reason == "partial_walk"
    assert res.varbinds == TABLE[:len(res.varbinds)] and len(res.varbinds) >= 10


async def test_timeout_mid_walk_keeps_rows() -> None:
    res = await walk(FakeAgent(TABLE, fail_after=2), ROOT, 10)
    assert res.varbinds == TABLE[:20]
    assert res.error is not None and res.error.reason == "partial_walk"


async def test_exception_values_are_skipped() -> None:
    data = [*TABLE[:3], ((*ROOT, 99), NO_SUCH_INSTANCE, None)]
    res = await walk(FakeAgent(data), ROOT, 10)
    assert res.varbinds == TABLE[:3]


def test_reason_codes_are_the_contracts() -> None:
    from pipelines.record import HEALTH_REASONS

    ours = {E.TIMEOUT, E.AUTH_FAILED, E.UNKNOWN_USER, E.WRONG_ENGINE_TIME, E.MALFORMED,
            E.PARTIAL, E.ERROR}
    assert ours <= HEALTH_REASONS
