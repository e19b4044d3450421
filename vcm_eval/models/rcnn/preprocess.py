"""Detectron2 ``DefaultPredictor`` preprocessing: BGR, shortest-edge resize, normalise, pad.

``DefaultPredictor.__call__`` applies ``ResizeShortestEdge([MIN_SIZE_TEST] * 2, MAX_SIZE_TEST)``
(a ``ResizeTransform`` = Pillow ``Image.resize(..., BILINEAR)`` on the uint8 array) to the BGR
picture; ``GeneralizedRCNN.preprocess_image`` then computes ``(x - PIXEL_MEAN) / PIXEL_STD`` in
float32 on the CHW tensor, and ``ImageList.from_tensors`` zero-pads bottom/right to a multiple of
the backbone's ``size_divisibility`` (32 for FPN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vcm_eval.models.base import check_image

if TYPE_CHECKING:
    from vcm_eval.models.rcnn.zoo import RCNNConfig


@dataclass
class Preprocessed:
    """One image ready for the backbone.

    Attributes:
        tensor: (1, 3, Hp, Wp) float32, normalised and zero-padded.
        resized: (h, w, 3) uint8 resized picture in the model's channel order, before normalising.
        original_size: (H, W) of the input picture.
        input_size: (h, w) after resizing, before padding.
        padded_size: (Hp, Wp).
    """

    tensor: torch.Tensor
    resized: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    padded_size: tuple[int, int]


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) of Detectron2's ``ResizeShortestEdge.get_output_shape``.

    scale = min_size / min(H, W); if max(H, W) * scale > max_size then the long side becomes
    max_size instead; each side is then rounded as ``int(side * scale + 0.5)``.

    Raises:
        ValueError: when a side would round to 0 px (aspect ratio beyond max_size / 0.5).
    """
    size = min_size * 1.0
    scale = size / min(height, width)
    if height < width:
        newh, neww = size, scale * width
    else:
        newh, neww = scale * height, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    out_h, out_w = int(newh + 0.5), int(neww + 0.5)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {width}x{height} px picture resized to fit {min_size}/{max_size} would be "
                         f"{out_w}x{out_h} px: the aspect ratio is too extreme for this detector; "
                         "crop the picture first")
    return out_h, out_w


def padded_shape(height: int, width: int, divisibility: int) -> tuple[int, int]:
    """(h, w) rounded up to multiples of ``divisibility``: ``ceil(x / d) * d``."""
    if divisibility <= 1:
        return height, width
    return (-(-height // divisibility) * divisibility, -(-width // divisibility) * divisibility)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow bilinear resize of a uint8 (H, W, 3) array, as Detectron2's ``ResizeTransform`` does."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def normalize_and_pad(resized: np.ndarray, pixel_mean, pixel_std, divisibility: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, Hp, Wp) float32 tensor: ``(x - mean) / std`` per channel, zero-padded bottom/right.

    The arithmetic is float32 with float32 mean/std, as Detectron2's ``pixel_mean``/``pixel_std``
    buffers, so the result is bit-identical to Detectron2's ``ImageList.tensor``.
    """
    chw = torch.as_tensor(np.ascontiguousarray(resized.astype(np.float32).transpose(2, 0, 1)), device=device)
    mean = torch.tensor(pixel_mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32, device=device).view(-1, 1, 1)
    normalized = (chw - mean) / std
    h, w = normalized.shape[-2:]
    hp, wp = padded_shape(h, w, divisibility)
    out = torch.zeros((1, 3, hp, wp), dtype=torch.float32, device=device)
    out[0, :, :h, :w] = normalized
    return out


def preprocess(image: np.ndarray, cfg: RCNNConfig, device: torch.device | str = "cpu") -> Preprocessed:
    """RGB uint8 (H, W, 3) -> what Detectron2's ``DefaultPredictor`` feeds ``backbone.bottom_up``.

    Raises:
        ValueError: for an array that is not RGB uint8 (H, W, 3), or an unusable aspect ratio.
    """
    check_image(image)
    if cfg.input_format == "BGR":
        image = image[:, :, ::-1]
    elif cfg.input_format != "RGB":
        raise ValueError(f"input_format must be 'BGR' or 'RGB', got {cfg.input_format!r}")
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    newh, neww = resized_shape(height, width, cfg.min_size_test, cfg.max_size_test)
    resized = resize_bilinear(image, newh, neww)
    tensor = normalize_and_pad(resized, cfg.pixel_mean, cfg.pixel_std, cfg.size_divisibility, device)
    return Preprocessed(
        tensor=tensor,
        resized=resized,
        original_size=(height, width),
        input_size=(newh, neww),
        padded_size=(int(tensor.shape[-2]), int(tensor.shape[-1])),
    )
