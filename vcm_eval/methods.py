"""The base classes of every anchor and proposal ("entries"), and the record of coded features.

An entry codes the split-point features of one image at one rate point with the picture codec the
CTC selects. It owns the *method* (what is coded, in which order, with which side information); the
framework owns everything else (caching, scheduling, detection, scoring, reporting). Adding a
proposal is a module in ``proposals/`` plus a file in ``conf/proposal/``; nothing in ``vcm_eval/``
changes.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.columns import LEVEL_BITS, LEVEL_PSNR, LEVEL_QP, SIDE_INFO_BITS, level_column
from vcm_eval.errors import SettingError
from vcm_eval.types import SplitFeatures, SplitMeta


@dataclass
class CodedLevel:
    """One coded feature level: where its bitstream is and what the decoder needs to invert it.

    Attributes:
        level: ``c2``..``c5`` (or ``p2``..``p5`` for P-layer entries).
        bitstream: store key of the bitstream (see :class:`~vcm_eval.codecs.cache.CachedCodec`).
        num_bytes: bitstream size.
        quant: :class:`~vcm_eval.features.quantize.QuantParams` as a dict (side information).
        geometry: :class:`~vcm_eval.features.packing.PackingGeometry` as a dict (derivable by the decoder).
        psnr_db: PSNR of the decoded map against the map that was coded, peak = max - min of that map.
        encode_s, decode_s: wall time of the codec calls (encode 0 when the bitstream came from the cache).
        from_cache: no encoder ran for this level in this task.
        command: the encoder command line or options, as recorded with the bitstream.
        qp: the QP this level was coded at (the rate point plus the entry's offset for the level);
            ``None`` where an entry leaves it out, read as the rate point.
        samples: what the sample methods of :mod:`vcm_eval.features.chain` did to the level (downsampling
            factor, transform and number of components, z-score statistics, clipped fraction); ``None`` for
            the anchor's chain. The decoder inverts them from this record alone.
        side_info_bits: side information of this level beyond its one quantiser range (counted in the
            image's ``side_info_bits``).
    """

    level: str
    bitstream: str
    num_bytes: int
    quant: dict
    geometry: dict
    psnr_db: float
    encode_s: float
    decode_s: float
    from_cache: bool
    command: list[str] | None = None
    qp: int | None = None
    samples: dict | None = None
    side_info_bits: int = 0

    @property
    def num_bits(self) -> int:
        return 8 * self.num_bytes

class CodedResult(abc.ABC):
    """What an entry's coding of one picture at one rate point yields, and all the pipeline reads of it.

    Feature entries return :class:`CodedFeatures`, image entries :class:`CodedImage`; a new kind of entry
    returns its own subclass. The pipeline stores it (``to_dict``), finds what it was made from
    (:meth:`bitstream_keys`) and puts :meth:`rate_columns` and :meth:`quality_columns` into the result rows,
    without knowing which kind it holds.
    """

    #: the entry's name and the rate point it coded at
    entry: str
    rate_point: int
    #: every bit a decoder receives (a field or a property)
    num_bits: int
    #: encoder wall time, 0 for what came from the bitstream cache
    encode_s: float
    #: no encoder ran: another entry or run had coded the same pictures
    from_cache: bool

    @abc.abstractmethod
    def bitstream_keys(self) -> list[str]:
        """Store keys of the bitstreams, the first one the entry's most telling (its command is reported)."""

    def rate_columns(self) -> dict[str, Any]:
        """Result columns after ``num_bits`` and ``bpp``: how the bits split (per level, side information)."""
        return {}

    def quality_columns(self) -> dict[str, Any]:
        """Result columns after the stage times: the codec's own distortion figures."""
        return {}

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """A JSON-able record that :meth:`from_dict` reads back."""


class CodedLevels(CodedResult):
    """A coded result made of per-level bitstreams (``levels``: name -> a record with ``num_bits``, ``encode_s``,
    ``from_cache``, ``bitstream``, ``qp``, ``psnr_db``) plus ``side_info_bits``: one picture's
    (:class:`CodedFeatures`) or a whole sequence's (:class:`~vcm_eval.sequence_methods.CodedFeatureSequence`)."""

    levels: dict[str, Any]
    side_info_bits: int

    @property
    def num_bits(self) -> int:
        return sum(level.num_bits for level in self.levels.values()) + self.side_info_bits

    @property
    def encode_s(self) -> float:
        return sum(level.encode_s for level in self.levels.values())

    @property
    def from_cache(self) -> bool:
        return all(level.from_cache for level in self.levels.values())

    def level_bits(self) -> dict[str, int]:
        return {name: level.num_bits for name, level in self.levels.items()}

    def bitstream_keys(self) -> list[str]:
        return [level.bitstream for level in self.levels.values()]

    def rate_columns(self) -> dict[str, Any]:
        """``bits_<level>``, ``qp_<level>`` (the rate point plus the entry's offset), ``side_info_bits``,
        ``psnr_<level>``."""
        levels = sorted(self.levels.items())
        return {**{level_column(LEVEL_BITS, name): level.num_bits for name, level in levels},
                **{level_column(LEVEL_QP, name): self.rate_point if level.qp is None else level.qp
                   for name, level in levels},
                SIDE_INFO_BITS: self.side_info_bits,
                **{level_column(LEVEL_PSNR, name): level.psnr_db for name, level in levels}}


@dataclass
class CodedFeatures(CodedLevels):
    """The coded split-point layers of one image at one rate point: the bitstreams plus side information.

    ``num_bits`` counts every bit a decoder receives: the bitstreams and ``side_info_bits``.
    """

    entry: str
    rate_point: int
    meta: SplitMeta
    levels: dict[str, CodedLevel]
    side_info_bits: int
    codec: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "entry": self.entry,
            "rate_point": self.rate_point,
            "meta": asdict(self.meta),
            "levels": {k: asdict(v) for k, v in self.levels.items()},
            "side_info_bits": self.side_info_bits,
            "codec": self.codec,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CodedFeatures:
        meta = SplitMeta(**{k: tuple(v) for k, v in d["meta"].items()})
        levels = {k: CodedLevel(**v) for k, v in d["levels"].items()}
        return cls(d["entry"], int(d["rate_point"]), meta, levels, int(d["side_info_bits"]), d.get("codec", {}))


@dataclass
class CodedImage(CodedResult):
    """The coded picture of an image entry at one rate point, with what decoding it on the sender showed.

    Attributes:
        num_bits: the bitstream's bits (all a receiver gets).
        bitstream: its store key.
        encode_s, decode_s: codec wall times (encode 0 when the bitstream came from the cache).
        convert_s: RGB to Y'CbCr conversion time.
        psnr_y: PSNR of the decoded luma against the coded one, peak = 2^bit_depth - 1.
        command: the encoder command line or options, as recorded with the bitstream.
        coded_size: ``(height, width)`` of the coded picture.
    """

    entry: str
    rate_point: int
    num_bits: int
    bitstream: str
    encode_s: float
    decode_s: float
    convert_s: float
    from_cache: bool
    psnr_y: float
    command: list[str] | None = None
    coded_size: tuple[int, int] | None = None

    def bitstream_keys(self) -> list[str]:
        return [self.bitstream]

    def quality_columns(self) -> dict[str, Any]:
        return {"psnr_y": self.psnr_y}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CodedImage:
        size = d.get("coded_size")
        return cls(**{**d, "coded_size": tuple(size) if size is not None else None})


class CodingEntry(abc.ABC):
    """Base of anchors and proposals.

    Args:
        name: stable identifier (YAML file name = MLflow run name = spreadsheet sheet).
        rate_points: the QPs this entry is evaluated at (from the CTC definition).
        bit_depth: sample bit depth of the coded pictures.

    What the sweep does with an entry follows from its base class (:class:`FeatureCodingMethod` or
    :class:`ImageCodingMethod`; :mod:`vcm_eval.pipeline.chains`).
    """

    #: whether the rate points are QPs of the CTC's codec (checked against its range before any work); False for
    #: entries whose rate points index their own codec (the learned entry's checkpoints)
    codec_qps: ClassVar[bool] = True

    def __init__(self, *, name: str, rate_points: Sequence[int], bit_depth: int = 10) -> None:
        if not rate_points:
            raise SettingError(f"entry {name!r} has no rate points; set them in the CTC definition (ctc.qps)")
        self.name = name
        self.rate_points = [int(r) for r in rate_points]
        self.bit_depth = int(bit_depth)

    def identity(self) -> dict[str, Any]:
        """Class and method parameters: what makes two entries code the same thing. Rate points are
        left out (each task carries its own), so two entries differing only in their QP lists share results."""
        params = {k: v for k, v in self.params().items() if k not in ("name", "rate_points")}
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **params}

    def params(self) -> dict[str, Any]:
        """Constructor arguments as attributes (override when they are stored under other names)."""
        names = set()
        for klass in type(self).__mro__:
            if "__init__" in vars(klass):
                names |= {p for p in inspect.signature(klass.__init__).parameters if p != "self"}
        return {n: _plain(getattr(self, n)) for n in sorted(names) if hasattr(self, n)}

class FeatureCodingMethod(CodingEntry):
    """Codes split-point features; subclass in ``anchors/`` or ``proposals/``.

    Contract: ``encode`` codes every level with ``coder`` and returns the record; ``decode`` rebuilds
    the split-point layers a receiver would get from that record alone (bitstreams + side information),
    which the framework passes to the model's decoder side. Both are deterministic functions of their inputs.

    ``split`` names the split point the entry codes (:data:`vcm_eval.models.base.SPLIT_LEVELS`): ``"c"``, the
    C-layers ``c2..c5`` after the FPN laterals, or ``"p"``, the P-layers ``p2..p5`` after the FPN output
    convolutions. The framework hands ``encode`` the features at that split (the model carries its stored
    C-layers there) and the model decodes from it; the entry never learns which model it codes for.
    """

    split: ClassVar[str] = "c"

    def identity(self) -> dict[str, Any]:
        """As :meth:`CodingEntry.identity`, plus the split point the entry codes."""
        return {**super().identity(), "split": self.split}

    @abc.abstractmethod
    def encode(self, features: SplitFeatures, rate_point: int, coder: CachedCodec, *,
               label: str = "") -> CodedFeatures:
        """Code ``features`` at ``rate_point``; ``label`` names the image in errors and logs."""

    @abc.abstractmethod
    def decode(self, coded: CodedFeatures, coder: CachedCodec, *, label: str = "") -> SplitFeatures:
        """Reconstruct the split-point layers (those of ``split``) from ``coded``."""

    def encode_sequence(self, frames: Sequence[SplitFeatures], rate_point: int, coder: CachedCodec,
                        condition: Any, *, label: str = "") -> CodedResult:
        """Code every frame of a sequence. Here: frame by frame with :meth:`encode` (intra-only whatever
        ``condition`` says, and recorded so); entries that code their levels as videos override it."""
        from vcm_eval.sequence_methods import coded_frames, frame_label

        return coded_frames(self.name, rate_point, [self.encode(f, rate_point, coder, label=frame_label(label, i))
                                                    for i, f in enumerate(frames)])

    def decode_sequence(self, coded: CodedResult, coder: CachedCodec, *, label: str = "") -> list[SplitFeatures]:
        """The split-point layers of every frame, from what :meth:`encode_sequence` returned."""
        from vcm_eval.sequence_methods import frame_label

        return [self.decode(f, coder, label=frame_label(label, i)) for i, f in enumerate(coded.frames)]

class ImageCodingMethod(CodingEntry):
    """Codes the input picture itself (the image anchor); the unsplit model runs on the decoded picture.

    Contract: ``code`` returns the decoded RGB uint8 picture of the original size and the
    :class:`CodedImage` (bits a receiver gets, bitstream, timings).
    """

    @abc.abstractmethod
    def code(self, image: np.ndarray, rate_point: int, coder: CachedCodec, *,
             label: str = "") -> tuple[np.ndarray, CodedImage]:
        """Returns ``(decoded RGB uint8 picture, coded result)``."""

    def code_sequence(self, frames: Sequence[np.ndarray], rate_point: int, coder: CachedCodec, condition: Any, *,
                      label: str = "") -> tuple[list[np.ndarray], CodedResult]:
        """Code the frames of a sequence as one video under ``condition``; returns the decoded RGB frames and the
        coded result (:class:`~vcm_eval.sequence_methods.CodedVideo`). Entries that can code video override it."""
        raise SettingError(f"{self.name}: {type(self).__name__} codes still pictures only; a video CTC needs an image "
                           "entry that codes a sequence as one video (code_sequence), as anchors/image.py does")

def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value
