"""Content-addressed bitstream cache in front of any :class:`VideoCodec`.

The key of a coded picture is ``sha256(codec identity, QP, frame geometry, sample bytes)``, so
identical encodes are done once: the anchor and the compensation proposal share the coarsest
level (which both code unchanged), and a re-run, on any executor, reuses every finished picture.
Each bitstream is stored with a JSON record (size, sha256, command, encoder time); reading back
checks size and hash, so a truncated or damaged file is reported rather than decoded into garbage.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from vcm_eval.codecs.base import CodecError, FrameSpec, VideoCodec
from vcm_eval.store import Store, content_key
from vcm_eval.types import CodedPicture, Frame

KIND = "bitstreams"


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


def frame_key(codec_identity: dict, qp: int, frame: Frame) -> str:
    """Cache key of coding ``frame`` at ``qp`` with the codec of that identity."""
    geometry = {"chroma": frame.chroma_format, "bit_depth": frame.bit_depth,
                "shapes": [list(p.shape) for p in frame.planes]}
    return content_key(codec_identity, int(qp), geometry,
                       *(np.ascontiguousarray(p, dtype="<u2").tobytes() for p in frame.planes))


class CachedCodec:
    """A codec plus the store its bitstreams live in; what entries code pictures with.

    Args:
        codec: the picture codec.
        store: where bitstreams are kept.
    """

    def __init__(self, codec: VideoCodec, store: Store) -> None:
        self.codec = codec
        self.store = store
        self._identity: dict | None = None

    @property
    def name(self) -> str:
        return self.codec.name

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = self.codec.identity()
        return self._identity

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> StoredPicture:
        """Code ``frame`` at ``qp`` unless the store already holds that bitstream."""
        key = frame_key(self.identity(), qp, frame)
        if self.store.exists(KIND, key, ".json") and self.store.exists(KIND, key, ".bin"):
            record = self.store.read_json(KIND, key)
            return StoredPicture(key, record["num_bytes"], record["encode_s"], True, record.get("command"),
                                 record.get("codec", {}))
        coded: CodedPicture = self.codec.encode(frame, qp, label=label)
        # The bitstream goes first: a record only ever points at a complete file.
        self.store.write_bytes(KIND, key, ".bin", coded.bitstream)
        record = {
            "num_bytes": len(coded.bitstream),
            "sha256": hashlib.sha256(coded.bitstream).hexdigest(),
            "qp": int(qp),
            "frame": FrameSpec.of(frame).to_dict(),
            "codec": coded.codec or self.identity(),
            "command": coded.command,
            "encode_s": coded.encode_s,
            "label": label,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.store.write_json(KIND, key, record)
        return StoredPicture(key, len(coded.bitstream), coded.encode_s, False, coded.command, record["codec"])

    def read_bitstream(self, key: str) -> bytes:
        """The bitstream of ``key``, checked against its record (size and sha256)."""
        record = self.store.read_json(KIND, key)
        data = self.store.read_bytes(KIND, key, ".bin")
        if len(data) != record["num_bytes"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise CodecError(
                f"{self.store.path(KIND, key, '.bin')}: bitstream has {len(data)} bytes but was written with "
                f"{record['num_bytes']} (truncated or damaged); delete it and its .json to re-encode")
        return data

    def decode(self, key: str, like: Frame | FrameSpec, *, label: str = "") -> tuple[Frame, float]:
        """Decode the stored bitstream ``key``; returns the frame and the decode wall time in seconds."""
        data = self.read_bitstream(key)
        start = time.perf_counter()
        frame = self.codec.decode(data, like, label=label)
        return frame, time.perf_counter() - start
