"""A deployment's secret, or a random one kept under the data dir: the token signing key (``streamrec.auth``)
and the pseudonym key (``streamrec.pseudonyms``) are both made this way."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from streamrec.errors import UserError


def configured_or_file(configured: str, setting: str, path: Path, min_bytes: int) -> bytes:
    """``configured`` (the setting's value) when set, else the key file at ``path``, made on first use (mode
    0600) with ``min_bytes`` random bytes as hex."""
    if configured:
        key = configured.encode("utf-8")
        if len(key) < min_bytes:
            raise UserError(f"{setting} is {len(key)} bytes; use at least {min_bytes} random ones")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: of two processes starting at once, one writes the key and both then read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(min_bytes) + "\n")
    for _ in range(50):  # the writer may not have written yet
        key = path.read_text(encoding="utf-8").strip().encode("utf-8")
        if key:
            return key
        time.sleep(0.01)
    raise UserError(f"{path} is empty: delete it to make a new key (what the old one made stops matching)")
