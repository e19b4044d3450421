"""The C-layer feature-map anchor (the paper's reference [11]).

The network is split after the FPN lateral 1x1 convolutions. Each level ``Ck`` (k = 2..5) is, on
its own:

1. min-max quantised to N bits (10 by default) with one (min, max) pair per level;
2. packed, channel by channel in index order, into one monochrome picture (16 x 16 tiles for 256
   channels);
3. coded as a 4:0:0 picture with the CTC's codec (All-Intra, fixed QP: the rate point, plus an optional
   per-level offset, ``qp_offsets``, none in the CTC's anchor);

and the receiver decodes, unpacks and dequantises each level and runs the rest of the network on
the reconstructions. Coding error of a coarse level reaches every finer level through the FPN's
top-down sums — the weakness the compensation proposal addresses.

Training-free sample methods (``quantizer``, ``transform``, ``downsample``; :mod:`vcm_eval.features.chain`)
sit between steps 1 and 2 when an entry's YAML switches them on; all are off in the CTC's anchor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.bitrate import feature_side_info_bits, psnr_db
from vcm_eval.features import PackingGeometry, pack_channels, unpack_channels
from vcm_eval.features.chain import (
    ChainOptions,
    decode_samples,
    encode_samples,
    params_from_record,
    params_to_record,
    side_info_bits,
)
from vcm_eval.methods import CodedFeatures, CodedLevel, FeatureCodingMethod
from vcm_eval.types import Frame, SplitFeatures


class CLayerAnchor(FeatureCodingMethod):
    """Quantise -> pack -> code each C-layer independently.

    Args:
        name: entry name (``c_layer``).
        rate_points: QPs of the CTC.
        bit_depth: quantiser and picture bit depth (10 in the CTC).
        levels: levels coded, coarse to fine; every level the model's decoder needs.
        qp_offsets: per-level QP offsets, ``{"c2": -3, "c5": 2}``: level ``l`` is coded at rate point
            ``+ qp_offsets[l]`` (0 for levels not named). Empty (the CTC's anchor) leaves the entry's identity,
            and so every cache key and result, as they were before offsets existed.
        quantizer: the quantiser's range, ``{range: percentile, low: 0.1, high: 99.9}``, ``{range: sigma, k: 4}``,
            ``per_channel: true``, ``zscore: true`` (:class:`~vcm_eval.features.chain.ChainOptions`); null = min-max.
        transform: a channel transform, ``{kind: klt, basis: embedded, components: {c2: 16}}`` (or
            ``kind: select``, range-based channel truncation); null = none.
        downsample: per-level resolution reduction, ``{c2: 2}``; null = none.

    Example::

        >>> anchor = CLayerAnchor(name="c_layer", rate_points=[41, 43])
        >>> coded = anchor.encode(features, 41, coder)          # doctest: +SKIP
        >>> recon = anchor.decode(coded, coder)                  # doctest: +SKIP
    """

    def __init__(self, *, name: str = "c_layer", rate_points: Sequence[int], bit_depth: int = 10,
                 levels: Sequence[str] = ("c5", "c4", "c3", "c2"), qp_offsets: Mapping[str, int] | None = None,
                 quantizer: Mapping[str, Any] | None = None, transform: Mapping[str, Any] | None = None,
                 downsample: Mapping[str, int] | None = None) -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth)
        try:
            self.chain = ChainOptions.of(quantizer, transform, downsample)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{name}: {exc}") from exc
        for option, named in (("components", self.chain.components), ("downsample", self.chain.downsample)):
            stray = sorted(set(named) - set(levels))
            if stray:
                raise SettingError(f"{name}: {option} name levels {stray} that are not coded ({list(levels)})")
        self.levels = list(levels)
        offsets = {str(k): int(v) for k, v in (qp_offsets or {}).items()}
        unknown = sorted(set(offsets) - set(self.levels))
        if unknown:
            raise SettingError(f"{name}: qp_offsets name levels {unknown} that are not coded ({self.levels})")
        self._qp_offsets = {k: v for k, v in offsets.items() if v != 0}

    @property
    def qp_offsets(self) -> dict[str, int]:
        """Non-zero per-level QP offsets."""
        return dict(self._qp_offsets)

    def level_qp(self, level: str, rate_point: int) -> int:
        """QP of ``level`` at ``rate_point``: ``rate_point + qp_offsets.get(level, 0)``."""
        return int(rate_point) + self._qp_offsets.get(level, 0)

    def params(self) -> dict[str, Any]:
        """Constructor arguments; ``qp_offsets`` only when some level has one, so that the plain anchor's
        identity (a part of every cache key) is what it was before offsets existed."""
        params = super().params()
        params.pop("qp_offsets", None)
        if self._qp_offsets:
            params["qp_offsets"] = dict(sorted(self._qp_offsets.items()))
        for option in ("quantizer", "transform", "downsample"):
            params.pop(option, None)
        if not self.chain.is_default:
            params["samples"] = self.chain.identity()
        return params

    def code_level(self, level: str, feature_map: np.ndarray, qp: int, coder: CachedCodec, *,
                   label: str) -> tuple[CodedLevel, np.ndarray]:
        """Quantise, pack and code one (C, H, W) map; returns its record and the decoded float32 map."""
        q, params, samples = encode_samples(level, feature_map, self.chain, self.bit_depth)
        picture, geometry = pack_channels(q)
        frame = Frame.gray(picture, self.bit_depth)
        picture_label = f"{label} {level} ({frame.width}x{frame.height}) at QP {qp}"
        stored = coder.encode(frame, qp, label=picture_label)
        decoded, decode_s = coder.decode(stored.key, FrameSpec.of(frame), label=picture_label)
        reconstruction = decode_samples(level, unpack_channels(decoded.luma, geometry), params, samples, self.chain)
        peak = float(np.float32(np.max(feature_map))) - float(np.float32(np.min(feature_map)))
        record = CodedLevel(
            level=level,
            bitstream=stored.key,
            num_bytes=stored.num_bytes,
            quant=params_to_record(params),
            geometry=geometry.to_dict(),
            psnr_db=psnr_db(feature_map, reconstruction, peak),
            encode_s=0.0 if stored.from_cache else stored.encode_s,
            decode_s=decode_s,
            from_cache=stored.from_cache,
            command=stored.command,
            qp=int(qp),
            samples=samples or None,
            side_info_bits=side_info_bits(params, samples),
        )
        return record, reconstruction

    def decode_level(self, record: CodedLevel, coder: CachedCodec, *, label: str) -> np.ndarray:
        """Decode, unpack and dequantise one level from its record."""
        params = params_from_record(record.quant)
        geometry = PackingGeometry(**record.geometry)
        height, width = geometry.picture_shape
        spec = FrameSpec(height, width, params[0].bit_depth, "400")
        decoded, _ = coder.decode(record.bitstream, spec, label=f"{label} {record.level}")
        return decode_samples(record.level, unpack_channels(decoded.luma, geometry), params, record.samples,
                              self.chain)

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
