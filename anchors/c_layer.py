"""The C-layer feature-map anchor (the paper's reference [11]).

The network is split after the FPN lateral 1x1 convolutions. Each level ``Ck`` (k = 2..5) is, on
its own:

1. min-max quantised to N bits (10 in the CTC), one (min, max) pair per level, sent as side information::

       q = round((C - min C) / (max C - min C) * (2^N - 1)),   C^ = q / (2^N - 1) * (max C - min C) + min C

2. packed, channel by channel in index order, into one monochrome picture (the most square grid of tiles:
   16 x 16 for 256 channels, 4 x 8 for the embedded model's 32);
3. coded as a 4:0:0 picture with the CTC's codec (All-Intra, fixed QP: the rate point, plus an optional
   per-level offset, ``qp_offsets``, none in the CTC's anchor);

and the receiver decodes, unpacks and dequantises each level and runs the rest of the network on
the reconstructions. Coding error of a coarse level reaches every finer level through the FPN's
top-down sums — the weakness the compensation proposal addresses.

On a video CTC (:meth:`CLayerAnchor.encode_sequence`) each level of every frame goes through the same three
steps, and the level's pictures of all frames are coded as one video under the CTC's condition (AI, LD, RA), so
that the codec's inter prediction can use how little a level changes from one frame to the next.

Step 1 is the one place entries built on this one change (:meth:`CLayerAnchor.quantise_level`): the
training-free sample methods of :mod:`proposals.feature_chain` replace it with their chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.bitrate import feature_side_info_bits, psnr_db
from vcm_eval.features import (
    PackingGeometry,
    QuantParams,
    dequantize,
    min_max_params,
    pack_channels,
    quantize,
    unpack_channels,
)
from vcm_eval.methods import CodedFeatures, CodedLevel, FeatureCodingMethod
from vcm_eval.types import Frame, SplitFeatures

if TYPE_CHECKING:
    from vcm_eval.codecs.base import CodingCondition
    from vcm_eval.sequence_methods import CodedFeatureSequence, CodedLevelSequence


class QuantisedLevel(NamedTuple):
    """One level made ready to pack: its integers and what the receiver needs to invert them."""

    samples: np.ndarray
    """(C', H', W') integers in ``[0, 2^N - 1]``."""
    quant: dict[str, Any]
    """The quantiser's range record (``{minimum, maximum, bit_depth}`` for the anchor's one range)."""
    methods: dict[str, Any] | None = None
    """What sample methods did before quantising (``None`` for the anchor)."""
    side_info_bits: int = 0
    """Side information beyond the level's one range, which :func:`feature_side_info_bits` counts."""


class CLayerAnchor(FeatureCodingMethod):
    """Quantise -> pack -> code each C-layer independently.

    Args:
        name: entry name (``c_layer``).
        rate_points: QPs of the CTC.
        bit_depth: quantiser and picture bit depth (10 in the CTC).
        levels: levels coded, coarse to fine; every level the model's decoder needs.
        qp_offsets: per-level QP offsets, ``{"c2": -3, "c5": 2}``: level ``l`` is coded at rate point
            ``+ qp_offsets[l]`` (0 for levels not named; none in the CTC's anchor).

    Example::

        >>> anchor = CLayerAnchor(name="c_layer", rate_points=[41, 43])
        >>> coded = anchor.encode(features, 41, coder)          # doctest: +SKIP
        >>> recon = anchor.decode(coded, coder)                  # doctest: +SKIP
    """

    def __init__(self, *, name: str = "c_layer", rate_points: Sequence[int], bit_depth: int = 10,
                 levels: Sequence[str] = ("c5", "c4", "c3", "c2"),
                 qp_offsets: Mapping[str, int] | None = None) -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth)
        self.levels = list(levels)
        offsets = {str(k): int(v) for k, v in (qp_offsets or {}).items()}
        unknown = sorted(set(offsets) - set(self.levels))
        if unknown:
            raise SettingError(f"{name}: qp_offsets name levels {unknown} that are not coded ({self.levels})")
        self._qp_offsets = {k: v for k, v in sorted(offsets.items()) if v != 0}

    @property
    def qp_offsets(self) -> dict[str, int]:
        """Non-zero per-level QP offsets."""
        return dict(self._qp_offsets)

    def level_qp(self, level: str, rate_point: int) -> int:
        """QP of ``level`` at ``rate_point``: ``rate_point + qp_offsets.get(level, 0)``."""
        return int(rate_point) + self._qp_offsets.get(level, 0)

    def quantise_level(self, level: str, feature_map: np.ndarray) -> QuantisedLevel:
        """Min-max quantisation to ``bit_depth`` bits: ``q = round((C - min) / (max - min) * (2^N - 1))``."""
        params = min_max_params(feature_map, self.bit_depth)
        return QuantisedLevel(quantize(feature_map, params), params.to_dict())

    def dequantise_level(self, level: str, samples: np.ndarray, quant: Mapping[str, Any],
                         methods: Mapping[str, Any] | None) -> np.ndarray:
        """Invert :meth:`quantise_level`: ``C^ = q / (2^N - 1) * (max - min) + min``."""
        return dequantize(samples, QuantParams(**quant))

    def code_level(self, level: str, feature_map: np.ndarray, qp: int, coder: CachedCodec, *,
                   label: str) -> tuple[CodedLevel, np.ndarray]:
        """Quantise, pack and code one (C, H, W) map; returns its record and the decoded float32 map."""
        quantised = self.quantise_level(level, feature_map)
        picture, geometry = pack_channels(quantised.samples)
        frame = Frame.gray(picture, self.bit_depth)
        picture_label = f"{label} {level} ({frame.width}x{frame.height}) at QP {qp}"
        stored = coder.encode(frame, qp, label=picture_label)
        decoded, decode_s = coder.decode(stored.key, FrameSpec.of(frame), label=picture_label)
        reconstruction = self.dequantise_level(level, unpack_channels(decoded.luma, geometry), quantised.quant,
                                               quantised.methods)
        peak = float(np.float32(np.max(feature_map))) - float(np.float32(np.min(feature_map)))
        record = CodedLevel(
            level=level,
            bitstream=stored.key,
            num_bytes=stored.num_bytes,
            quant=quantised.quant,
            geometry=geometry.to_dict(),
            psnr_db=psnr_db(feature_map, reconstruction, peak),
            encode_s=0.0 if stored.from_cache else stored.encode_s,
            decode_s=decode_s,
            from_cache=stored.from_cache,
            command=stored.command,
            qp=int(qp),
            samples=quantised.methods or None,
            side_info_bits=quantised.side_info_bits,
        )
        return record, reconstruction

    def decode_level(self, record: CodedLevel, coder: CachedCodec, *, label: str) -> np.ndarray:
        """Decode, unpack and dequantise one level from its record."""
        geometry = PackingGeometry(**record.geometry)
        height, width = geometry.picture_shape
        spec = FrameSpec(height, width, int(record.quant["bit_depth"]), "400")
        decoded, _ = coder.decode(record.bitstream, spec, label=f"{label} {record.level}")
        return self.dequantise_level(record.level, unpack_channels(decoded.luma, geometry), record.quant,
                                     record.samples)

    def side_info_bits(self, levels: Mapping[str, CodedLevel]) -> int:
        """Per image: the original size, one range per level, and what each level's sample methods add."""
        return feature_side_info_bits(len(levels)) + sum(record.side_info_bits for record in levels.values())

    def encode(self, features: SplitFeatures, rate_point: int, coder: CachedCodec, *,
               label: str = "") -> CodedFeatures:
        missing = [lv for lv in self.levels if lv not in features.layers]
        if missing:
            raise SettingError(f"{self.name}: features of {label} lack levels {missing}; "
                               f"the model gives {sorted(features.layers)}")
        levels = {}
        for level in self.levels:
            levels[level], _ = self.code_level(level, features.layers[level], self.level_qp(level, rate_point),
                                               coder, label=label)
        return CodedFeatures(self.name, rate_point, features.meta, levels, self.side_info_bits(levels),
                             coder.identity())

    def decode(self, coded: CodedFeatures, coder: CachedCodec, *, label: str = "") -> SplitFeatures:
        layers = {name: self.decode_level(record, coder, label=label) for name, record in coded.levels.items()}
        return SplitFeatures(layers=layers, meta=coded.meta)

    def code_level_sequence(self, level: str, feature_maps: Sequence[np.ndarray], qp: int, coder: CachedCodec,
                            condition: CodingCondition, *, label: str
                            ) -> tuple[CodedLevelSequence, list[np.ndarray]]:
        """Quantise and pack one level of every frame and code the pictures as one video under ``condition``;
        returns its record and the decoded float32 maps."""
        from vcm_eval.sequence_methods import CodedLevelSequence

        quantised = [self.quantise_level(level, m) for m in feature_maps]
        packed = [pack_channels(q.samples) for q in quantised]
        geometry = packed[0][1]
        frames = [Frame.gray(picture, self.bit_depth) for picture, _ in packed]
        video_label = f"{label} {level} ({frames[0].width}x{frames[0].height} x {len(frames)}) at QP {qp}"
        stored = coder.encode_sequence(frames, qp, condition, label=video_label)
        decoded, decode_s = coder.decode_sequence(stored.key, FrameSpec.of(frames[0]), len(frames), label=video_label)
        reconstructions = [self.dequantise_level(level, unpack_channels(d.luma, geometry), q.quant, q.methods)
                           for d, q in zip(decoded, quantised)]
        psnr = [psnr_db(m, r, float(np.float32(np.max(m))) - float(np.float32(np.min(m))))
                for m, r in zip(feature_maps, reconstructions)]
        methods = [q.methods or None for q in quantised]
        record = CodedLevelSequence(
            level=level, bitstream=stored.key, frame_bits=list(stored.frame_bits), quant=[q.quant for q in quantised],
            geometry=geometry.to_dict(), psnr_db=float(np.mean(psnr)),
            encode_s=0.0 if stored.from_cache else stored.encode_s, decode_s=decode_s, from_cache=stored.from_cache,
            command=stored.command, qp=int(qp), side_info_bits=sum(q.side_info_bits for q in quantised),
            samples=methods if any(methods) else None)
        return record, reconstructions

    def decode_level_sequence(self, record: CodedLevelSequence, coder: CachedCodec, *, label: str
                              ) -> list[np.ndarray]:
        """Decode, unpack and dequantise one level of every frame from its record."""
        geometry = PackingGeometry(**record.geometry)
        height, width = geometry.picture_shape
        spec = FrameSpec(height, width, int(record.quant[0]["bit_depth"]), "400")
        decoded, _ = coder.decode_sequence(record.bitstream, spec, len(record.frame_bits),
                                           label=f"{label} {record.level}")
        methods = record.samples or [None] * len(decoded)
        return [self.dequantise_level(record.level, unpack_channels(d.luma, geometry), quant, m)
                for d, quant, m in zip(decoded, record.quant, methods)]

    def sequence_result(self, rate_point: int, frames: Sequence[SplitFeatures], condition: CodingCondition,
                        levels: dict[str, CodedLevelSequence], coder: CachedCodec) -> CodedFeatureSequence:
        """The coded sequence: every level's video, and per frame the side information of :meth:`side_info_bits`."""
        from vcm_eval.sequence_methods import CodedFeatureSequence

        side = len(frames) * feature_side_info_bits(len(levels)) + sum(r.side_info_bits for r in levels.values())
        return CodedFeatureSequence(self.name, int(rate_point), condition.to_dict(), [f.meta for f in frames], levels,
                                    side, coder.identity())

    def encode_sequence(self, frames: Sequence[SplitFeatures], rate_point: int, coder: CachedCodec,
                        condition: CodingCondition, *, label: str = "") -> CodedFeatureSequence:
        """Every level of every frame: level by level, each level's pictures as one video."""
        levels = {}
        for level in self.levels:
            maps = [self._layer(f, level, label) for f in frames]
            levels[level], _ = self.code_level_sequence(level, maps, self.level_qp(level, rate_point), coder,
                                                        condition, label=label)
        return self.sequence_result(rate_point, frames, condition, levels, coder)

    def decode_sequence(self, coded: CodedFeatureSequence, coder: CachedCodec, *,
                        label: str = "") -> list[SplitFeatures]:
        per_level = {name: self.decode_level_sequence(r, coder, label=label) for name, r in coded.levels.items()}
        return [SplitFeatures(layers={name: maps[i] for name, maps in per_level.items()}, meta=meta)
                for i, meta in enumerate(coded.metas)]

    def _layer(self, features: SplitFeatures, level: str, label: str) -> np.ndarray:
        if level not in features.layers:
            raise SettingError(f"{self.name}: features of {label} lack level {level}; "
                               f"the model gives {sorted(features.layers)}")
        return features.layers[level]
