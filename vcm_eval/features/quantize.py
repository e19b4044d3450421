"""Min-max uniform quantisation of one feature level to N-bit integers.

One (min, max) pair per level is the side information; both ends use it as float32, the
precision in which it is transmitted, so encoder and decoder agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcm_eval.errors import SettingError

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
        raise SettingError(f"bit_depth must be in 1..16, got {bit_depth}")
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


#: How a quantiser's range is chosen (``range_params``).
RANGE_METHODS = ("minmax", "percentile", "sigma")


def range_params(x: np.ndarray, bit_depth: int = 10, *, method: str = "minmax", low: float = 0.1,
                 high: float = 99.9, k: float = 4.0) -> QuantParams:
    """Side information of a clipped quantiser: the range that :func:`quantize` maps onto ``[0, 2**N - 1]``.

    - ``minmax``: ``[min x, max x]`` (:func:`min_max_params`, the anchor's; nothing is clipped);
    - ``percentile``: ``[P_low(x), P_high(x)]``, percentiles in percent (linear interpolation);
    - ``sigma``: ``[mean - k sd, mean + k sd]`` of ``x``, intersected with ``[min x, max x]``.

    Samples outside the range are clipped to its ends by :func:`quantize`; :func:`clipped_fraction` counts
    them. A narrower range spends the 2**N codes on the bulk of the distribution: a finer step where the
    samples are, a larger error on the few outliers.
    """
    full = min_max_params(x, bit_depth)
    if method == "minmax":
        return full
    if method == "percentile":
        if not 0 <= low < high <= 100:
            raise SettingError(f"percentile range needs 0 <= low < high <= 100, got low={low}, high={high}")
        lo, hi = np.percentile(x.astype(np.float64), [low, high])
    elif method == "sigma":
        if k <= 0:
            raise SettingError(f"sigma range needs k > 0, got {k}")
        mean, sd = float(np.mean(x, dtype=np.float64)), float(np.std(x, dtype=np.float64))
        lo, hi = max(mean - k * sd, full.minimum), min(mean + k * sd, full.maximum)
    else:
        raise SettingError(f"unknown quantiser range {method!r}; choose one of {list(RANGE_METHODS)}")
    return QuantParams(float(np.float32(lo)), float(np.float32(hi)), bit_depth)


def clipped_fraction(x: np.ndarray, params: QuantParams) -> float:
    """Fraction of the samples of ``x`` outside ``[min, max]`` of ``params`` (clipped by :func:`quantize`)."""
    lo, hi = np.float32(params.minimum), np.float32(params.maximum)
    return float(np.count_nonzero((x < lo) | (x > hi)) / max(x.size, 1))


def channel_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of a (C, H, W) map as float32 (their transmitted precision);
    a channel with zero deviation gets 1 so that normalising it is the identity around its mean."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    mean = flat.mean(axis=1).astype(np.float32)
    sd = flat.std(axis=1).astype(np.float32)
    return mean, np.where(sd > 0, sd, np.float32(1.0)).astype(np.float32)


def normalize_channels(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Z-score per channel: ``z[c] = (x[c] - mean[c]) / sd[c]`` (float32)."""
    return ((x.astype(np.float32) - mean[:, None, None]) / sd[:, None, None]).astype(np.float32)


def denormalize_channels(z: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_channels`: ``x[c] = z[c] * sd[c] + mean[c]``."""
    return (z.astype(np.float32) * sd[:, None, None] + mean[:, None, None]).astype(np.float32)
