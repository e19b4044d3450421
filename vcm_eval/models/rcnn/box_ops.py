"""Box arithmetic of Detectron2's inference path (``Box2BoxTransform``, ``Boxes.clip/nonempty``).

Boxes are float32 (N, 4) ``x0, y0, x1, y1`` tensors. Every function keeps Detectron2's order of
float32 operations, so results are bit-identical to it for the same inputs.
"""

from __future__ import annotations

import torch


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, float, float, float],
                 scale_clamp: float) -> torch.Tensor:
    """Decode (dx, dy, dw, dh) deltas relative to boxes (R-CNN box parametrisation).

    With w = x1 - x0, cx = x0 + w/2 (same for y), and deltas divided by ``weights`` (wx, wy, ww, wh):

        cx' = dx * w + cx,   w' = exp(min(dw, scale_clamp)) * w,   x0' = cx' - w'/2,  x1' = cx' + w'/2

    Args:
        deltas: (N, 4k) float32, k sets of deltas per box (class-specific regression).
        boxes: (N, 4) reference boxes.
        weights: divisors of (dx, dy, dw, dh).
        scale_clamp: upper bound on dw, dh before ``exp``.

    Returns:
        (N, 4k) decoded boxes.
    """
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights

    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=scale_clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=scale_clamp)

    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]

    x0 = pred_ctr_x - 0.5 * pred_w
    y0 = pred_ctr_y - 0.5 * pred_h
    x1 = pred_ctr_x + 0.5 * pred_w
    y1 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x0, y0, x1, y1), dim=-1).reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]; ``size`` is (height, width)."""
    h, w = size
    return torch.stack((boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h),
                        boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Bool mask of boxes whose width and height both exceed ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """(x1 - x0) * (y1 - y0)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
