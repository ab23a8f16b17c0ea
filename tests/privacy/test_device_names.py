"""A device's own names (configured name, reported hostname) are tokenised inside its
log and event text, as whole words, with the token its fields get."""

from __future__ import annotations

import pytest

from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.pseudonym.names import DeviceNames
from pipelines.record import Kind, Record

HEX = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef"


def rec(kind: Kind, name: str, device: str = "edge-7", **fields: object) -> Record:
    return Record(kind=kind, tenant="acme", site="hq", device=device, name=name,
                  fields=fields)  # type: ignore[arg-type]


@pytest.fixture
def p() -> Pseudonymiser:
    return Pseudonymiser(TenantKey.from_hex(HEX))


def test_a_syslog_line_loses_the_hostname_its_inventory_reports(p: Pseudonymiser) -> None:
    poll = [rec(Kind.LOG, "log.line", message="Nov 25 14:09:10 Kiosk-Berlin-03 sshd[812]: "
                "Accepted publickey for ops from 192.0.2.7 port 50022"),
            rec(Kind.INVENTORY, "ssh.inventory", hostname="kiosk-berlin-03", model="x86_64")]
    line, inv = p.records(poll)  # the log line comes first; names are learnt from the poll
    msg = str(line.fields["message"])
    assert "kiosk" not in msg.lower() and "192.0.2.7" not in msg
    assert f" {inv.fields['hostname']} sshd[812]" in msg  # the token the hostname field got
    assert msg.startswith("Nov 25 14:09:10 tk-") and "Accepted publickey" in msg


def test_the_configured_name_is_replaced_as_a_whole_word_only(p: Pseudonymiser) -> None:
    out = p.record(rec(Kind.EVENT, "trap", device="fw1",
                       message="fw1: link to fw10 down; FW1 retrying; fw1-mgmt up"))
    msg = str(out.fields["message"])
    assert msg.split(":")[0] == out.device  # the same token as the device field
    assert "fw10" in msg and "fw1-mgmt" in msg  # other words that merely start alike
    assert "FW1" not in msg and msg.count(out.device) == 2


def test_a_name_the_tenant_knows_is_replaced_in_all_its_text(p: Pseudonymiser) -> None:
    """Issue 17: a host name learnt from one device's records is replaced in every
    text of the tenant (other devices' logs, interface aliases), with its field token."""
    (inv,) = p.records([rec(Kind.INVENTORY, "ssh.inventory", hostname="core-sw-9")])
    metric = p.record(rec(Kind.METRIC, "if", if_alias="uplink core-sw-9", in_octets=5))
    assert metric.fields["if_alias"] == f"uplink {inv.fields['hostname']}"
    other = p.record(rec(Kind.LOG, "log.line", device="edge-8", message="peer core-sw-9 up"))
    assert other.fields["message"] == f"peer {inv.fields['hostname']} up"


def test_short_numeric_and_too_many_names_are_not_learnt() -> None:
    names = DeviceNames(max_devices=2)
    for n in ("a", "1234", *(f"name{i}" for i in range(40))):
        names.learn("dev-a", n)
    out = names.rewrite("dev-a", "a 1234 name0 name39 dev-a", lambda s: "<" + s + ">")
    assert out == "a 1234 <name0> name39 <dev-a>"
    names.learn("dev-b", "bbb")
    names.learn("dev-c", "ccc")  # over max_devices: everything learnt is dropped
    assert names.rewrite("dev-a", "name0", lambda s: "X") == "name0"
    assert names.rewrite("dev-c", "ccc dev-c", lambda s: "X") == "X X"


def test_an_identifier_field_of_a_log_record_is_tokenised_once() -> None:
    """A device's own name in a log record's identifier field gets the same token as in a
    metric record: the own-name rewrite is for text fields only, even on the first record."""
    from pipelines.pseudonym import PrivacyPolicy, Pseudonymiser, TenantKey
    from pipelines.record import Kind, Record

    p = Pseudonymiser(TenantKey.generate(1), PrivacyPolicy())
    r = Record(kind=Kind.LOG, tenant="t", site="s", device="d1", name="syslog",
               fields={"hostname": "vm", "message": "vm rebooted"}, ts=1e9)
    out = p.record(r).fields
    assert out["hostname"] == p.token("vm")
    assert "vm" not in str(out["message"]).split()
