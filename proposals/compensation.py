"""The paper's proposal: compression-distortion compensation across pyramid levels.

Levels are coded coarse to fine. After level N is coded, its coding error — the map that was
coded minus its reconstruction — is upsampled 2x (nearest, as the FPN does) and added to level N-1
before level N-1 is quantised and coded::

    C'_5 = C_5;    E_N = C'_N - dec(enc(C'_N));    C'_{N-1} = C_{N-1} + up(E_N)

The receiver is unchanged: it sums ``dec(C'_{N-1}) + up(T^_N)`` as the FPN always does, and since
``T^_N = T_N - E_N``, each top-down map then carries only its own level's coding error instead of
the accumulated error of every coarser level. The paper compensates C4 and C3 (``compensated_levels``)
and reports that also compensating C2 lowered performance.

Variants (off by default): ``error_scale`` adds ``s_N-1 * up(E_N)`` instead of ``up(E_N)`` to a level, and
``keep_range`` clips ``C'_{N-1}`` to the range of the original ``C_{N-1}``, so that the added error neither
widens the quantiser's range (a coarser step for the whole level) nor pushes samples outside what the level
carries. The sample methods of :mod:`proposals.feature_chain` and the anchor's per-level QP offsets apply as
well; all are off in the paper's entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from proposals.feature_chain import FeatureChainEntry
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.errors import SettingError
from vcm_eval.features import add_upsampled_error, coding_error
from vcm_eval.methods import CodedFeatures
from vcm_eval.types import SplitFeatures

if TYPE_CHECKING:
    from vcm_eval.codecs.base import CodingCondition
    from vcm_eval.sequence_methods import CodedFeatureSequence


class CompensationProposal(FeatureChainEntry):
    """C-layer coding with closed-loop compensation of the coarser level's coding error.

    Args:
        name: entry name (``compensation``).
        rate_points: QPs of the CTC.
        bit_depth: quantiser and picture bit depth; each compensated map gets the min-max range of
            the map actually coded (``C'``).
        levels: coding order, coarse to fine (``c5, c4, c3, c2``).
        compensated_levels: levels that receive the upsampled error of the level coded just before
            them; the paper's default is ``[c4, c3]``, ``c2`` is an option.
        qp_offsets: per-level QP offsets, as for the anchor (none in the paper).
        error_scale: level -> s, the share of the upsampled error added to that level (1 for levels not named).
        keep_range: clip each compensated map to the original map's [min, max].
        quantizer, transform, downsample: the sample methods of :class:`~proposals.feature_chain.FeatureChainEntry`.
    """

    def __init__(self, *, name: str = "compensation", rate_points: Sequence[int], bit_depth: int = 10,
                 levels: Sequence[str] = ("c5", "c4", "c3", "c2"),
                 compensated_levels: Sequence[str] = ("c4", "c3"), qp_offsets: Mapping[str, int] | None = None,
                 error_scale: Mapping[str, float] | None = None, keep_range: bool = False,
                 quantizer: Mapping[str, Any] | None = None, transform: Mapping[str, Any] | None = None,
                 downsample: Mapping[str, int] | None = None) -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth, levels=levels,
                         qp_offsets=qp_offsets, quantizer=quantizer, transform=transform, downsample=downsample)
        self.error_scale = {str(k): float(v) for k, v in sorted((error_scale or {}).items()) if float(v) != 1.0}
        self.keep_range = bool(keep_range)
        unknown = [lv for lv in compensated_levels if lv not in self.levels]
        if unknown:
            raise SettingError(f"{name}: compensated_levels {unknown} are not among the coded levels {self.levels}")
        if self.levels and self.levels[0] in compensated_levels:
            raise SettingError(f"{name}: {self.levels[0]} is coded first; no coarser error exists to compensate it")
        self.compensated_levels = list(compensated_levels)

    def compensated_input(self, level: str, original: np.ndarray, previous_error: np.ndarray) -> np.ndarray:
        """``C' = C + s * up(E)``, clipped to ``[min C, max C]`` with ``keep_range``."""
        scale = self.error_scale.get(level, 1.0)
        error = previous_error if scale == 1.0 else (previous_error * np.float32(scale)).astype(np.float32)
        coded_input = add_upsampled_error(original, error)
        if self.keep_range:
            coded_input = np.clip(coded_input, np.min(original), np.max(original)).astype(np.float32)
        return coded_input

    def encode(self, features: SplitFeatures, rate_point: int, coder: CachedCodec, *,
               label: str = "") -> CodedFeatures:
        levels = {}
        previous_error = None
        for level in self.levels:
            original = features.layers[level]
            if level in self.compensated_levels and previous_error is not None:
                coded_input = self.compensated_input(level, original, previous_error)
            else:
                coded_input = original
            levels[level], reconstruction = self.code_level(level, coded_input, self.level_qp(level, rate_point),
                                                            coder, label=label)
            previous_error = coding_error(coded_input, reconstruction)
        return CodedFeatures(self.name, rate_point, features.meta, levels, self.side_info_bits(levels),
                             coder.identity())

    def encode_sequence(self, frames: Sequence[SplitFeatures], rate_point: int, coder: CachedCodec,
                        condition: CodingCondition, *, label: str = "") -> CodedFeatureSequence:
        """As :meth:`encode`, a level at a time over every frame: frame ``t`` of level N-1 receives the upsampled
        coding error of frame ``t`` of level N, after level N's video is coded."""
        levels = {}
        previous_errors = None
        for level in self.levels:
            originals = [self._layer(f, level, label) for f in frames]
            if level in self.compensated_levels and previous_errors is not None:
                coded_inputs = [self.compensated_input(level, x, e) for x, e in zip(originals, previous_errors)]
            else:
                coded_inputs = originals
            levels[level], reconstructions = self.code_level_sequence(
                level, coded_inputs, self.level_qp(level, rate_point), coder, condition, label=label)
            previous_errors = [coding_error(x, r) for x, r in zip(coded_inputs, reconstructions)]
        return self.sequence_result(rate_point, frames, condition, levels, coder)
