"""`privtel hold` against a served API: a subject file with ip:/net: lines and
bare addresses places a subject hold, `list --active` shows it, `release`
lifts it; a line of an unknown kind is refused before anything is sent, naming
the line and never its value."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyotp
import pytest
from api_kit import NEIGHBOUR, SUBJECT, seed, tenant_keys
from peers.ports import free_port

from collector.api import ApiConfig, create_app
from collector.api.serve import server
from collector.auth import TOTP_STEP, Users
from privtel.cli import main


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    seed(url)
    app = create_app(ApiConfig(store_url=url, keys=tenant_keys(), index_interval_s=0.0))
    users = Users(app.state.api.db)
    token = tmp_path / "dora.token"
    token.write_text(users.add("dora", "dpo", "acme"))
    token.chmod(0o600)
    secret = pyotp.parse_uri(users.enrol_totp("dora")).secret
    port = free_port()
    srv = server(app, host="127.0.0.1", port=port, log_level="warning")
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield {"args": ["--api", f"http://127.0.0.1:{port}", "--token-file", str(token)],
               "secret": secret, "tmp": tmp_path, "api": app.state.api}
    finally:
        srv.should_exit = True
        t.join(timeout=10)
        app.state.api.close()


def code(s: dict, step: int = 0) -> str:
    return pyotp.TOTP(s["secret"], interval=TOTP_STEP).at(time.time() + step * TOTP_STEP)


def test_hold_cli_round_trip(served: dict, capsys: pytest.CaptureFixture[str]) -> None:
    subject = served["tmp"] / "subject.txt"
    subject.write_text(f"# the subject\nip:{SUBJECT}\nnet:{NEIGHBOUR}/32\n")
    capsys.readouterr()
    assert main(["hold", "add", *served["args"], "--tenant", "acme", "--subject-file",
                 str(subject), "--reason", "claim 17", "--totp", code(served)]) == 0
    added = orjson.loads(capsys.readouterr().out)
    assert added["held_records"] == 5  # three of the subject's, two of the neighbour's
    assert SUBJECT not in orjson.dumps(added).decode()
    assert main(["hold", "list", *served["args"], "--tenant", "acme", "--active"]) == 0
    listed = orjson.loads(capsys.readouterr().out)["holds"]
    assert [h["id"] for h in listed] == [added["hold"]["id"]]
    assert main(["hold", "release", *served["args"], added["hold"]["id"], "--reason",
                 "settled", "--totp", code(served, 1)]) == 0
    assert orjson.loads(capsys.readouterr().out)["still_held_records"] == 0


def test_unknown_identifier_kind_is_refused(served: dict,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    subject = served["tmp"] / "subject.txt"
    subject.write_text("ip:192.0.2.9\nlogin:someone@example.org\n")
    assert main(["hold", "add", *served["args"], "--tenant", "acme", "--subject-file",
                 str(subject), "--reason", "r", "--totp", code(served)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "ip, net, user" in err and "someone" not in err
    subject.write_text("email:not-an-address\n")
    assert main(["hold", "add", *served["args"], "--tenant", "acme", "--subject-file",
                 str(subject), "--reason", "r", "--totp", code(served)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "e-mail" in err and "not-an-address" not in err
    assert served["api"].holds.list() == []
