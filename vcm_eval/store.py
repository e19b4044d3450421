"""A content-addressed store for everything a sweep computes: C-layers, bitstreams, coded-feature
records, detections.

Every object is named by the sha256 of what determines it (:func:`content_key`), so the same work
is never done twice — not by a re-run, not by another entry that codes the same picture, not by
another executor or machine that sees the same store. Objects are immutable once written.

Writes are atomic: on a filesystem the bytes go to a temporary file in the target folder, then
``os.replace`` moves it into place, so two workers racing on one object leave one valid file and a
killed worker leaves none. Other fsspec URLs (``s3://``, ``gs://``, ...) write whole objects, which
object stores publish atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings (and keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key")


def content_key(*parts: Any) -> str:
    """sha256 hex of the parts: bytes are hashed as they are, anything else as canonical JSON."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, (bytes, bytearray, memoryview)) else canonical_json(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


#: name prefix of a write in progress (renamed onto its key when complete); never read as a result
TEMP_PREFIX = ".tmp-"


class StoreError(RuntimeError):
    """An object in the store is missing or damaged; the message names the file."""


class Store:
    """Content-addressed objects under ``root`` (a folder or an fsspec URL).

    Layout: ``<root>/<kind>/<key[:2]>/<key><suffix>``. Kinds used by vcm_eval: ``clayers`` (.npz),
    ``bitstreams`` (.bin + .json record), ``coded`` (.json), ``detections`` (.json). Objects are never
    changed once written; the sweep may :meth:`delete` intermediate ones (C-layers, see
    ``store.keep_features``) that every task reading them has finished with.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = str(root)
        self.url = root
        if "://" in root and not root.startswith("file://"):
            import fsspec  # only remote stores need it

            self._fs, self._root = fsspec.core.url_to_fs(root)
            self._local = False
        else:
            self._fs = None
            self._root = str(Path(root.removeprefix("file://")).expanduser().resolve())
            self._local = True

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __getstate__(self) -> dict:
        return {"url": self.url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"])

    def path(self, kind: str, key: str, suffix: str) -> str:
        return f"{self._root}/{kind}/{key[:2]}/{key}{suffix}"

    def exists(self, kind: str, key: str, suffix: str) -> bool:
        p = self.path(kind, key, suffix)
        return os.path.exists(p) if self._local else self._fs.exists(p)

    def write_bytes(self, kind: str, key: str, suffix: str, data: bytes) -> str:
        p = self.path(kind, key, suffix)
        if not self._local:
            self._fs.pipe_file(p, data)
            return p
        folder = os.path.dirname(p)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return p

    def delete(self, kind: str, key: str, suffix: str) -> bool:
        """Remove one object; True if it was there. Removing a missing object is not an error, so a
        driver that was killed between finishing a picture and deleting its C-layers can try again."""
        p = self.path(kind, key, suffix)
        if self._local:
            try:
                os.unlink(p)
            except FileNotFoundError:
                return False
            return True
        if not self._fs.exists(p):
            return False
        self._fs.rm_file(p)
        return True

    def disk_usage(self, kinds: Iterable[str] | None = None) -> dict[str, int]:
        """Bytes held per kind (top-level folder; only ``kinds`` when given), temporary files of unfinished
        writes included. Safe while a sweep runs: a file deleted during the walk (``until_done``) counts 0."""
        usage: dict[str, int] = {}
        if not self._local:
            if self._fs.exists(self._root):
                for folder in self._fs.ls(self._root, detail=False):
                    kind = folder.rstrip("/").rsplit("/", 1)[-1]
                    if (kinds is None or kind in kinds) and self._fs.isdir(folder):
                        usage[kind] = int(self._fs.du(folder))
            return usage
        if not os.path.isdir(self._root):
            return usage
        for kind in sorted(os.listdir(self._root)) if kinds is None else kinds:
            folder = os.path.join(self._root, kind)
            if os.path.isdir(folder):
                usage[kind] = sum(_size_or_zero(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
        return usage

    def remove_stale_temporaries(self, older_than_s: float) -> tuple[int, int]:
        """Delete the temporary files of writes that never finished, unchanged for ``older_than_s`` seconds or
        more; returns (files, bytes) removed.

        A writer killed between creating its temporary file and renaming it onto the key (a worker killed
        mid-write) leaves the file behind; it is never read, only takes disk. A write takes seconds, so a
        temporary an hour old belongs to a dead writer, never to another run writing into the same store. Lists
        each ``<kind>/<key[:2]>`` folder once and stats only the temporaries; a file it may not remove (another
        user's, in a shared store) is left. Remote (fsspec) stores write whole objects without temporaries:
        nothing to do there.
        """
        if not self._local or not os.path.isdir(self._root):
            return 0, 0
        now = time.time()
        files = size = 0
        for kind in os.scandir(self._root):
            if not kind.is_dir():
                continue
            for shard in os.scandir(kind.path):
                if not shard.is_dir():
                    continue
                for entry in os.scandir(shard.path):
                    if not entry.name.startswith(TEMP_PREFIX):
                        continue
                    try:
                        stat = entry.stat()
                        if now - stat.st_mtime < older_than_s:
                            continue
                        os.unlink(entry.path)
                    except OSError:  # renamed by its writer, removed by another cleaner, or not ours to remove
                        continue
                    files += 1
                    size += stat.st_size
        return files, size

    def read_bytes(self, kind: str, key: str, suffix: str) -> bytes:
        p = self.path(kind, key, suffix)
        try:
            if self._local:
                with open(p, "rb") as f:
                    return f.read()
            return self._fs.cat_file(p)
        except FileNotFoundError:
            raise StoreError(f"{p}: not in the store (it was deleted, or the store root changed)") from None

    def write_json(self, kind: str, key: str, obj: Any) -> str:
        return self.write_bytes(kind, key, ".json", json.dumps(obj, indent=1, default=_json_default).encode())

    def read_json(self, kind: str, key: str) -> Any:
        data = self.read_bytes(kind, key, ".json")
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            p = self.path(kind, key, ".json")
            raise StoreError(f"{p}: damaged JSON ({exc}); delete the file and run again to recompute it") from exc

    def write_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> str:
        """Arrays as an uncompressed ``.npz``: lossless compressors gain at most ~20 % on float32 feature
        maps, and the cheap ones would cost a dependency and an own format (docs/scale.md)."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self.write_bytes(kind, key, ".npz", buf.getvalue())

    def read_arrays(self, kind: str, key: str) -> dict[str, np.ndarray]:
        data = self.read_bytes(kind, key, ".npz")
        try:
            with np.load(io.BytesIO(data)) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as exc:  # noqa: BLE001 - zip/pickle errors all mean "damaged"
            p = self.path(kind, key, ".npz")
            raise StoreError(f"{p}: damaged array file ({exc}); delete it and run again to recompute it") from exc
