"""Table walks over any `SnmpClient`: the awkward agents are handled once, here.

GETBULK with configurable max-repetitions; on tooBig the repetitions are
halved and the request retried; v1 walks with GETNEXT, and so does an agent
whose first GETBULK goes unanswered but whose GETNEXT is (the caller keeps
that in mind for the device); endOfMibView, leaving the subtree and v1's noSuchName end
the walk; an OID that does not increase stops it as a partial walk rather than
looping forever. A failure after some rows arrived is returned as data (the
rows so far plus the error), because a partial table is still worth shipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.snmp import errors as E
from agents.snmp.client import PduError, SnmpClient, TooBig
from agents.snmp.values import END_OF_MIB_VIEW, EXCEPTIONS, Oid, VarBind, is_prefix

MAX_VARBINDS = 2_000_000


@dataclass(slots=True)
class WalkResult:
    varbinds: list[VarBind]
    error: E.SnmpError | None = None
    requests: int = 0
    bulk_refused: bool = False  # GETBULK went unanswered but GETNEXT worked: remember it


async def walk(client: SnmpClient, root: Oid, max_repetitions: int, *,
               use_bulk: bool = True) -> WalkResult:
    """All varbinds under `root`, in order; `error` is set when the walk stopped early."""
    res = WalkResult([])
    out = res.varbinds
    cur = root
    rep = max(1, max_repetitions)
    bulk = use_bulk and client.version != "1"
    chain = getattr(client, "bulk_chain", None)
    n = len(root)

    def take(vbs: list[VarBind]) -> Oid | None:
        """The common case, accepted inside a chained client's socket callback: a
        whole batch inside the subtree, ordered ends, no exceptions, room left.
        Anything else goes back to the loop below, which handles it as before."""
        nonlocal cur
        if not vbs or len(out) + len(vbs) > MAX_VARBINDS:
            return None
        last = vbs[-1][0]
        if last > cur and last[:n] == root and vbs[0][0] > cur and EXCEPTIONS.isdisjoint(
                [vb[1] for vb in vbs]):
            out.extend(vbs)
            cur = last
            res.requests += 1
            return last
        return None

    while True:
        try:
            res.requests += 1
            if not bulk:
                vbs = await client.next([cur])
            elif chain is not None:  # the fast path's: no task wake-up per request
                vbs = await chain([cur], rep, take)
            else:
                vbs = await client.bulk([cur], rep)
        except TooBig:
            if bulk and rep > 1:
                rep = max(1, rep // 2)
                continue
            res.error = E.SnmpError(E.PARTIAL if out else E.ERROR, "response too big")
            return res
        except PduError as e:
            if e.status == 2 and not bulk:
                return res
            res.error = E.SnmpError(E.PARTIAL, e.detail) if out else e
            return res
        except E.SnmpTimeout as e:
            if bulk and not out and not res.bulk_refused:
                # some agents silently drop GETBULK; the caller knows the device is alive
                bulk = False
                res.bulk_refused = True
                continue
            res.error = E.SnmpError(E.PARTIAL, "walk stopped: timeout") if out else e
            return res
        except E.SnmpError as e:
            if out:
                res.error = E.SnmpError(E.PARTIAL, f"walk stopped: {e.reason}")
            else:
                res.error = e
            return res
        if not vbs:
            res.error = E.SnmpError(E.PARTIAL if out else E.MALFORMED, "empty response")
            return res
        last = vbs[-1][0]
        if last > cur and last[: len(root)] == root and EXCEPTIONS.isdisjoint(
                [vb[1] for vb in vbs]) and vbs[0][0] > cur:
            # the common case: a whole batch inside the subtree, ordered ends, no exceptions
            out.extend(vbs)
            cur = last
        else:
            for oid, tag, value in vbs:
                if tag == END_OF_MIB_VIEW or not is_prefix(root, oid):
                    return res
                if oid <= cur:
                    res.error = E.SnmpError(E.PARTIAL, "agent returned a non-increasing OID")
                    return res
                if tag not in EXCEPTIONS:
                    out.append((oid, tag, value))
                cur = oid
        if len(out) > MAX_VARBINDS:
            res.error = E.SnmpError(E.PARTIAL, f"walk exceeded {MAX_VARBINDS} varbinds")
            return res
