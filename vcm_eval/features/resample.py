"""Spatial resolution of a feature level: code it smaller, bring it back to size at the receiver."""

from __future__ import annotations

import numpy as np


def downsample_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of a (C, H, W) map: ``y[c, i, j] = mean(x[c, f*i : f*i+f, f*j : f*j+f])``.

    A side that ``factor`` does not divide is first extended by repeating its last row / column, so the result
    is ``(C, ceil(H / f), ceil(W / f))``.
    """
    if factor < 1:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    if factor == 1:
        return x.astype(np.float32, copy=False)
    channels, height, width = x.shape
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    blocks = x.reshape(channels, x.shape[1] // factor, factor, x.shape[2] // factor, factor).astype(np.float64)
    return blocks.mean(axis=(2, 4)).astype(np.float32)


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of linear interpolation with half-pixel centres (``align_corners=False``):
    target sample i sits at source coordinate ``s = (i + 0.5) * source / target - 0.5``, clamped to the edge."""
    s = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    s = np.clip(s, 0.0, source - 1)
    lower = np.floor(s).astype(np.int64)
    upper = np.minimum(lower + 1, source - 1)
    return lower, upper, s - lower


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of a (C, h, w) map to (C, H, W), half-pixel centres, edges clamped (the
    convention of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""
    height, width = size
    lo_r, hi_r, w_r = _linear_taps(x.shape[1], height)
    lo_c, hi_c, w_c = _linear_taps(x.shape[2], width)
    x = x.astype(np.float64)
    rows = x[:, lo_r, :] * (1 - w_r)[None, :, None] + x[:, hi_r, :] * w_r[None, :, None]
    out = rows[:, :, lo_c] * (1 - w_c)[None, None, :] + rows[:, :, hi_c] * w_c[None, None, :]
    return out.astype(np.float32)
