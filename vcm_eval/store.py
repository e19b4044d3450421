"""A content-addressed store for everything a sweep computes: C-layers, bitstreams, coded-feature
records, detections.

Every object is named by the sha256 of what determines it (:func:`content_key`), so the same work
is never done twice — not by a re-run, not by another entry that codes the same picture, not by
another executor or machine that sees the same store. Objects are immutable once written.

Writes are atomic: on a filesystem the bytes go to a temporary file in the target folder, then a
hard link (``os.link``, or ``os.replace`` where links are not supported) publishes it under its name, so
two workers racing on one object leave one valid file (the first one written) and a killed worker leaves
none. Other fsspec URLs (``s3://``, ``gs://``, ...) write whole objects, which object stores publish atomically.

Every object carries a checksum that is verified when it is read: JSON records are written as a header
line (format, sha256 and size of the body, and the objects the record refers to, each with its own
sha256) followed by the body; bitstreams are checked against the sha256 in their record, arrays
(``.npz``) by the CRC-32 of their zip members. A record that fails its check, or refers to an object
that is gone or changed, is *unusable*: :meth:`Store.check` says why, and the store moves it aside into
``<root>/damaged/`` (:meth:`Store.set_aside`) so that the task that makes it runs again. See
docs/guarantees.md for what this promises.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.errors import UserError


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

#: first field of a JSON record's header line; a record without it is not one this version can verify
RECORD_FORMAT = "vcm_eval.record/1"

#: folder under the store root where unusable objects are moved (never read as results)
DAMAGED = "damaged"

#: a reference from a record to another stored object: ``(kind, key, suffix, sha256 of its content or None)``
Ref = tuple[str, str, str, "str | None"]


class StoreError(UserError, RuntimeError):
    """An object in the store is missing, damaged or cannot be written; the message names the file."""


class UnusableObjectError(StoreError):
    """A stored object that a task or the driver needs is missing or fails its checksum.

    Recoverable: the object was moved aside (or was already gone), so planning the sweep again makes the
    task that writes it unfinished, and running it recomputes the object. ``path`` names the file.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self):  # keep ``path`` when a worker process sends the error back
        return type(self), (str(self), self.path)


def sha256_hex(data: bytes) -> str:
    """sha256 of ``data`` as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


def encode_record(obj: Any, refs: Sequence[Ref] = ()) -> bytes:
    """A JSON record as the store keeps it: one header line, then the body.

    The header is ``{"format", "sha256", "bytes", "refs"}``: sha256 and size of the body's bytes, and the
    objects the record refers to (``refs``), which must still be there, with the same content, for the
    record to be usable.
    """
    body = json.dumps(obj, default=_json_default, separators=(",", ":")).encode()
    header = {"format": RECORD_FORMAT, "sha256": sha256_hex(body), "bytes": len(body),
              "refs": [list(ref) for ref in refs]}
    return canonical_json(header).encode() + b"\n" + body + b"\n"


def decode_record(data: bytes) -> tuple[dict, bytes]:
    """The header and body bytes of a stored record, after checking the body against the header.

    Raises:
        ValueError: what is wrong (no header, not this format, size or sha256 differ), for the caller to name
            the file.
    """
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise ValueError("no checksum header (damaged, or written by an older vcm_eval)")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its checksum header is unreadable (damaged, or written by an older vcm_eval)") from None
    if not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
        raise ValueError("no checksum header (damaged, or written by an older vcm_eval)")
    body = rest[:-1] if rest.endswith(b"\n") else rest
    if len(body) != header.get("bytes") or sha256_hex(body) != header.get("sha256"):
        raise ValueError(f"checksum mismatch: its {len(body)} bytes are not the {header.get('bytes')} bytes of the "
                         "sha256 it was written with (damaged)")
    return header, body


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
        """Store ``data`` under its name, atomically; an object already there is kept (objects are immutable:
        two writers of one key computed the same thing, and readers may hold the first).

        Raises:
            StoreError: the file cannot be written (full disk, read-only store, no permission), naming it.
        """
        p = self.path(kind, key, suffix)
        try:
            if not self._local:
                self._fs.pipe_file(p, data)
                return p
            folder = os.path.dirname(p)
            os.makedirs(folder, exist_ok=True)
            tmp = _write_temporary(folder, suffix, data)
            try:
                _publish(tmp, p)
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise StoreError(f"{p}: cannot write into the store ({exc.strerror or exc}); "
                             f"{_write_fix(exc)}") from exc
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
            raise UnusableObjectError(f"{p}: not in the store (it was deleted, or the store root changed); "
                                      "run again to recompute it", p) from None

    def write_json(self, kind: str, key: str, obj: Any, refs: Sequence[Ref] = ()) -> str:
        """Store a JSON record with its checksum header (:func:`encode_record`); ``refs`` are the objects it
        refers to (each with the sha256 it had), which :meth:`check` requires to be there unchanged."""
        return self.write_bytes(kind, key, ".json", encode_record(obj, refs))

    def put_record(self, kind: str, key: str, obj: Any, refs: Sequence[Ref] = ()) -> Ref:
        """:meth:`write_json`, returning the reference a record that refers to this one stores: the sha256 of
        the record now under that name (another writer's, when one was first)."""
        data = encode_record(obj, refs)
        self.write_bytes(kind, key, ".json", data)
        if self.read_bytes(kind, key, ".json") != data:
            return (kind, key, ".json", self.read_record(kind, key)[1])
        return (kind, key, ".json", decode_record(data)[0]["sha256"])

    def read_json(self, kind: str, key: str) -> Any:
        """A stored record, verified against its checksum.

        Raises:
            UnusableObjectError: missing, or damaged (then moved aside, so a re-plan recomputes it), naming it.
        """
        return self.read_record(kind, key)[0]

    def read_record(self, kind: str, key: str) -> tuple[Any, str]:
        """A stored record and the sha256 of its body (what a record referring to it records, :data:`Ref`)."""
        data = self.read_bytes(kind, key, ".json")
        try:
            header, body = decode_record(data)
            return json.loads(body.decode("utf-8")), header["sha256"]
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise self.unusable((kind, key, ".json"), str(exc)) from None

    def check(self, kind: str, key: str, suffix: str, sha256: str | None = None,
              _checked: dict | None = None) -> str | None:
        """Why a stored object cannot be used as it is, or None when it can.

        JSON records must pass their checksum, and every object they refer to must pass this check too (with
        the sha256 the record holds for it); other objects must exist, and match ``sha256`` when it is given
        (C-layer arrays are checked by their CRC when read: reading gigabytes to plan a sweep would cost more
        than recomputing the rare damaged one). ``_checked`` memoises results within one planning pass.
        """
        memo = _checked if _checked is not None else {}
        ident = (kind, key, suffix, sha256)
        if ident in memo:
            return memo[ident]
        p = self.path(kind, key, suffix)
        problem: str | None = None
        if suffix != ".json" and sha256 is None:
            problem = None if self.exists(kind, key, suffix) else f"{p}: missing"
        else:
            try:
                data = self.read_bytes(kind, key, suffix)
            except UnusableObjectError:
                problem = f"{p}: missing"
            else:
                problem = self._check_content(p, suffix, data, sha256, memo)
        memo[ident] = problem
        return problem

    def _check_content(self, p: str, suffix: str, data: bytes, sha256: str | None, memo: dict) -> str | None:
        if suffix != ".json":
            return None if sha256_hex(data) == sha256 else f"{p}: content differs from the sha256 its record holds"
        try:
            header, _ = decode_record(data)
        except ValueError as exc:
            return f"{p}: {exc}"
        if sha256 is not None and header["sha256"] != sha256:
            return f"{p}: not the record the referring one was made from (it was recomputed or replaced)"
        for ref in header.get("refs", []):
            problem = self.check(*ref, _checked=memo) if len(ref) == 4 else f"{p}: malformed reference {ref}"
            if problem:
                return f"{p}: refers to {problem}"
        return None

    def unusable(self, obj: tuple[str, str, str], why: str) -> UnusableObjectError:
        """Set a damaged object aside and return the error to raise (naming the file and what happened)."""
        p = self.path(*obj)
        where = self.set_aside(*obj)
        if where is None:
            return UnusableObjectError(f"{p}: {why}; run again to recompute it", p)
        if where.startswith("!"):
            return UnusableObjectError(f"{p}: {why}; it could not be moved aside ({where[1:]}): delete the file and "
                                       "run again to recompute it", p)
        return UnusableObjectError(f"{p}: {why}; moved to {where}, run again to recompute it", p)

    def set_aside(self, kind: str, key: str, suffix: str) -> str | None:
        """Move an unusable object out of the way, into ``<root>/damaged/<kind>/`` (kept for inspection), so
        that it reads as missing and its task runs again. Returns where it went, None if it was already gone,
        or ``"!<reason>"`` when it could not be moved (a read-only store)."""
        p = self.path(kind, key, suffix)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = f"{self._root}/{DAMAGED}/{kind}/{key}{suffix}.{stamp}-{os.getpid()}"
        try:
            if not self._local:
                if not self._fs.exists(p):
                    return None
                self._fs.mv(p, target)
                return target
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(p, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"!{exc.strerror or exc}"
        return target

    def write_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> str:
        """Arrays as an uncompressed ``.npz``: lossless compressors gain at most ~20 % on float32 feature
        maps, and the cheap ones would cost a dependency and an own format (docs/scale.md)."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self.write_bytes(kind, key, ".npz", buf.getvalue())

    def read_arrays(self, kind: str, key: str) -> dict[str, np.ndarray]:
        """Stored arrays, checked by their zip members' CRC-32 (``np.load`` reads each member to its end).

        Raises:
            UnusableObjectError: missing, or damaged (then moved aside, so a re-plan recomputes it), naming it.
        """
        data = self.read_bytes(kind, key, ".npz")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # all mean "damaged"
            raise self.unusable((kind, key, ".npz"), f"damaged array file ({exc})") from None


def _write_temporary(folder: str, suffix: str, data: bytes) -> str:
    """``data`` in a new temporary file of ``folder``, on disk (fsync) before it gets its name; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _publish(tmp: str, path: str) -> None:
    """Give the complete file ``tmp`` its name ``path``, keeping an object already there (first writer wins).

    ``os.link`` fails if the name exists, which is what keeps stored objects immutable; file systems
    without hard links (some FUSE and object-store mounts) get ``os.replace``, still atomic.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        os.replace(tmp, path)


def _write_fix(exc: OSError) -> str:
    """What to do about a failed store write."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full: free space (or set paths.store elsewhere) and run the same command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the store is not writable: point paths.store at a folder you may write, or fix its permissions"
    return "check the store folder (paths.store) and run the same command again"
