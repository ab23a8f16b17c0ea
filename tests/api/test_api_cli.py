"""The command line end to end: users on the store, then a real uvicorn with
TLS on 127.0.0.1, driven by `privtel query`, `privtel dsr` and `privtel audit`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from api_kit import SUBJECT, seed, tenant_keys
from peers.ports import free_port

from collector.api import ApiConfig, create_app
from collector.api.serve import server
from collector.store import open_db
from privtel.cli import main


def _out(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    c = capsys.readouterr()
    return c.out, c.err


def test_users_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["users", "add", "ann", "--role", "security", "--tenant", "acme,globex",
                 "--store", url]) == 0
    token, err = _out(capsys)
    assert token.startswith("ptk_") and "shown once" in err
    assert main(["users", "add", "ann", "--role", "security", "--tenant", "acme",
                 "--store", url]) == 2
    assert "already exists" in _out(capsys)[1]
    with pytest.raises(SystemExit):
        main(["users", "add", "bob", "--role", "root", "--tenant", "acme", "--store", url])
    assert main(["users", "add", "Bad Name", "--role", "noc", "--tenant", "acme",
                 "--store", url]) == 2
    assert "user name must be" in _out(capsys)[1]
    assert main(["users", "add", "dora", "--role", "dpo", "--tenant", "*", "--store", url]) == 0
    assert "mfa-enrol" in _out(capsys)[1]
    assert main(["users", "mfa-enrol", "dora", "--store", url]) == 0
    uri = _out(capsys)[0].strip()
    assert uri.startswith("otpauth://totp/") and pyotp.parse_uri(uri).secret
    assert main(["users", "revoke", "ann", "--store", url]) == 0
    assert main(["users", "revoke", "ann", "--store", url]) == 2
    _out(capsys)
    assert main(["users", "list", "--json", "--store", url]) == 0
    rows = [json.loads(x) for x in _out(capsys)[0].splitlines()]
    by = {r["name"]: r for r in rows}
    assert by["ann"]["revoked_at"] is not None and by["dora"]["mfa"] is True
    assert by["dora"]["tenants"] == ["*"]
    listing = json.dumps(rows)
    assert token.strip().split("_", 2)[2] not in listing and "secret" not in listing
    assert main(["users", "list", "--store", url]) == 0
    assert "dora" in _out(capsys)[0]


def test_serve_refuses_open_address_without_tls(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["api", "serve", "--store", url, "--listen", "0.0.0.0:0"]) == 2
    assert "without TLS" in _out(capsys)[1]


@pytest.fixture
def live(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, object]]:
    url = f"sqlite:///{tmp_path / 's.db'}"
    seed(url)
    certs = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(certs)]) == 0
    app = create_app(ApiConfig(store_url=url, keys=tenant_keys(), index_interval_s=0.0))
    port = free_port()
    srv = server(app, host="127.0.0.1", port=port, ssl_certfile=str(certs / "broker.crt"),
                 ssl_keyfile=str(certs / "broker.key"), log_level="warning")
    t = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert t.is_alive(), "uvicorn thread died"
        time.sleep(0.05)
    capsys.readouterr()
    try:
        yield {"url": url, "api": f"https://127.0.0.1:{port}", "ca": str(certs / "ca.crt"),
               "tmp": tmp_path}
    finally:
        srv.should_exit = True
        t.join(timeout=10)
        app.state.api.close()


def _token(tmp: Path, name: str, token: str) -> str:
    p = tmp / f"{name}.token"
    p.write_text(token + "\n")
    p.chmod(0o600)
    return str(p)


def test_query_and_dsr_over_tls(live: dict[str, object],
                                capsys: pytest.CaptureFixture[str]) -> None:
    url, api, ca, tmp = live["url"], live["api"], live["ca"], live["tmp"]
    assert isinstance(tmp, Path)
    common = ["--api", str(api), "--cacert", str(ca)]
    assert main(["users", "add", "sam", "--role", "security", "--tenant", "acme",
                 "--store", str(url)]) == 0
    sam = _token(tmp, "sam", _out(capsys)[0].strip())
    assert main(["users", "add", "dora", "--role", "dpo", "--tenant", "acme,globex",
                 "--store", str(url)]) == 0
    dora = _token(tmp, "dora", _out(capsys)[0].strip())
    assert main(["users", "mfa-enrol", "dora", "--store", str(url)]) == 0
    totp = pyotp.TOTP(pyotp.parse_uri(_out(capsys)[0].strip()).secret)
    ind = tmp / "ind.txt"
    ind.write_text(f"# from the feed\n{SUBJECT}\n")

    assert main(["query", *common, "--token-file", sam, "--tenant", "acme",
                 "--indicators-file", str(ind)]) == 0
    out, err = _out(capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 3 and SUBJECT not in out and "3 record(s)" in err
    assert main(["query", *common, "--token-file", sam, "--tenant", "acme", "--all"]) == 0
    assert len(_out(capsys)[0].splitlines()) == 10
    assert main(["query", *common, "--token-file", sam, "--tenant", "acme", "--limit", "4"]) == 0
    assert "more with --cursor" in _out(capsys)[1]
    assert main(["query", *common, "--token-file", sam, "--tenant", "globex"]) == 1
    assert "outside this token's scope" in _out(capsys)[1]

    dsr = ["--token-file", dora, "--tenant", "acme", "--tenant", "globex",
           "--addresses-file", str(ind)]
    out_file = tmp / "export.json"
    first = totp.now()
    assert main(["dsr", "export", *common, *dsr, "--totp", first, "--out", str(out_file),
                 "--progress"]) == 0
    err = _out(capsys)[1]
    assert "100%" in err and "exported 6 record(s)" in err
    doc = json.loads(out_file.read_text())
    assert doc["count"] == 6 and len(doc["records"]) == 6
    assert out_file.stat().st_mode & 0o777 == 0o600
    assert main(["dsr", "restrict", *common, *dsr]) == 0
    assert json.loads(_out(capsys)[0])["count"] == 6
    assert main(["query", *common, "--token-file", sam, "--tenant", "acme",
                 "--indicators-file", str(ind)]) == 0
    assert _out(capsys)[0] == ""
    assert main(["dsr", "erase", *common, *dsr, "--totp", first, "--yes"]) == 1
    assert "already used" in _out(capsys)[1]
    upcoming = totp.at(time.time() + 30)  # one step of clock drift is accepted
    assert main(["dsr", "unrestrict", *common, *dsr, "--totp", upcoming]) == 0
    lifted = json.loads(_out(capsys)[0])
    assert lifted["kind"] == "unrestrict" and lifted["count"] == 6
    assert main(["query", *common, "--token-file", sam, "--tenant", "acme",
                 "--indicators-file", str(ind)]) == 0
    assert len(_out(capsys)[0].splitlines()) == 3
    db = open_db(str(url), migrate=False)  # codes are single use; the next step is 30 s away
    with db.tx(write=True) as cur:
        cur.execute("UPDATE api_users SET totp_last_step = 0 WHERE name = 'dora'")
    db.close()
    assert main(["dsr", "erase", *common, *dsr, "--totp", totp.now(), "--yes"]) == 0
    result = json.loads(_out(capsys)[0])
    assert result["verified"] is True and result["count"] == 6
    assert main(["audit", "verify", "--store", str(url)]) == 0
    assert "audit log OK" in _out(capsys)[0]


def test_api_serve_command_serves_openapi_and_readyz(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from api_kit import KEYS

    url = f"sqlite:///{tmp_path / 's.db'}"
    keys = tmp_path / "keys"
    keys.mkdir()
    for t, hexkey in KEYS.items():
        (keys / f"tenant-{t}.key").write_text(hexkey + "\n")
        (keys / f"tenant-{t}.key").chmod(0o600)
    privacy = tmp_path / "privacy.toml"
    privacy.write_text("[privacy]\npreserve_prefix_v4 = 24\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "privtel", "api", "serve", "--store", url,
                             "--listen", f"127.0.0.1:{port}", "--tenant-keys", str(keys),
                             "--privacy", str(privacy), "--log-level", "info"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert json.loads(r.read())["status"] == "ready"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "api serve did not come up"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as r:
            assert "/v1/dsr/erase" in json.loads(r.read())["paths"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert "tenant keys for 3 tenant(s)" in err
    assert "/openapi.json HTTP" not in err  # no access log: it would print client addresses
    assert not any(k in err for k in KEYS.values())


def test_tenant_key_files_must_be_private(tmp_path: Path) -> None:
    from api_kit import KEYS

    from collector.search import TenantKeys
    from pipelines.config import ConfigError

    (tmp_path / "tenant-acme.key").write_text(KEYS["acme"])
    (tmp_path / "tenant-acme.key").chmod(0o600)
    (tmp_path / "tenant-acme.key.epoch1").write_text(KEYS["globex"])  # rotated out
    (tmp_path / "tenant-acme.key.epoch1").chmod(0o600)
    keys = TenantKeys.from_dir(tmp_path)
    assert keys.tenants == ["acme"] and len(keys.ips("acme", SUBJECT)) == 2
    (tmp_path / "tenant-globex.key").write_text(KEYS["globex"])
    (tmp_path / "tenant-globex.key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        TenantKeys.from_dir(tmp_path)
