"""The one client TLS context every broker connection uses."""

from __future__ import annotations

import ssl
from pathlib import Path

from pipelines.config import require_private


def tls_context(ca_file: Path | None, cert_file: Path | None,
                key_file: Path | None) -> ssl.SSLContext:
    """Verify the server against `ca_file` (system roots when None), TLS 1.2 at least, and
    present our certificate when given; a key file others can read is refused."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        if key_file is not None:
            require_private(str(key_file), key_file.stat().st_mode)
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx
