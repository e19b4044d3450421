"""``lossless``: an exact pass-through codec, for checks (the pipeline with no coding loss)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from vcm_eval.codecs.base import CodecError, FrameSpec, VideoCodec, check_decoded
from vcm_eval.types import CodedPicture, Frame

_MAGIC = b"VCML"


class LosslessCodec(VideoCodec):
    """Stores the samples zlib-compressed; the QP is ignored. Bits are real (what zlib needs)."""

    name = "lossless"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        raw = b"".join(np.ascontiguousarray(p, dtype="<u2").tobytes() for p in frame.planes)
        header = _MAGIC + struct.pack("<HHB3s", frame.height, frame.width, frame.bit_depth,
                                      frame.chroma_format.encode())
        return CodedPicture(header + zlib.compress(raw, self.level), codec=self.identity())

    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        spec = FrameSpec.of(like)
        if not bitstream.startswith(_MAGIC) or len(bitstream) < 12:
            raise CodecError(f"lossless: {label or 'bitstream'} is not a lossless-codec stream")
        height, width, bit_depth, chroma = struct.unpack("<HHB3s", bitstream[4:12])
        try:
            raw = zlib.decompress(bitstream[12:])
        except zlib.error as exc:
            raise CodecError(f"lossless: {label or 'bitstream'} is truncated or corrupt ({exc})") from exc
        chroma_format = chroma.decode()
        shapes = [(height, width)]
        if chroma_format == "420":
            shapes += [((height + 1) // 2, (width + 1) // 2)] * 2
        elif chroma_format == "444":
            shapes += [(height, width)] * 2
        planes, offset = [], 0
        for h, w in shapes:
            n = h * w * 2
            if offset + n > len(raw):
                raise CodecError(f"lossless: {label or 'bitstream'} is truncated")
            planes.append(np.frombuffer(raw, dtype="<u2", count=h * w, offset=offset).reshape(h, w).astype(np.uint16))
            offset += n
        frame = Frame(tuple(planes), bit_depth, chroma_format)
        return check_decoded(frame, spec, codec=self.name, label=label)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level}
