"""Entries on sequences: the coded results of a sequence, and the intra-only fallback for any feature entry.

On a video CTC the unit of coding is a sequence: per feature level, one packed 4:0:0 picture per frame, coded
as one video under the CTC's condition (``AI``, ``LD``, ``RA``; :class:`~vcm_eval.codecs.base.CodingCondition`).
An entry that can code its levels as videos implements ``encode_sequence`` / ``decode_sequence`` (the C-layer
anchor and everything built on it: :mod:`anchors.c_layer`); any other feature entry is coded frame by frame
with its picture method (:func:`encode_frames`), which is intra-only whatever the condition says, and its
result says so (``intra_only``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vcm_eval.columns import LEVEL_BITS, SIDE_INFO_BITS, level_column
from vcm_eval.methods import CodedFeatures, CodedLevels, CodedResult
from vcm_eval.types import SplitMeta


@dataclass
class CodedLevelSequence:
    """One feature level of every frame, coded as one video.

    Attributes:
        level: ``c2``..``c5``.
        bitstream: store key of the video.
        frame_bits: bits of each frame, display order.
        quant: per frame, the quantiser record (side information) of that frame's map.
        geometry: the packing geometry (the same for every frame).
        psnr_db: mean over frames of each frame's PSNR against the map that was coded.
        encode_s, decode_s: codec wall times (encode 0 when the video came from the cache).
        from_cache: no encoder ran.
        command: the encoder command line or options.
        qp: the QP of the level (the rate point plus the entry's offset).
        side_info_bits: side information of the level beyond one quantiser range per frame, all frames.
        samples: per frame, what the sample methods did (``None`` for the anchor's quantiser).
    """

    level: str
    bitstream: str
    frame_bits: list[int]
    quant: list[dict]
    geometry: dict
    psnr_db: float
    encode_s: float
    decode_s: float
    from_cache: bool
    command: list[str] | None = None
    qp: int | None = None
    side_info_bits: int = 0
    samples: list[dict | None] | None = None

    @property
    def num_bits(self) -> int:
        return int(sum(self.frame_bits))


@dataclass
class CodedFeatureSequence(CodedLevels):
    """The coded split-point layers of every frame of a sequence at one rate point.

    ``num_bits`` counts every bit a decoder receives: each level's video and the side information of every frame.
    """

    entry: str
    rate_point: int
    condition: dict
    metas: list[SplitMeta]
    levels: dict[str, CodedLevelSequence]
    side_info_bits: int
    codec: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.metas)

    def to_dict(self) -> dict:
        return {"entry": self.entry, "rate_point": self.rate_point, "condition": self.condition,
                "metas": [asdict(m) for m in self.metas], "levels": {k: asdict(v) for k, v in self.levels.items()},
                "side_info_bits": self.side_info_bits, "codec": self.codec}

    @classmethod
    def from_dict(cls, d: dict) -> CodedFeatureSequence:
        metas = [SplitMeta(**{k: tuple(v) for k, v in m.items()}) for m in d["metas"]]
        levels = {k: CodedLevelSequence(**v) for k, v in d["levels"].items()}
        return cls(d["entry"], int(d["rate_point"]), d["condition"], metas, levels, int(d["side_info_bits"]),
                   d.get("codec", {}))


@dataclass
class CodedFrames(CodedResult):
    """A sequence coded frame by frame with an entry's picture method (intra-only whatever the condition)."""

    entry: str
    rate_point: int
    frames: list[CodedFeatures]
    intra_only: bool = True

    @property
    def num_bits(self) -> int:
        return sum(f.num_bits for f in self.frames)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def encode_s(self) -> float:
        return sum(f.encode_s for f in self.frames)

    @property
    def from_cache(self) -> bool:
        return all(f.from_cache for f in self.frames)

    def bitstream_keys(self) -> list[str]:
        return [k for f in self.frames for k in f.bitstream_keys()]

    def rate_columns(self) -> dict[str, Any]:
        names = sorted(self.frames[0].levels) if self.frames else []
        return {**{level_column(LEVEL_BITS, n): sum(f.levels[n].num_bits for f in self.frames) for n in names},
                SIDE_INFO_BITS: sum(f.side_info_bits for f in self.frames)}

    def to_dict(self) -> dict:
        return {"entry": self.entry, "rate_point": self.rate_point, "frames": [f.to_dict() for f in self.frames],
                "intra_only": self.intra_only}

    @classmethod
    def from_dict(cls, d: dict) -> CodedFrames:
        return cls(d["entry"], int(d["rate_point"]), [CodedFeatures.from_dict(f) for f in d["frames"]],
                   bool(d.get("intra_only", True)))


@dataclass
class CodedVideo(CodedResult):
    """The frames of a sequence coded as one Y'CbCr video (the remote-inference anchor on a video CTC)."""

    entry: str
    rate_point: int
    condition: dict
    bitstream: str
    frame_bits: list[int]
    encode_s: float
    decode_s: float
    convert_s: float
    from_cache: bool
    psnr_y: float
    command: list[str] | None = None

    @property
    def num_bits(self) -> int:
        return int(sum(self.frame_bits))

    @property
    def num_frames(self) -> int:
        return len(self.frame_bits)

    def bitstream_keys(self) -> list[str]:
        return [self.bitstream]

    def quality_columns(self) -> dict[str, Any]:
        return {"psnr_y": self.psnr_y}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CodedVideo:
        return cls(**d)


def frame_label(label: str, index: int) -> str:
    return f"{label} frame {index}"


def coded_frames(entry_name: str, rate_point: int, frames: Sequence[CodedFeatures]) -> CodedFrames:
    """The intra-only result of coding each frame with the entry's picture method."""
    return CodedFrames(entry_name, int(rate_point), list(frames))
