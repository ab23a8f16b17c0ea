"""The derived token index: what it takes from a record, and that both backends
create it in the same migration."""

from __future__ import annotations

import pytest
from factories import BACKENDS

from collector.search import QueryError, identifiers_of, parse_subjects, parse_token, token_key
from collector.store.base import migrations

TOK = "tk-8ce7b6-980e3a5feadcde8b934f"
DEV = "tk-8ce7b6-1ba03db7578394f1fe54"


def test_tokens_and_macs_from_fields_and_text() -> None:
    fields = {"message": f"sshd: Accepted publickey for {TOK} from 10.0.0.1 port 22",
              "client_mac": "06:1B:7C:5E:42:28", "note": "seen 061b.7c5e.4229 twice",
              "if_index": 3}
    addrs, tokens = identifiers_of({**fields, "hostname": DEV})
    assert tokens == {TOK, DEV, "06:1b:7c:5e:42:28", "06:1b:7c:5e:42:29"}
    assert addrs == {(4, "0a000001")}


def test_token_key_and_parse_token() -> None:
    assert token_key("06-1B-7C-5E-42-28") == "06:1b:7c:5e:42:28"
    assert token_key(TOK) == TOK
    assert parse_token("token", " 061b.7c5e.4228 ") == "06:1b:7c:5e:42:28"
    with pytest.raises(QueryError) as e:
        parse_token("token", "adaeze@clinic.ng")
    assert "adaeze" not in str(e.value)


def test_subject_lists_split_addresses_from_other_classes() -> None:
    nets, subjects = parse_subjects("subjects", ["ip:10.1.2.3", "net:10.1.2.0/24",
                                                 {"class": "user", "value": "adaeze"},
                                                 "user:adaeze", "email:A@B.ng"])
    assert [str(n) for n in nets] == ["10.1.2.3/32", "10.1.2.0/24"]
    assert [(s.cls, s.value) for s in subjects] == [("user", "adaeze"), ("email", "a@b.ng")]
    for bad in ([], ["adaeze"], [{"class": "user"}], ["user:a\x00b"], 7, ["x" * 400]):
        with pytest.raises(QueryError) as e:
            parse_subjects("subjects", bad)
        assert "adaeze" not in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0009_on_both_backends(backend: str) -> None:
    found = {v: (name, sql) for v, name, sql in migrations(backend)}
    name, sql = found[9]
    assert name == "record_tokens" and "CREATE TABLE record_tokens" in sql
