"""The one interface every picture codec implements.

A codec turns a :class:`~vcm_eval.types.Frame` (4:0:0 or 4:2:0, N-bit) and a QP into the bytes of an
elementary bitstream, and turns those bytes back into a frame of the same size. Codecs are plain,
picklable objects (no open handles), so a task can carry one to another process or machine.
"""

from __future__ import annotations

import abc
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vcm_eval.errors import SettingError, UserError
from vcm_eval.types import CodedPicture, Frame

#: coding conditions of a video CTC: All-Intra, Low-Delay (no picture refers to a later one), Random-Access
#: (hierarchical B pictures referring both ways, an intra picture every intra period)
MODES = ("AI", "LD", "RA")


@dataclass(frozen=True)
class CodingCondition:
    """How a sequence is coded: the CTC's condition, its intra period and the sequence's frame rate.

    Attributes:
        mode: ``AI``, ``LD`` or ``RA``.
        intra_period: frames from one intra picture to the next (1 under AI; the FCM CTC: 64 for SFU and
            TVD, 32 for HiEve); ``-1`` codes only the first picture intra.
        frame_rate: frames per second (the rate in kbps is ``bits * frame_rate / frames / 1000``).
    """

    mode: str = "AI"
    intra_period: int = 1
    frame_rate: float = 30.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingError(f"coding condition mode={self.mode!r}: choose one of {list(MODES)}")
        if self.mode == "AI" and self.intra_period != 1:
            object.__setattr__(self, "intra_period", 1)
        if self.intra_period == 0 or self.intra_period < -1:
            raise SettingError(f"coding condition intra_period={self.intra_period}: use a positive number of "
                               "frames, or -1 for only the first picture intra")
        if not self.frame_rate > 0:
            raise SettingError(f"coding condition frame_rate={self.frame_rate}: must be positive")

    def with_frame_rate(self, frame_rate: float) -> CodingCondition:
        return CodingCondition(self.mode, self.intra_period, float(frame_rate))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CodedSequence:
    """The bitstream of a sequence of pictures and the bits of each picture in display order."""

    bitstream: bytes
    frame_bits: list[int]
    codec: dict
    encode_s: float = 0.0
    command: list[str] | None = None


class CodecError(UserError, RuntimeError):
    """A codec failed on one picture; the message names the picture, the QP and the command."""


class CodecUnavailableError(CodecError):
    """The codec cannot run on this machine (missing binary, wrong version); the message says how to fix it."""


class VideoCodec(abc.ABC):
    """Contract: ``decode(encode(frame, qp).bitstream, ...)`` returns a frame of ``frame``'s size,
    chroma format and bit depth. ``identity()`` changes whenever the bitstream for the same input
    could change (binary version, configuration, options), because the bitstream cache is keyed on it.
    """

    #: short name used in configs, results tables and cache keys.
    name: str = "codec"
    #: the QPs the codec accepts (inclusive), checked against every entry's rate points before any work; None: any
    qp_range: tuple[int, int] | None = None

    @abc.abstractmethod
    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        """Code one picture at ``qp``. ``label`` names the picture in error messages and logs."""

    @abc.abstractmethod
    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        """Decode ``bitstream``; ``like`` gives the expected size, chroma format and bit depth."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the bitstream besides the picture and the QP (JSON-able)."""

    def check_available(self) -> None:
        """Raise :class:`CodecUnavailableError` with a fix when the codec cannot run here."""

    def check_qp(self, qp: int, *, label: str = "") -> None:
        """Raise :class:`CodecError` when ``qp`` is outside :attr:`qp_range`: ``encode``'s own guard, reading the
        same range that :func:`vcm_eval.config_checks.check_rate_points` checks before a sweep, so the two agree."""
        if self.qp_range is not None and not self.qp_range[0] <= int(qp) <= self.qp_range[1]:
            raise CodecError(f"{self.name}: QP {qp} of {label or 'picture'} is outside "
                             f"{self.qp_range[0]}..{self.qp_range[1]}")

    def supports(self, chroma_format: str) -> bool:
        return chroma_format in ("400", "420", "444")

    def encode_sequence(self, frames: Sequence[Frame], qp: int, condition: CodingCondition, *,
                        label: str = "") -> CodedSequence:
        """Code ``frames`` as one sequence under ``condition``. Here, for codecs without inter coding: All-Intra
        only, each picture with :meth:`encode`, the pictures' bitstreams concatenated with a 4-byte length before
        each (not counted as rate); codecs with inter coding override this and :meth:`decode_sequence`."""
        if condition.mode != "AI":
            raise CodecError(f"{self.name}: cannot code {label or 'a sequence'} under {condition.mode}: this codec "
                             "codes pictures one at a time (All-Intra only); use codec=x265 for LD/RA")
        start = time.perf_counter()
        coded = [self.encode(f, qp, label=f"{label} frame {i}") for i, f in enumerate(frames)]
        data = b"".join(struct.pack("<I", len(c.bitstream)) + c.bitstream for c in coded)
        return CodedSequence(data, [8 * len(c.bitstream) for c in coded], self.identity(),
                             time.perf_counter() - start, coded[0].command if coded else None)

    def decode_sequence(self, bitstream: bytes, like: Frame | FrameSpec, num_frames: int, *,
                        label: str = "") -> list[Frame]:
        """Decode what :meth:`encode_sequence` made: ``num_frames`` pictures of ``like``'s geometry."""
        frames, offset = [], 0
        while offset < len(bitstream):
            if offset + 4 > len(bitstream):
                break
            (size,) = struct.unpack_from("<I", bitstream, offset)
            offset += 4
            if offset + size > len(bitstream):
                break
            frames.append(self.decode(bitstream[offset:offset + size], like, label=f"{label} frame {len(frames)}"))
            offset += size
        if len(frames) != num_frames or offset != len(bitstream):
            raise CodecError(f"{self.name}: {label or 'sequence'} holds {len(frames)} whole pictures, expected "
                             f"{num_frames}; the bitstream is truncated or corrupt")
        return frames


class FrameSpec:
    """Size, chroma format and bit depth a decoded frame must have."""

    __slots__ = ("height", "width", "bit_depth", "chroma_format")

    def __init__(self, height: int, width: int, bit_depth: int = 10, chroma_format: str = "400") -> None:
        self.height, self.width = int(height), int(width)
        self.bit_depth, self.chroma_format = int(bit_depth), chroma_format

    @classmethod
    def of(cls, frame: Frame | FrameSpec) -> FrameSpec:
        if isinstance(frame, FrameSpec):
            return frame
        return cls(frame.height, frame.width, frame.bit_depth, frame.chroma_format)

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "bit_depth": self.bit_depth,
                "chroma_format": self.chroma_format}

    def __repr__(self) -> str:
        return f"{self.width}x{self.height} {self.chroma_format} {self.bit_depth}-bit"


def check_decoded(frame: Frame, expected: FrameSpec, *, codec: str, label: str) -> Frame:
    """Raise :class:`CodecError` when a decoded frame does not have the expected geometry."""
    got = FrameSpec.of(frame)
    if (got.height, got.width, got.chroma_format) != (expected.height, expected.width, expected.chroma_format):
        raise CodecError(
            f"{codec}: decoded picture {label or ''} is {got!r}, expected {expected!r}; "
            "the bitstream is truncated or belongs to another picture"
        )
    return frame
