"""Bits, bpp and PSNR: the rate side of every result, in one place.

bpp = (bitstream bits of all coded pictures of one image + side-information bits) / (W x H of the
*original* picture). Side information is what the decoder needs and the configuration does not fix:
per level the quantiser's (min, max) as 2 x float32, and once per image its original size as
2 x uint16 (from which the resize, padding and every level's shape follow).
"""

from __future__ import annotations

import math

import numpy as np

from vcm_eval.features.quantize import QUANT_SIDE_INFO_BITS

#: original picture height and width, 2 x uint16.
IMAGE_SIZE_SIDE_INFO_BITS = 2 * 16


def feature_side_info_bits(num_levels: int) -> int:
    """Side information of one image's coded C-layers: ``num_levels * 64 + 32`` bits."""
    return num_levels * QUANT_SIDE_INFO_BITS + IMAGE_SIZE_SIDE_INFO_BITS


def bits_per_pixel(num_bits: int | float, original_size: tuple[int, int]) -> float:
    """``bpp = num_bits / (height * width)`` of the original picture."""
    height, width = original_size
    if height <= 0 or width <= 0:
        raise ValueError(f"original picture size must be positive, got {original_size}")
    return float(num_bits) / float(height * width)


def psnr_db(reference: np.ndarray, reconstruction: np.ndarray, peak: float) -> float:
    """``10 * log10(peak**2 / MSE)`` in dB; ``inf`` for an exact reconstruction, ``nan`` for peak 0."""
    if peak <= 0:
        return math.nan
    mse = float(np.mean((reference.astype(np.float64) - reconstruction.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)
