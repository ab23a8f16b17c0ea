"""plumbing.files and plumbing.keyfiles: owner-only from the first byte, refused when not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipelines.config import ConfigError
from pipelines.pseudonym import TenantKey
from plumbing.files import append_private, open_private, read_private, touch_private, write_private
from plumbing.keyfiles import read_tenant_key


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_writers_create_owner_only_files(tmp_path: Path) -> None:
    old = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        a, b, c, d = (tmp_path / n for n in "abcd")
        write_private(a, b"one")
        append_private(b, b"x\n")
        append_private(b, b"y\n")
        os.close(open_private(c))
        touch_private(d)
    finally:
        os.umask(old)
    assert [_mode(p) for p in (a, b, c, d)] == [0o600] * 4
    assert read_private(b) == b"x\ny\n"


def test_exclusive_writers_never_replace(tmp_path: Path) -> None:
    p = tmp_path / "key"
    write_private(p, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(p, b"second", exclusive=True)
    with pytest.raises(FileExistsError):
        open_private(p, exclusive=True)
    touch_private(p)
    assert read_private(p) == b"first"
    assert [q.name for q in tmp_path.iterdir()] == ["key"]  # no temp file left behind


def test_readers_refuse_files_others_can_read(tmp_path: Path) -> None:
    p = tmp_path / "tenant.key"
    key = TenantKey.generate(3)
    write_private(p, (key.to_hex() + "\n").encode())
    assert read_tenant_key(p, 3) == key
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_private(p)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_tenant_key(p, 3)
    secret = "zz" + "41" * 31
    write_private(p, secret.encode())
    with pytest.raises(ConfigError) as e:
        read_tenant_key(p, 1)
    assert secret not in str(e.value) and str(p) in str(e.value)
