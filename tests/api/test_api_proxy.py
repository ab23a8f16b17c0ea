"""Behind a reverse proxy the failed-login throttle counts the client the proxy names,
but only a proxy we were told to trust may name one. Real uvicorn on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from peers.ports import free_port

from collector.api import ApiConfig, create_app
from collector.api.serve import server
from collector.api.throttle import ThrottleLimits
from collector.search import TenantKeys
from privtel.cli import main

BAD = {"Authorization": "Bearer ptk_nobody_" + "A" * 43}
CLIENT_A, CLIENT_B = "198.51.100.7", "198.51.100.8"


@contextmanager
def running(tmp: Path, trusted: str | None) -> Iterator[str]:
    app = create_app(ApiConfig(store_url=f"sqlite:///{tmp / 's.db'}", keys=TenantKeys(),
                               throttle=ThrottleLimits(token_failures=3)))
    port = free_port()
    srv = server(app, host="127.0.0.1", port=port, log_level="warning", trusted_proxies=trusted)
    t = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(timeout=10)
        app.state.api.close()


def _whoami(base: str, client: str) -> int:
    r = httpx.get(f"{base}/v1/whoami", headers={**BAD, "X-Forwarded-For": client}, timeout=10)
    return r.status_code


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8"])
def test_a_trusted_proxy_names_the_client(tmp_path: Path, trusted: str) -> None:
    with running(tmp_path, trusted) as base:
        assert [_whoami(base, CLIENT_A) for _ in range(3)] == [401] * 3
        assert _whoami(base, CLIENT_A) == 429
        assert _whoami(base, CLIENT_B) == 401  # another client behind the same proxy


def test_an_untrusted_sender_cannot_pick_its_address(tmp_path: Path) -> None:
    with running(tmp_path, None) as base:
        assert [_whoami(base, CLIENT_A) for _ in range(3)] == [401] * 3
        # a fresh X-Forwarded-For does not buy a fresh count
        assert _whoami(base, CLIENT_B) == 429


def test_serve_refuses_a_throttle_of_zero(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["api", "serve", "--store", url, "--max-login-failures", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
