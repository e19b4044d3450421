"""Min-max uniform quantisation of one feature level to N-bit integers.

One (min, max) pair per level is the side information; both ends use it as float32, the
precision in which it is transmitted, so encoder and decoder agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: bits of side information per level: min and max as two float32 values.
QUANT_SIDE_INFO_BITS = 2 * 32


@dataclass(frozen=True)
class QuantParams:
    """Side information of a min-max quantiser.

    Attributes:
        minimum, maximum: the level's range as float32 values.
        bit_depth: N, integers lie in ``[0, 2**N - 1]``.
    """

    minimum: float
    maximum: float
    bit_depth: int = 10

    @property
    def levels(self) -> int:
        """Largest integer code, ``2**N - 1``."""
        return (1 << self.bit_depth) - 1

    @property
    def step(self) -> float:
        """Quantiser step ``(max - min) / (2**N - 1)``; 0 for a constant map."""
        return float((np.float32(self.maximum) - np.float32(self.minimum)) / np.float32(self.levels))

    def to_dict(self) -> dict:
        return {"minimum": self.minimum, "maximum": self.maximum, "bit_depth": self.bit_depth}


def min_max_params(x: np.ndarray, bit_depth: int = 10) -> QuantParams:
    """Side information for quantising ``x``: its float32 min and max.

    Raises:
        ValueError: on an empty map, a non-finite value, or a bit depth outside 1..16.
    """
    if not 1 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be in 1..16, got {bit_depth}")
    if x.size == 0:
        raise ValueError("cannot quantise an empty feature map")
    lo, hi = np.float32(np.min(x)), np.float32(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("feature map holds NaN or inf; the model produced non-finite C-layers")
    return QuantParams(float(lo), float(hi), bit_depth)


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """Quantise to ``q = round((x - min) / (max - min) * (2**N - 1))``, clipped to ``[0, 2**N - 1]``.

    A constant map (max == min) quantises to all zeros. Rounding is half-to-even (``np.rint``).

    Returns:
        uint16 array of the shape of ``x``.
    """
    lo, hi = np.float32(params.minimum), np.float32(params.maximum)
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint16)
    scale = np.float32(params.levels) / (hi - lo)
    q = np.rint((x.astype(np.float32) - lo) * scale)
    return np.clip(q, 0, params.levels).astype(np.uint16)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """Invert :func:`quantize`: ``x_hat = q / (2**N - 1) * (max - min) + min``, as float32.

    The reconstruction error of an uncoded map is at most half a step, ``(max - min) / (2 * (2**N - 1))``.
    """
    lo, hi = np.float32(params.minimum), np.float32(params.maximum)
    step = (hi - lo) / np.float32(params.levels)
    return q.astype(np.float32) * step + lo
