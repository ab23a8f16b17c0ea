"""The `device` id survives tenant-key rotation; addresses still change with the epoch."""

from __future__ import annotations

import stat
from pathlib import Path

from agents.tenantkeys import device_label_key, load_tenant_key, rotate_tenant_key_file
from pipelines.pseudonym import Pseudonymiser, TenantKey
from pipelines.record import Kind, Record
from plumbing.files import write_private


def poll(device: str = "core-router-1") -> Record:
    return Record(Kind.METRIC, "acme", "site1", device, "if",
                  {"peer_addr": "192.0.2.7", "in_octets": 1}, ts=1_750_000_000.0)


def test_label_key_keeps_device_id_across_epochs_and_only_it() -> None:
    label = TenantKey.generate(0)
    e1, e2 = TenantKey.generate(1), TenantKey.generate(2)
    a = Pseudonymiser(e1, device_key=label).record(poll())
    b = Pseudonymiser(e2, device_key=label).record(poll())
    assert a.device == b.device and "core-router-1" not in a.device
    assert a.fields["peer_addr"] != b.fields["peer_addr"]  # addresses unlink at rotation
    assert a.fields["pkid"] != b.fields["pkid"]
    assert Pseudonymiser(e1, device_key=label).record(poll("core-router-2")).device != a.device
    # without a label key the id follows the epoch, as before
    assert Pseudonymiser(e1).record(poll()).device != Pseudonymiser(e2).record(poll()).device
    # another tenant's label key gives another id for the same name
    assert Pseudonymiser(e1, device_key=TenantKey.generate(0)).record(poll()).device != a.device


def test_agent_key_files_rotation_keeps_device_ids(tmp_path: Path) -> None:
    key_file = tmp_path / "tenant.key"
    write_private(key_file, TenantKey.generate(1).to_hex().encode())
    label = device_label_key(key_file)
    label_file = tmp_path / "tenant.key.device"
    assert stat.S_IMODE(label_file.stat().st_mode) == 0o600
    before = Pseudonymiser(load_tenant_key(key_file, 1).key, device_key=label).record(poll())
    rotate_tenant_key_file(key_file, 1)
    after_key = load_tenant_key(key_file, 1).key
    assert after_key.epoch == 2
    after = Pseudonymiser(after_key, device_key=device_label_key(key_file)).record(poll())
    assert after.device == before.device
    assert after.fields["pkid"] != before.fields["pkid"]
    assert label_file.read_bytes() == label.to_hex().encode()  # made once, never rotated
