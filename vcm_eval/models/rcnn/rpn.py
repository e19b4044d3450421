"""Region proposal network at test time (Detectron2's ``RPN`` + ``StandardRPNHead``).

Per level: a shared 3x3 conv + ReLU, then 1x1 convs for A objectness logits and 4A anchor deltas.
Anchors are decoded, the ``pre_nms_topk`` highest logits of each level are kept, the survivors are
clipped to the (unpadded) input size, boxes with a side <= ``min_box_size`` are dropped, NMS runs
per level (``batched_nms`` with the level as group), and the first ``post_nms_topk`` remain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from vcm_eval.models.rcnn.box_ops import apply_deltas, clip_boxes, nonempty


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(len(sizes) * len(aspect_ratios), 4) anchors centred on (0, 0).

    For size s and ratio r = h / w: w = sqrt(s^2 / r), h = r * w, box = (-w/2, -h/2, w/2, h/2),
    computed in float64 and rounded once to float32 (as Detectron2's ``generate_cell_anchors``).
    """
    anchors = []
    for size in sizes:
        area = size**2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(grid_size: tuple[int, int], stride: int, offset: float, cells: torch.Tensor) -> torch.Tensor:
    """(H * W * A, 4) anchors: cell anchors shifted to ``(offset + j) * stride, (offset + i) * stride``.

    Order is row-major over (i, j) positions, then the A cell anchors: the order of the flattened
    (N, A, H, W) head outputs after ``permute(0, 2, 3, 1)``.
    """
    grid_h, grid_w = grid_size
    device = cells.device
    shifts_x = torch.arange(offset * stride, grid_w * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(offset * stride, grid_h * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


def find_top_proposals(proposals: list[torch.Tensor], logits: list[torch.Tensor], image_size: tuple[int, int],
                       *, nms_thresh: float, pre_nms_topk: int, post_nms_topk: int,
                       min_box_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Detectron2's ``find_top_rpn_proposals`` for one image.

    Args:
        proposals: per level (Hi * Wi * A, 4) decoded boxes.
        logits: per level (Hi * Wi * A,) objectness logits.
        image_size: (h, w) of the resized, unpadded input; boxes are clipped to it.

    Returns:
        (boxes (R, 4), logits (R,)), R <= post_nms_topk, by descending logit.
    """
    topk_boxes, topk_logits, level_ids = [], [], []
    for level, (boxes_l, logits_l) in enumerate(zip(proposals, logits)):
        k = min(int(logits_l.shape[0]), pre_nms_topk)
        # Row-wise topk on a (1, n) tensor, as Detectron2 calls it (same tie order).
        top_logits, top_idx = logits_l[None].topk(k, dim=1)
        topk_boxes.append(boxes_l[top_idx[0]])
        topk_logits.append(top_logits[0])
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=boxes_l.device))
    boxes = torch.cat(topk_boxes)
    scores = torch.cat(topk_logits)
    levels = torch.cat(level_ids)

    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
    if not bool(valid.all()):
        boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
    boxes = clip_boxes(boxes, image_size)
    keep = nonempty(boxes, min_box_size)
    if not bool(keep.all()):
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes.float(), scores, levels, nms_thresh)[:post_nms_topk]
    return boxes[keep], scores[keep]


class StandardRPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 objectness (A) and anchor-delta (4A) convs."""

    def __init__(self, in_channels: int = 256, num_anchors: int = 3, box_dim: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Test-time region proposal network over ``p2..p6``.

    Args:
        sizes: one anchor size per level; aspect_ratios: shared by all levels;
        strides: of each level; offset: anchor centre offset in units of stride;
        the rest are Detectron2's ``MODEL.RPN.*`` test settings.
    """

    def __init__(self, *, in_channels: int, sizes: Sequence[float], aspect_ratios: Sequence[float],
                 strides: Sequence[int], offset: float, bbox_reg_weights: tuple[float, float, float, float],
                 scale_clamp: float, pre_nms_topk: int, post_nms_topk: int, nms_thresh: float,
                 min_box_size: float):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"need one anchor size per level, got {len(sizes)} sizes for {len(strides)} levels")
        self.rpn_head = StandardRPNHead(in_channels, num_anchors=len(aspect_ratios))
        self.strides = tuple(strides)
        self.offset = offset
        self.bbox_reg_weights = bbox_reg_weights
        self.scale_clamp = scale_clamp
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        for i, size in enumerate(sizes):
            # Not persistent: Detectron2 checkpoints may carry these under other names and it ignores them.
            self.register_buffer(f"cell_anchors_{i}", cell_anchors([size], aspect_ratios), persistent=False)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposals for one image: features are (1, C, Hi, Wi) per level; returns (boxes (R, 4), logits (R,))."""
        if features[0].shape[0] != 1:
            raise ValueError("the RPN here runs on one image at a time")
        logits, deltas = self.rpn_head(features)
        proposals, flat_logits = [], []
        for i, (x, logit, delta) in enumerate(zip(features, logits, deltas)):
            cells = getattr(self, f"cell_anchors_{i}")
            anchors = grid_anchors(tuple(x.shape[-2:]), self.strides[i], self.offset, cells)
            # (1, A, H, W) -> (H*W*A,);  (1, 4A, H, W) -> (H*W*A, 4), the anchors' order.
            flat_logits.append(logit.permute(0, 2, 3, 1).reshape(-1))
            d = delta.view(delta.shape[0], -1, 4, delta.shape[-2], delta.shape[-1]).permute(0, 3, 4, 1, 2)
            proposals.append(apply_deltas(d.reshape(-1, 4), anchors, self.bbox_reg_weights, self.scale_clamp))
        return find_top_proposals(proposals, flat_logits, image_size, nms_thresh=self.nms_thresh,
                                  pre_nms_topk=self.pre_nms_topk, post_nms_topk=self.post_nms_topk,
                                  min_box_size=self.min_box_size)
