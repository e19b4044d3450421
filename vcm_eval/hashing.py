"""sha256 of a file's bytes: the one content hash for weights, pictures, codec binaries and annotation files."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of the file at ``path``, read in ``chunk``-byte blocks (weights files are
    megabytes, Open Images CSVs gigabytes: never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
