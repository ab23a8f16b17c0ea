"""The Starlette application: authentication, the access decision, parsing,
the work, and an audit entry, in that order, for every `/v1` call.

Handlers never build their own access rules: `_guard` authenticates,
`collector.auth.authorize` decides from the matrix, and only then does the
handler touch data. Refusals (bad token, wrong role, other tenant, missing or
expired TOTP) are audited too, with the reason code and never the secret.
Repeated failures are throttled (`collector/api/throttle.py`): a client that
keeps sending bad tokens, or a token that keeps sending wrong TOTP codes, gets
429 with Retry-After before anything is checked, audited as `*.throttled`.
The client's address is never written down, here or anywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from collector.api.openapi import document
from collector.api.throttle import Clock, Throttle, Throttled, ThrottleLimits
from collector.audit import AuditChainError, AuditLog
from collector.auth import NEEDS_TOTP, Action, AuthError, Principal, Users, authorize
from collector.dsr import KINDS, DsrService, parse_request, restrictions_in_force
from collector.holds import HoldError, Holds, parse_hold, valid_tenant
from collector.search import (
    AddressIndex,
    QueryError,
    Searcher,
    TenantKeys,
    ndjson,
    parse_query,
    subject_classes,
    unknown_names,
)
from collector.store import StoreError, StoreRetryableError, open_db

log = logging.getLogger("privtel.api")
MAX_BODY = 64 * 1024
# Codes that mean a TOTP code was sent and did not authenticate: each is a guess.
_TOTP_GUESSES = frozenset({"mfa_failed", "mfa_expired", "mfa_replayed"})


@dataclass(frozen=True)
class ApiConfig:
    """What the API process needs. `keys` may be empty: indicator search and DSR
    then answer 400 for lack of a key instead of pseudonymising."""

    store_url: str
    keys: TenantKeys
    audit_key: bytes | None = None
    index_interval_s: float = 2.0
    migrate: bool = True
    throttle: ThrottleLimits = field(default_factory=ThrottleLimits)
    clock: Clock = time.monotonic  # the throttle's; tests move it instead of sleeping
    totp_key: bytes | None = field(default=None, repr=False)


class _Refused(Exception):
    def __init__(self, status: int, code: str, reason: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.headers = dict(headers or {})


def _json(data: Any, status: int = 200, rid: str | None = None,
          headers: Mapping[str, str] | None = None) -> Response:
    h = {"X-Request-Id": rid} if rid else {}
    h.update(headers or {})
    return Response(orjson.dumps(data), status, headers=h or None,
                    media_type="application/json")


def _error(status: int, code: str, reason: str, rid: str,
           headers: Mapping[str, str] | None = None) -> Response:
    return _json({"error": code, "reason": reason, "request_id": rid}, status, rid, headers)


class Api:
    def __init__(self, cfg: ApiConfig) -> None:
        self.cfg = cfg
        self.db = open_db(cfg.store_url, migrate=cfg.migrate)
        self.users = Users(self.db, cfg.totp_key)
        sealed = self.users.seal_totp_secrets()
        if sealed:
            log.info("sealed %d TOTP secret(s) that were stored in clear", sealed)
        self.audit = AuditLog(self.db, cfg.audit_key)
        self.searcher = Searcher(self.db, cfg.keys,
                                 AddressIndex(self.db, restrictions=restrictions_in_force,
                                              min_interval_s=cfg.index_interval_s))
        self.dsr = DsrService(self.db, self.searcher)
        self.holds = Holds(self.db, cfg.keys,
                           refresh=lambda: self.searcher.index.refresh(force=True))
        self.throttle = Throttle(cfg.throttle, cfg.clock)

    # --- plumbing -------------------------------------------------------------

    async def _audit(self, p: Principal | None, action: str, tenants: tuple[str, ...],
                     rid: str, outcome: str, count: int = 0,
                     detail: dict[str, Any] | None = None) -> None:
        await run_in_threadpool(
            self.audit.append, actor=p.name if p else "-", role=p.role if p else "-",
            action=action, tenants=tenants, request_id=rid, outcome=outcome, count=count,
            detail=detail or {})

    async def _throttled(self, p: Principal | None, action: str, tenants: tuple[str, ...],
                         rid: str, e: Throttled, reason: str, detail: dict[str, Any]
                         ) -> _Refused:
        await self._audit(p, action, tenants, rid, "throttled", 0,
                          {**detail, "retry_after_s": e.retry_after})
        return _Refused(429, "throttled", f"{reason}; try again in {e.retry_after} s",
                        {"Retry-After": str(e.retry_after)})

    async def _principal(self, request: Request, rid: str) -> Principal:
        header = request.headers.get("authorization")
        client = self.throttle.client_key(request.client.host if request.client else None)
        try:
            self.throttle.token.admit(client)
        except Throttled as e:
            raise await self._throttled(
                None, "login.throttled", (), rid, e, "too many failed logins from this client",
                {"reason": "too_many_bad_tokens", "path": request.url.path}) from None
        try:
            return await run_in_threadpool(self.users.authenticate, header)
        except AuthError as e:
            if header is not None:
                self.throttle.token.done(client, False)
            detail = {"reason": e.code, "path": request.url.path}
            await self._audit(None, "login.failure", (), rid, "denied", 0, detail)
            raise _Refused(e.status, e.code, e.reason) from None

    async def _allow(self, p: Principal, request: Request, rid: str, actions: list[Action],
                     tenants: tuple[str, ...]) -> None:
        try:
            for a in actions:
                authorize(p, a, tenants)
            if any(a in NEEDS_TOTP for a in actions):
                await self._second_factor(p, request, rid, actions[-1], tenants)
        except AuthError as e:
            name = "mfa.failure" if e.code.startswith("mfa") else "access.denied"
            await self._audit(p, name, tenants, rid, "denied", 0,
                              {"reason": e.code, "action": actions[-1].value})
            raise _Refused(e.status, e.code, e.reason) from None

    async def _second_factor(self, p: Principal, request: Request, rid: str, action: Action,
                             tenants: tuple[str, ...]) -> None:
        """The TOTP check behind the token's lockout: while locked, the code is not
        even looked at, so a right guess then is worth nothing."""
        try:
            self.throttle.totp.admit(p.token_id)
        except Throttled as e:
            raise await self._throttled(
                p, "mfa.throttled", tenants, rid, e, "too many wrong TOTP codes for this token",
                {"reason": "too_many_totp_failures", "action": action.value}) from None
        ok: bool | None = None
        try:
            await run_in_threadpool(self.users.check_totp, p, request.headers.get("x-totp"))
            ok = True
        except AuthError as e:
            ok = False if e.code in _TOTP_GUESSES else None
            raise
        finally:
            self.throttle.totp.done(p.token_id, ok)

    async def _body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise _Refused(413, "too_large", f"request body must be at most {MAX_BODY} bytes")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY:
                raise _Refused(413, "too_large",
                               f"request body must be at most {MAX_BODY} bytes")
        if not data:
            raise _Refused(400, "bad_request", "request body must be a JSON object")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _Refused(400, "bad_request", "request body is not valid JSON") from None

    def _query_params(self, request: Request, known: tuple[str, ...]) -> dict[str, str]:
        params = request.query_params
        unknown = sorted(set(params.keys()) - set(known))
        if unknown:
            raise _Refused(400, "bad_request", unknown_names(unknown, known, "query parameter")
                           if known else f"{len(unknown)} unknown query parameter(s); "
                           "this endpoint takes none")
        for k in known:
            if len(params.getlist(k)) > 1:
                raise _Refused(400, "bad_request", f"{k} given more than once")
        return {k: params[k] for k in known if k in params}

    def route(self, fn: Callable[[Request, str], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            rid = os.urandom(8).hex()
            try:
                return await fn(request, rid)
            except _Refused as e:
                return _error(e.status, e.code, e.reason, rid, e.headers)
            except QueryError as e:
                return _error(400, "bad_request", str(e), rid)
            except StoreRetryableError:
                log.warning("request %s: database unavailable", rid)
                return _error(503, "unavailable", "database unavailable; retry later", rid)
            except StoreError as e:
                log.error("request %s: store error (%s)", rid, type(e).__name__)
                return _error(500, "internal", "internal error; quote the request id", rid)
            except Exception as e:
                log.error("request %s: unexpected %s", rid, type(e).__name__)
                return _error(500, "internal", "internal error; quote the request id", rid)

        return handler

    # --- endpoints ------------------------------------------------------------

    async def healthz(self, request: Request, rid: str) -> Response:
        return _json({"status": "ok"}, rid=rid)

    async def readyz(self, request: Request, rid: str) -> Response:
        try:
            await run_in_threadpool(self.db.ping)
        except StoreError:
            return _error(503, "unavailable", "database unavailable", rid)
        return _json({"status": "ready"}, rid=rid)

    async def openapi(self, request: Request, rid: str) -> Response:
        return _json(document())

    async def whoami(self, request: Request, rid: str) -> Response:
        self._query_params(request, ())
        p = await self._principal(request, rid)
        from collector.auth import MATRIX

        return _json({"name": p.name, "role": p.role, "tenants": list(p.tenants),
                      "mfa_enrolled": p.has_totp,
                      "actions": sorted(a.value for a in MATRIX[p.role])}, rid=rid)

    async def stats(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        params = self._query_params(request, ("tenant",))
        q = parse_query({"tenant": params.get("tenant")})
        await self._allow(p, request, rid, [Action.STATS], (q.tenant,))
        counts = await run_in_threadpool(self.searcher.stats, q.tenant)
        await self._audit(p, "stats", (q.tenant,), rid, "ok", sum(counts.values()))
        return _json({"tenant": q.tenant, "records_by_kind": counts, "request_id": rid},
                     rid=rid)

    async def search(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        q = parse_query(await self._body(request))
        actions = [Action.SEARCH] + ([Action.SEARCH_INDICATOR] if q.by_identifier else [])
        await self._allow(p, request, rid, actions, (q.tenant,))
        page = await run_in_threadpool(self.searcher.search, q)
        await self._audit(p, actions[-1].value, (q.tenant,), rid, "ok", len(page.records),
                          q.audit_detail())
        out: dict[str, Any] = {"records": page.records, "next_cursor": page.next_cursor,
                               "request_id": rid}
        if q.indicators:
            out["indicator_ranges"] = page.pseudonymous_ranges
        if q.subjects:
            out["subject_tokens"] = await run_in_threadpool(self.searcher.tokens, q)
        return _json(out, rid=rid)

    async def export(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        q = parse_query(await self._body(request))
        actions = [Action.SEARCH_EXPORT] + ([Action.SEARCH_INDICATOR] if q.by_identifier
                                            else [])
        await self._allow(p, request, rid, actions, (q.tenant,))
        await run_in_threadpool(self.searcher.ranges, q)  # NoKeyError before streaming
        await run_in_threadpool(self.searcher.tokens, q)

        def lines() -> Iterator[bytes]:
            n = 0
            outcome = "error"
            try:
                for line in ndjson(self.searcher.iterate(q)):
                    n += 1
                    yield line
                outcome = "ok"
            finally:
                self.audit.append(actor=p.name, role=p.role, action="search.export",
                                  tenants=(q.tenant,), request_id=rid, outcome=outcome,
                                  count=n, detail=q.audit_detail())

        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"X-Request-Id": rid})

    def dsr_endpoint(self, kind: str) -> Callable[[Request, str], Awaitable[Response]]:
        base = Action(f"dsr.{kind}")

        async def run(request: Request, rid: str) -> Response:
            p = await self._principal(request, rid)
            self._query_params(request, ())
            req = parse_request(kind, await self._body(request))
            actions = [base] + ([Action.DSR_EXPORT_REIDENTIFY] if req.reidentify else [])
            await self._allow(p, request, rid, actions, req.tenants)
            action = actions[-1]
            if req.ndjson:
                result, lines = await run_in_threadpool(
                    lambda: self.dsr.export_stream(req, actor=p.name, request_id=rid))
                await self._audit(p, action.value, req.tenants, rid, result.status,
                                  result.count, {"per_tenant": result.per_tenant,
                                                 "format": "ndjson",
                                                 "subjects": _classes(req)})
                return StreamingResponse(lines, media_type="application/x-ndjson",
                                         headers={"X-Request-Id": rid,
                                                  "X-Record-Count": str(result.count)})
            try:
                result = await run_in_threadpool(
                    lambda: self.dsr.run(req, actor=p.name, request_id=rid))
            except QueryError:
                raise
            except Exception:
                await self._audit(p, action.value, req.tenants, rid, "error")
                raise
            detail: dict[str, Any] = {"per_tenant": result.per_tenant,
                                      "subjects": _classes(req)}
            if result.verified is not None:
                detail["verified"] = result.verified
            if result.kept is not None:
                detail["kept"] = result.kept
            if result.held is not None:
                detail["held"] = result.held
                detail["holds"] = [h["id"] for h in result.holds or []]
            if result.suppression is not None:
                detail["suppression_ranges"] = {t: len(v) for t, v in
                                                result.suppression.items()}
            await self._audit(p, action.value, req.tenants, rid, result.status, result.count,
                              detail)
            out = result.summary()
            if kind == "export":
                out["records"] = result.records
            return _json(out, rid=rid)

        return run

    async def dsr_requests(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        params = self._query_params(request, ("limit",))
        raw = params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise _Refused(400, "bad_request", "limit must be an integer from 1 to 1000")
        await self._allow(p, request, rid, [Action.DSR_LIST], ())
        rows = await run_in_threadpool(self.dsr.requests, p.may_see, int(raw))
        await self._audit(p, "dsr.list", p.tenants, rid, "ok", len(rows))
        return _json({"requests": rows, "request_id": rid}, rid=rid)

    async def hold_add(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        self._query_params(request, ())
        spec = parse_hold(await self._body(request))
        await self._allow(p, request, rid, [Action.HOLD_ADD], (spec.tenant,))
        hold, n = await run_in_threadpool(lambda: self.holds.add(spec, actor=p.name))
        await self._audit(p, "hold.add", (spec.tenant,), rid, "ok", n,
                          {"hold": hold.id, "reason": hold.reason,
                           "subject": hold.subject is not None,
                           "since": hold.since, "until": hold.until})
        return _json({"hold": hold.to_json(), "held_records": n, "request_id": rid}, rid=rid)

    async def hold_list(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        params = self._query_params(request, ("tenant", "active"))
        tenant = params.get("tenant")
        if tenant is not None and not valid_tenant(tenant):
            raise _Refused(400, "bad_request", "tenant must be a tenant name")
        await self._allow(p, request, rid, [Action.HOLD_LIST], (tenant,) if tenant else ())
        rows = await run_in_threadpool(lambda: self.holds.list(
            [tenant] if tenant else None, active_only=params.get("active") == "1"))
        rows = [h for h in rows if p.may_see(h.tenant)]
        await self._audit(p, "hold.list", (tenant,) if tenant else p.tenants, rid, "ok",
                          len(rows))
        return _json({"holds": [h.to_json() for h in rows], "request_id": rid}, rid=rid)

    async def hold_release(self, request: Request, rid: str) -> Response:
        """Role first, then the hold's tenant against the token's scope and the
        second factor. Hold ids are random, so a 403 for another tenant's hold
        tells nothing a guess could use."""
        p = await self._principal(request, rid)
        self._query_params(request, ())
        body = await self._body(request)
        if not isinstance(body, dict) or set(body) - {"id", "reason"} or not isinstance(
                body.get("id"), str) or len(body["id"]) != 16:
            raise _Refused(400, "bad_request", "body must be {\"id\": <hold id>, "
                           "\"reason\": <why it is released>}")
        try:
            authorize(p, Action.HOLD_RELEASE, ())
        except AuthError as e:
            await self._audit(p, "access.denied", (), rid, "denied", 0,
                              {"reason": e.code, "action": Action.HOLD_RELEASE.value})
            raise _Refused(e.status, e.code, e.reason) from None
        hold = await run_in_threadpool(self.holds.get, body["id"])
        if hold is None or not hold.active:
            raise _Refused(404, "not_found", "no hold in force with that id")
        await self._allow(p, request, rid, [Action.HOLD_RELEASE], (hold.tenant,))
        try:
            released, n = await run_in_threadpool(lambda: self.holds.release(
                hold.id, actor=p.name, reason=body.get("reason", "")))
        except HoldError as e:
            raise _Refused(400, "bad_request", str(e)) from None
        await self._audit(p, "hold.release", (released.tenant,), rid, "ok", n,
                          {"hold": released.id, "reason": released.release_reason})
        return _json({"hold": released.to_json(), "still_held_records": n, "request_id": rid},
                     rid=rid)

    async def audit_verify(self, request: Request, rid: str) -> Response:
        p = await self._principal(request, rid)
        self._query_params(request, ())
        await self._allow(p, request, rid, [Action.AUDIT_VERIFY], ())
        try:
            v = await run_in_threadpool(self.audit.verify)
        except AuditChainError as e:
            await self._audit(p, "audit.verify", (), rid, "broken", 0, {"index": e.index})
            return _error(409, "audit_chain_broken", str(e), rid)
        await self._audit(p, "audit.verify", (), rid, "ok", v.entries)
        return _json({"entries": v.entries, "head": v.head, "request_id": rid}, rid=rid)

    def routes(self) -> list[Route]:
        r = self.route
        return [
            Route("/healthz", r(self.healthz), methods=["GET"]),
            Route("/readyz", r(self.readyz), methods=["GET"]),
            Route("/openapi.json", r(self.openapi), methods=["GET"]),
            Route("/v1/whoami", r(self.whoami), methods=["GET"]),
            Route("/v1/stats", r(self.stats), methods=["GET"]),
            Route("/v1/search", r(self.search), methods=["POST"]),
            Route("/v1/search/export", r(self.export), methods=["POST"]),
            Route("/v1/dsr/requests", r(self.dsr_requests), methods=["GET"]),
            *[Route(f"/v1/dsr/{k}", r(self.dsr_endpoint(k)), methods=["POST"])
              for k in KINDS],
            Route("/v1/audit/verify", r(self.audit_verify), methods=["GET"]),
            Route("/v1/holds", r(self.hold_add), methods=["POST"]),
            Route("/v1/holds", r(self.hold_list), methods=["GET"]),
            Route("/v1/holds/release", r(self.hold_release), methods=["POST"]),
        ]

    def close(self) -> None:
        self.db.close()


def _classes(req: Any) -> dict[str, int]:
    """How many identifiers of each class named the subject: all the audit keeps."""
    out = subject_classes(req.subjects)
    if req.addresses:
        out["ip"] = len(req.addresses)
    return dict(sorted(out.items()))


def _not_found(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    reason = "no such endpoint; see /openapi.json" if code == 404 else \
        "method not allowed for this endpoint; see /openapi.json"
    return _json({"error": "not_found" if code == 404 else "method_not_allowed",
                  "reason": reason}, code)


def create_app(cfg: ApiConfig) -> Starlette:
    """The ASGI app; `app.state.api` is the `Api` (tests reach the db through it)."""
    api = Api(cfg)
    app = Starlette(routes=api.routes(), exception_handlers={404: _not_found,
                                                             405: _not_found})
    app.state.api = api
    return app
