"""Owner-only files: durable whole-file writes, appends, creation and reads.

Every file that may hold a secret, a key, a pseudonym-bearing record or an
audit entry is written through here, mode 0600 from the first byte (the mode
is given to `open`, never fixed afterwards), and read back only after
`require_private` agreed that nobody else can read it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import require_private


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` mode 0600, whole or not at all (temp file, fsync, rename,
    fsync of the directory); `exclusive` refuses to replace an existing file
    (`FileExistsError`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if exclusive:
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink()
    else:
        os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def append_private(path: Path, data: bytes) -> None:
    """Append `data` with one `write` on an O_APPEND descriptor (concurrent writers
    never interleave inside it), creating the file 0600 if needed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def open_private(path: Path, *, exclusive: bool = False, truncate: bool = True) -> int:
    """A write descriptor on `path`, created 0600 (an existing file is forced to 0600);
    `exclusive` raises `FileExistsError` rather than touch an existing file."""
    flags = os.O_WRONLY | os.O_CREAT
    flags |= os.O_EXCL if exclusive else (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def touch_private(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (a database file that a library
    opens next must not be born with the umask's mode); an existing file is left as is."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def read_private(path: Path) -> bytes:
    """The bytes of an owner-only file; `ConfigError` if group or others may read it."""
    require_private(str(path), path.stat().st_mode)
    return path.read_bytes()
