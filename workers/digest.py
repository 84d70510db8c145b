"""File digests: what runs record of the files they use (weights, exported models), and how copies are checked.

Torch-free, so the board transport and the driver import it without loading torch.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read now."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=16)
def _cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def cached_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, computed once per process for a file of the same path, size and mtime.

    For the driver, which records the same weights file on every run of a sweep; a file replaced since is
    hashed again. Checks of a copy against a recorded digest read the file (:func:`file_sha256`).
    """
    p = Path(path)
    st = p.stat()
    return _cached(str(p.resolve()), st.st_size, st.st_mtime_ns)
