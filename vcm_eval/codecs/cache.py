"""Content-addressed bitstream cache in front of any :class:`VideoCodec`.

The key of a coded picture is ``sha256(codec identity, QP, frame geometry, sample bytes)``, so
identical encodes are done once: the anchor and the compensation proposal share the coarsest
level (which both code unchanged), and a re-run, on any executor, reuses every finished picture.
Each bitstream is stored with a JSON record (size, sha256, command, encoder time); reading back
checks size and hash, so a truncated or damaged file is set aside and made again rather than decoded
into garbage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vcm_eval.codecs.base import CodedSequence, CodingCondition, FrameSpec, VideoCodec
from vcm_eval.store import Ref, Store, UnusableObjectError, content_key, sha256_hex
from vcm_eval.types import CodedPicture, Frame

KIND = "bitstreams"

log = logging.getLogger(__name__)


@dataclass
class StoredPicture:
    """A coded picture in the store: its key, size, and how it was made."""

    key: str
    num_bytes: int
    encode_s: float
    from_cache: bool
    command: list[str] | None
    codec: dict

    @property
    def num_bits(self) -> int:
        return 8 * self.num_bytes


@dataclass
class StoredSequence(StoredPicture):
    """A coded sequence in the store: as :class:`StoredPicture`, plus the bits of each picture (display order)."""

    frame_bits: list[int] = field(default_factory=list)


def sequence_key(codec_identity: dict, qp: int, condition: CodingCondition, frames: Sequence[Frame]) -> str:
    """Cache key of coding ``frames`` as one sequence at ``qp`` under ``condition``."""
    return content_key(codec_identity, int(qp), condition.to_dict(), [frame_key(codec_identity, qp, f) for f in frames])


def frame_key(codec_identity: dict, qp: int, frame: Frame) -> str:
    """Cache key of coding ``frame`` at ``qp`` with the codec of that identity."""
    geometry = {"chroma": frame.chroma_format, "bit_depth": frame.bit_depth,
                "shapes": [list(p.shape) for p in frame.planes]}
    return content_key(codec_identity, int(qp), geometry,
                       *(np.ascontiguousarray(p, dtype="<u2").tobytes() for p in frame.planes))


class CachedCodec:
    """A codec plus the store its bitstreams live in; what entries code pictures with.

    Every bitstream this object encodes or finds in the store is remembered in :attr:`refs` (its record's
    store reference), so the task that coded with it can record what its result depends on: a coded
    record whose bitstreams are gone or changed is then recomputed instead of read (:meth:`Store.check`).

    Args:
        codec: the picture codec.
        store: where bitstreams are kept.
    """

    def __init__(self, codec: VideoCodec, store: Store) -> None:
        self.codec = codec
        self.store = store
        self._identity: dict | None = None
        self.refs: list[Ref] = []

    @property
    def name(self) -> str:
        return self.codec.name

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = self.codec.identity()
        return self._identity

    def stored_record(self, key: str) -> dict | None:
        """The record of bitstream ``key`` when it and its bytes are in the store and intact, else None (a
        damaged pair is moved aside, so that it is made again); remembered in :attr:`refs`."""
        if not self.store.exists(KIND, key, ".json"):
            return None
        try:
            record, sha = self.store.read_record(KIND, key)
            data = self.store.read_bytes(KIND, key, ".bin")
        except UnusableObjectError as exc:  # the record was damaged (and set aside), or its bytes are gone
            self.store.set_aside(KIND, key, ".bin")
            log.warning("bitstream cache: %s; coding the picture again", exc)
            return None
        if len(data) != record.get("num_bytes") or sha256_hex(data) != record.get("sha256"):
            for suffix in (".json", ".bin"):
                self.store.set_aside(KIND, key, suffix)
            log.warning("bitstream cache: %s does not match its record (damaged); set aside, coding the picture "
                        "again", self.store.path(KIND, key, ".bin"))
            return None
        self.refs.append((KIND, key, ".json", sha))
        return record

    def store_bitstream(self, key: str, data: bytes, record: dict) -> dict:
        """Keep ``data`` under ``key`` with its record (``num_bytes`` and ``sha256`` are added), bitstream first,
        so that a record only ever points at a complete file; returns the stored record.

        For entries that make their own bitstreams (a learned codec); :meth:`encode` uses it for the codec's.
        Where another writer was first, its (equal) bitstream and record are the ones kept and returned.
        """
        if self.store.exists(KIND, key, ".bin") and not self.store.exists(KIND, key, ".json"):
            # Another writer between its bitstream and its record (two workers coding a picture two entries
            # share), or an orphan whose record was lost. The same bytes are the same bitstream: keep them, or
            # the other writer's record would point at nothing; other bytes are not ours to trust.
            try:
                same = self.store.read_bytes(KIND, key, ".bin") == data
            except (OSError, UnusableObjectError):
                same = False
            if not same:
                self.store.set_aside(KIND, key, ".bin")
        self.store.write_bytes(KIND, key, ".bin", data)
        stored = self.store.read_bytes(KIND, key, ".bin")  # what is under the name now, ours or the first writer's
        record = {**record, "num_bytes": len(stored), "sha256": sha256_hex(stored)}
        ref = self.store.put_record(KIND, key, record)
        self.refs.append(ref)
        return record

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> StoredPicture:
        """Code ``frame`` at ``qp`` unless the store already holds that bitstream."""
        key = frame_key(self.identity(), qp, frame)
        record = self.stored_record(key)
        if record is not None:
            return StoredPicture(key, record["num_bytes"], record["encode_s"], True, record.get("command"),
                                 record.get("codec", {}))
        coded: CodedPicture = self.codec.encode(frame, qp, label=label)
        record = self.store_bitstream(key, coded.bitstream, {
            "qp": int(qp),
            "frame": FrameSpec.of(frame).to_dict(),
            "codec": coded.codec or self.identity(),
            "command": coded.command,
            "encode_s": coded.encode_s,
            "label": label,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        return StoredPicture(key, record["num_bytes"], coded.encode_s, False, coded.command, record["codec"])

    def encode_sequence(self, frames: Sequence[Frame], qp: int, condition: CodingCondition, *,
                        label: str = "") -> StoredSequence:
        """Code ``frames`` as one sequence at ``qp`` under ``condition`` unless the store holds that bitstream."""
        key = sequence_key(self.identity(), qp, condition, frames)
        record = self.stored_record(key)
        if record is not None and len(record.get("frame_bits", ())) == len(frames):
            return StoredSequence(key, record["num_bytes"], record["encode_s"], True, record.get("command"),
                                  record.get("codec", {}), list(record["frame_bits"]))
        coded: CodedSequence = self.codec.encode_sequence(frames, qp, condition, label=label)
        record = self.store_bitstream(key, coded.bitstream, {
            "qp": int(qp),
            "condition": condition.to_dict(),
            "frame": FrameSpec.of(frames[0]).to_dict(),
            "num_frames": len(frames),
            "frame_bits": [int(b) for b in coded.frame_bits],
            "codec": coded.codec or self.identity(),
            "command": coded.command,
            "encode_s": coded.encode_s,
            "label": label,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        return StoredSequence(key, record["num_bytes"], coded.encode_s, False, coded.command, record["codec"],
                              list(record["frame_bits"]))

    def decode_sequence(self, key: str, like: Frame | FrameSpec, num_frames: int, *,
                        label: str = "") -> tuple[list[Frame], float]:
        """Decode the stored sequence ``key`` (``num_frames`` pictures); returns them and the decode wall time."""
        data = self.read_bitstream(key)
        start = time.perf_counter()
        frames = self.codec.decode_sequence(data, like, num_frames, label=label)
        return frames, time.perf_counter() - start

    def read_bitstream(self, key: str) -> bytes:
        """The bitstream of ``key``, checked against its record (size and sha256).

        Raises:
            UnusableObjectError: the bitstream or its record is missing or damaged (a damaged pair is moved
                aside, so planning the sweep again makes it anew), naming the file.
        """
        record = self.store.read_json(KIND, key)
        data = self.store.read_bytes(KIND, key, ".bin")
        if len(data) != record["num_bytes"] or sha256_hex(data) != record["sha256"]:
            path = self.store.path(KIND, key, ".bin")
            self.store.set_aside(KIND, key, ".json")
            where = self.store.set_aside(KIND, key, ".bin")
            raise UnusableObjectError(
                f"{path}: bitstream has {len(data)} bytes but was written with {record['num_bytes']} bytes of "
                f"another sha256 (truncated or damaged); {'moved to ' + where + ', ' if where else ''}"
                "run again to re-encode it", path)
        return data

    def decode(self, key: str, like: Frame | FrameSpec, *, label: str = "") -> tuple[Frame, float]:
        """Decode the stored bitstream ``key``; returns the frame and the decode wall time in seconds."""
        data = self.read_bitstream(key)
        start = time.perf_counter()
        frame = self.codec.decode(data, like, label=label)
        return frame, time.perf_counter() - start


def bitstream_provenance(store: Store, key: str) -> dict:
    """How the stored bitstream ``key`` was made: codec identity, command line, label and QP (what a run
    reports of each entry's coding)."""
    record = store.read_json(KIND, key)
    return {"codec": record.get("codec"), "command": record.get("command"), "label": record.get("label"),
            "qp": record.get("qp")}
