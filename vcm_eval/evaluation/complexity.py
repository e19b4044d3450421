"""Complexity of the network parts, as MPEG FCM reports it: thousands of multiply-accumulates per input pixel.

Counted, not estimated: torch's own operator counter (``torch.utils.flop_counter.FlopCounterMode``) records the
FLOPs of every convolution, matrix product and attention call a forward pass runs, and a multiply-accumulate is
two of them::

    kMAC/px = FLOPs / 2 / (H * W) / 1000

for an H x W input picture. Operators the counter has no formula for (ROI Align, NMS, element-wise activations)
add nothing, as in fvcore's and the FCM CTC's counts, which also cover convolutions and linear layers only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def kmac_per_pixel(function: Callable[..., Any], *args: Any, pixels: int) -> tuple[float, Any]:
    """``FLOPs / 2 / pixels / 1000`` of one call of ``function(*args)``, and what the call returned."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        result = function(*args)
    return counter.get_total_flops() / 2.0 / float(pixels) / 1000.0, result


def network_complexity(model: Any, picture: np.ndarray) -> dict[str, float]:
    """kMAC per pixel of the model's two halves on ``picture`` (RGB uint8): ``nn_part_1`` (the encoder side, up
    to the split) and ``nn_part_2`` (the decoder side, from the split to the detections)."""
    pixels = int(picture.shape[0]) * int(picture.shape[1])
    part_1, features = kmac_per_pixel(model.encode, picture, pixels=pixels)
    part_2, _ = kmac_per_pixel(model.decode, features, pixels=pixels)
    return {"nn_part_1_kmac_per_px": part_1, "nn_part_2_kmac_per_px": part_2}
