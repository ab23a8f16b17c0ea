"""A small client for the API, used by `privtel query` and `privtel dsr`.

Standard library only (urllib), so the command line needs nothing the
collector does not already install. Every call has a timeout; errors come
back as `ApiClientError` carrying the server's reason sentence.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson


class ApiClientError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}" if status else reason)
        self.status, self.reason = status, reason


class ApiClient:
    def __init__(self, base_url: str, token: str, *, cafile: str | None = None,
                 timeout_s: float = 60.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("--api must be an http:// or https:// URL")
        self.base = base_url.rstrip("/")
        self.token, self.timeout = token.strip(), timeout_s
        self._ctx = ssl.create_default_context(cafile=cafile) \
            if base_url.startswith("https://") else None

    def _open(self, method: str, path: str, body: Any = None,
              headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None
              ) -> Any:
        url = self.base + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else orjson.dumps(body)
        h = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(url, data=data, headers=h, method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx)
        except urllib.error.HTTPError as e:
            try:
                reason = str(orjson.loads(e.read()).get("reason", e.reason))
            except (orjson.JSONDecodeError, AttributeError, OSError):
                reason = str(e.reason)
            raise ApiClientError(e.code, reason) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise ApiClientError(0, f"cannot reach the API at {self.base}: {why}") from None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._open("GET", path, params=params) as resp:
            return orjson.loads(resp.read())

    def post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Any:
        with self._open("POST", path, body, headers) as resp:
            return orjson.loads(resp.read())

    def stream(self, path: str, body: Any, headers: Mapping[str, str] | None = None
               ) -> Iterator[dict[str, Any]]:
        """NDJSON lines as objects, read as they arrive."""
        with self._open("POST", path, body, headers) as resp:
            for line in resp:
                if line.strip():
                    yield orjson.loads(line)
