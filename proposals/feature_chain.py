"""Training-free sample methods around the C-layer anchor's quantiser: the feature-chain entry.

The anchor (:mod:`anchors.c_layer`) min-max quantises each level as it is. This entry runs, per level and
before packing, the chain of :mod:`vcm_eval.features.chain` instead::

    C  ->  downsample (mean, factor f)  ->  channel transform (KLT / selection, k components)
       ->  z-score per channel  ->  quantise over a clipped range (percentile / sigma, optionally per channel)

and the receiver inverts each step from the level's record (``f``, ``k``, the basis checksum, the ranges).
Everything is off by default, where the entry codes exactly what the anchor codes. ``klt_search`` is an
instance whose options ``tools/search_allocation.py`` chose on tune pictures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from anchors.c_layer import CLayerAnchor, QuantisedLevel
from vcm_eval.errors import SettingError
from vcm_eval.features.chain import (
    ChainOptions,
    decode_samples,
    encode_samples,
    params_from_record,
    params_to_record,
    side_info_bits,
)


class FeatureChainEntry(CLayerAnchor):
    """The C-layer anchor with the sample methods between the quantiser's input and the packing.

    Args:
        name, rate_points, bit_depth, levels, qp_offsets: as :class:`~anchors.c_layer.CLayerAnchor`.
        quantizer: the quantiser's range, ``{range: percentile, low: 0.1, high: 99.9}``, ``{range: sigma, k: 4}``,
            ``per_channel: true``, ``zscore: true`` (:class:`~vcm_eval.features.chain.ChainOptions`); null = min-max.
        transform: a channel transform, ``{kind: klt, basis: embedded, components: {c2: 16}}`` (or
            ``kind: select``, range-based channel truncation); null = none.
        downsample: per-level resolution reduction, ``{c2: 2}``; null = none.
    """

    def __init__(self, *, name: str = "feature_chain", rate_points: Sequence[int], bit_depth: int = 10,
                 levels: Sequence[str] = ("c5", "c4", "c3", "c2"), qp_offsets: Mapping[str, int] | None = None,
                 quantizer: Mapping[str, Any] | None = None, transform: Mapping[str, Any] | None = None,
                 downsample: Mapping[str, int] | None = None) -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth, levels=levels,
                         qp_offsets=qp_offsets)
        try:
            self.chain = ChainOptions.of(quantizer, transform, downsample)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{name}: {exc}") from exc
        for option, named in (("components", self.chain.components), ("downsample", self.chain.downsample)):
            stray = sorted(set(named) - set(self.levels))
            if stray:
                raise SettingError(f"{name}: {option} name levels {stray} that are not coded ({self.levels})")

    def params(self) -> dict[str, Any]:
        """The anchor's parameters plus the chain as it acts (the basis by checksum, not by path)."""
        params = super().params()
        for option in ("quantizer", "transform", "downsample"):
            params.pop(option, None)
        params["samples"] = self.chain.identity()
        return params

    def quantise_level(self, level: str, feature_map: np.ndarray) -> QuantisedLevel:
        """The chain forward (:func:`~vcm_eval.features.chain.encode_samples`) and its side information."""
        q, params, methods = encode_samples(level, feature_map, self.chain, self.bit_depth)
        return QuantisedLevel(q, params_to_record(params), methods or None, side_info_bits(params, methods))

    def dequantise_level(self, level: str, samples: np.ndarray, quant: Mapping[str, Any],
                         methods: Mapping[str, Any] | None) -> np.ndarray:
        """The chain backward (:func:`~vcm_eval.features.chain.decode_samples`) from the level's record."""
        return decode_samples(level, samples, params_from_record(quant), methods, self.chain)
