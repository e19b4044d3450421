"""The one interface every picture codec implements.

A codec turns a :class:`~vcm_eval.types.Frame` (4:0:0 or 4:2:0, N-bit) and a QP into the bytes of an
elementary bitstream, and turns those bytes back into a frame of the same size. Codecs are plain,
picklable objects (no open handles), so a task can carry one to another process or machine.
"""

from __future__ import annotations

import abc
from typing import Any

from vcm_eval.errors import UserError
from vcm_eval.types import CodedPicture, Frame


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
