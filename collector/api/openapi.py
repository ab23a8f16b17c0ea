"""The OpenAPI 3.0 document, written by hand so every limit the handlers
enforce is stated where clients (and the schemathesis fuzz test) read it."""

from __future__ import annotations

from typing import Any

from collector.search import DEFAULT_LIMIT, MAX_INDICATORS, MAX_LIMIT, MAX_TEXT
from pipelines.pseudonym.subjects import SUBJECT_CLASSES

_TENANT = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}
_TIME = {"oneOf": [{"type": "number", "minimum": 0, "maximum": 4102444799},
                   {"type": "string", "format": "date-time"}],
         "description": "unix seconds or RFC 3339 with a zone"}
_NET = {"type": "string", "maxLength": 64, "description": "IPv4/IPv6 address or CIDR prefix"}
_ERROR = {"$ref": "#/components/schemas/Error"}
_SUBJECTS = {
    "oneOf": [
        {"type": "array", "minItems": 1, "maxItems": MAX_INDICATORS, "items": {"oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["class", "value"],
             "properties": {"class": {"type": "string", "enum": list(SUBJECT_CLASSES)},
                            "value": {"type": "string", "minLength": 1, "maxLength": 300}}},
            {"type": "string", "minLength": 3, "maxLength": 320,
             "pattern": "^(" + "|".join(SUBJECT_CLASSES) + "):.+$"}]}},
        {"type": "string", "minLength": 3, "maxLength": 32000,
         "description": "the subject-file format: class:value a line, # comments"}],
    "description": "raw identifiers of any class (ip, net, user, email, mac, host, phone, "
                   "person); the server pseudonymises them with the tenant key and never "
                   "stores, logs or echoes them"}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


_ERRORS = {"400": _err("malformed request; `reason` says which field and why"),
           "401": _err("missing, wrong, revoked or expired token, or a missing/expired TOTP"),
           "403": _err("role may not take this action, or tenant outside the token's scope"),
           "413": _err("request body too large"),
           "429": {**_err("too many failed logins from this client, or wrong TOTP codes for "
                          "this token; nothing was checked"),
                   "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                               "description": "seconds until one more try"}}}}
_TOTP = {"name": "X-TOTP", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[0-9]{6}$"},
         "description": "current TOTP code; required for dsr export, erase and unrestrict"}

SEARCH_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["tenant"],
    "properties": {
        "tenant": _TENANT, "since": _TIME, "until": _TIME,
        "site": {"type": "string", "minLength": 1, "maxLength": 128},
        "device": {"type": "string", "minLength": 1, "maxLength": 128,
                   "description": "pseudonymous device id"},
        "kind": {"type": "string", "enum": ["metric", "health", "event", "log", "inventory"]},
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                 "description": "case-insensitive substring of the record's fields"},
        "ip": {**_NET, "description": "pseudonymous address or prefix, as stored"},
        "indicators": {"type": "array", "minItems": 1, "maxItems": MAX_INDICATORS,
                       "items": _NET,
                       "description": "raw addresses or prefixes; the server pseudonymises "
                       "them with the tenant key and never returns or logs them"},
        "token": {"type": "string", "maxLength": 64,
                  "description": "pseudonymous token (tk-...) or MAC pseudonym, as stored"},
        "subjects": _SUBJECTS,
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                  "default": DEFAULT_LIMIT},
        "cursor": {"type": "string", "maxLength": 200},
    }}

DSR_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["tenants"],
    "anyOf": [{"required": ["addresses"]}, {"required": ["subjects"]}],
    "properties": {
        "tenants": {"type": "array", "minItems": 1, "maxItems": 100, "items": _TENANT},
        "addresses": {"type": "array", "minItems": 1, "maxItems": MAX_INDICATORS,
                      "items": _NET, "description": "the subject's raw addresses"},
        "subjects": _SUBJECTS,
        "since": _TIME, "until": _TIME,
        "reason": {"type": "string", "maxLength": 200,
                   "description": "ticket reference, kept with the request"},
        "note": {"type": "string", "minLength": 1, "maxLength": 2000,
                 "description": "correct only: the correction, linked to each record"},
        "record_ids": {"type": "array", "minItems": 1, "maxItems": 1000,
                       "items": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
        "format": {"type": "string", "enum": ["json", "ndjson"],
                   "description": "export only: ndjson streams a header line then records"},
        "field": {"type": "string", "pattern": "^[a-z0-9_.]{1,63}$",
                  "description": "correct only, with value: the field to replace"},
        "value": {"oneOf": [{"type": "string", "maxLength": 2000}, {"type": "number"},
                            {"type": "boolean"}],
                  "description": "correct only: the field's new value"},
        "reidentify": {"type": "boolean", "description": "export only (json): the "
                       "subject's own addresses in clear; dpo role and TOTP"},
    }}

HOLD_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["tenant", "reason"],
    "properties": {"tenant": _TENANT, "since": _TIME, "until": _TIME,
                   "addresses": {"type": "array", "minItems": 1, "maxItems": 100, "items": _NET},
                   "subjects": _SUBJECTS,
                   "reason": {"type": "string", "minLength": 1, "maxLength": 200}}}
RELEASE_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["id", "reason"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                   "reason": {"type": "string", "minLength": 1, "maxLength": 200}}}
_RECORD = {"type": "object", "properties": {
    "id": {"type": "string"}, "tenant": {"type": "string"}, "site": {"type": "string"},
    "device": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
    "ts": {"type": "number"}, "fields": {"type": "object"},
    "retention_class": {"type": "string"}, "expires_at": {"type": "number", "nullable": True},
    "restricted": {"type": "boolean"}, "annotations": {"type": "array"}}}


def _json(schema: dict[str, Any], desc: str = "ok") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def document() -> dict[str, Any]:
    from collector.dsr import KINDS  # here, not at the top: collector.dsr imports this package

    obj = {"type": "object"}
    sec: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "privtel query and data-subject-request API", "version": "1",
                 "description": "Search pseudonymised records (security), answer data-subject "
                 "requests (dpo). Every call is checked against the role x action matrix and "
                 "written to the hash-chained audit log."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "ptk_... token from "
                                           "`privtel users add`"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "reason"],
                                  "properties": {"error": {"type": "string"},
                                                 "reason": {"type": "string"},
                                                 "request_id": {"type": "string"}}},
                        "Record": _RECORD},
        },
        "paths": {
            "/healthz": {"get": {"summary": "process is up", "security": [],
                                 "responses": {"200": _json(obj)}}},
            "/readyz": {"get": {"summary": "database reachable", "security": [],
                                "responses": {"200": _json(obj),
                                              "503": _err("database unavailable")}}},
            "/v1/whoami": {"get": {"summary": "the token's user, role, scope and actions",
                                   "security": sec,
                                   "responses": {"200": _json(obj), **_ERRORS}}},
            "/v1/stats": {"get": {
                "summary": "record counts by kind (restricted records excluded)",
                "security": sec,
                "parameters": [{"name": "tenant", "in": "query", "required": True,
                                "schema": _TENANT}],
                "responses": {"200": _json(obj), **_ERRORS}}},
            "/v1/search": {"post": {
                "summary": "one page of matching records, oldest first",
                "security": sec,
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": SEARCH_BODY}}},
                "responses": {"200": _json({"type": "object", "properties": {
                    "records": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Record"}},
                    "next_cursor": {"type": "string", "nullable": True},
                    "request_id": {"type": "string"}}}), **_ERRORS}}},
            "/v1/search/export": {"post": {
                "summary": "every matching record as NDJSON, oldest first",
                "security": sec,
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": SEARCH_BODY}}},
                "responses": {"200": {"description": "one record per line",
                                      "content": {"application/x-ndjson": {"schema": obj}}},
                              **_ERRORS}}},
            **{f"/v1/dsr/{kind}": {"post": {
                "summary": f"data-subject request: {kind}",
                "security": sec,
                "parameters": [_TOTP],
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": DSR_BODY}}},
                "responses": {"200": _json(obj), **_ERRORS}}}
                for kind in KINDS},
            "/v1/dsr/requests": {"get": {
                "summary": "recorded data-subject requests, newest first",
                "security": sec,
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": {"200": _json(obj), **_ERRORS}}},
            "/v1/holds": {
                "post": {"summary": "place a legal hold (purge and erasure skip the records)",
                         "security": sec, "parameters": [_TOTP],
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": HOLD_BODY}}},
                         "responses": {"200": _json(obj), **_ERRORS}},
                "get": {"summary": "legal holds, oldest first", "security": sec,
                        "parameters": [{"name": "tenant", "in": "query", "required": False,
                                        "schema": _TENANT},
                                       {"name": "active", "in": "query", "required": False,
                                        "schema": {"type": "string", "enum": ["1"]}}],
                        "responses": {"200": _json(obj), **_ERRORS}}},
            "/v1/holds/release": {"post": {
                "summary": "release a legal hold", "security": sec, "parameters": [_TOTP],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": RELEASE_BODY}}},
                "responses": {"200": _json(obj), "404": _err("no hold in force with that id"),
                              **_ERRORS}}},
            "/v1/audit/verify": {"get": {
                "summary": "check the audit hash chain; entry count and head hash",
                "security": sec,
                "responses": {"200": _json(obj), "409": _err("the chain is broken"),
                              **_ERRORS}}},
        },
    }
