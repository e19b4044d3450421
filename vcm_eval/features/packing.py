"""Packing of a (C, H, W) feature level into one monochrome picture of channel tiles, and back.

Channels go in index order, row-major, into the most square grid of ``rows x cols = C`` tiles
(16 x 16 for 256 channels). Any padding a codec needs is the codec's business: the packed
picture is exactly ``(rows * H, cols * W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def grid_shape(num_channels: int) -> tuple[int, int]:
    """Most square ``(rows, cols)`` with ``rows * cols == num_channels`` and ``rows <= cols``.

    Examples: 256 -> (16, 16); 128 -> (8, 16); 64 -> (8, 8); 7 -> (1, 7).
    """
    if num_channels < 1:
        raise ValueError(f"need at least one channel, got {num_channels}")
    rows = math.isqrt(num_channels)
    while num_channels % rows:
        rows -= 1
    return rows, num_channels // rows


@dataclass(frozen=True)
class PackingGeometry:
    """How one level was laid out: ``channels`` tiles of ``tile_h x tile_w`` in a ``rows x cols`` grid."""

    channels: int
    tile_h: int
    tile_w: int
    rows: int
    cols: int

    @classmethod
    def for_shape(cls, shape: tuple[int, int, int]) -> PackingGeometry:
        channels, tile_h, tile_w = shape
        rows, cols = grid_shape(channels)
        return cls(channels, tile_h, tile_w, rows, cols)

    @property
    def picture_shape(self) -> tuple[int, int]:
        """(height, width) of the packed picture: ``(rows * tile_h, cols * tile_w)``."""
        return self.rows * self.tile_h, self.cols * self.tile_w

    def to_dict(self) -> dict:
        return {
            "channels": self.channels,
            "tile_h": self.tile_h,
            "tile_w": self.tile_w,
            "rows": self.rows,
            "cols": self.cols,
        }


def pack_channels(x: np.ndarray) -> tuple[np.ndarray, PackingGeometry]:
    """Tile a (C, H, W) array into a ``(rows * H, cols * W)`` picture; channel c sits at
    grid cell ``(c // cols, c % cols)``.
    """
    if x.ndim != 3:
        raise ValueError(f"pack_channels takes a (C, H, W) array, got shape {x.shape}")
    geom = PackingGeometry.for_shape(x.shape)
    picture = (
        x.reshape(geom.rows, geom.cols, geom.tile_h, geom.tile_w)
        .transpose(0, 2, 1, 3)
        .reshape(geom.picture_shape)
    )
    return np.ascontiguousarray(picture), geom


def unpack_channels(picture: np.ndarray, geom: PackingGeometry) -> np.ndarray:
    """Inverse of :func:`pack_channels`. Rows/columns beyond the grid (codec padding) are dropped."""
    height, width = geom.picture_shape
    if picture.shape[0] < height or picture.shape[1] < width:
        raise ValueError(f"picture {picture.shape} is smaller than the packed grid {geom.picture_shape}")
    picture = picture[:height, :width]
    return np.ascontiguousarray(
        picture.reshape(geom.rows, geom.tile_h, geom.cols, geom.tile_w)
        .transpose(0, 2, 1, 3)
        .reshape(geom.channels, geom.tile_h, geom.tile_w)
    )
