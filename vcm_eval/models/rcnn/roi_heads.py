"""Standard ROI heads at test time (Detectron2's ``StandardROIHeads`` box branch, and its mask branch).

Proposals are pooled with ROIAlignV2 (torchvision ``roi_align(aligned=True)``, adaptive sampling)
from the level their size selects, passed through a 2-FC head, scored (softmax over 80 classes +
background) and regressed per class; then ``fast_rcnn_inference_single_image``: clip, score
threshold, per-class NMS, top detections. With a mask head (Mask R-CNN), the final boxes are pooled
the same way at the mask pooler's resolution and the head's output at each box's class is its mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from vcm_eval.models.rcnn.box_ops import apply_deltas, box_areas, clip_boxes


def assign_levels(boxes: torch.Tensor, min_level: int, max_level: int, canonical_box_size: int,
                  canonical_level: int) -> torch.Tensor:
    """Pyramid level index (0 = ``min_level``) of each box (FPN paper eq. 1).

    level = clamp(floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8)), min, max)
    """
    sizes = torch.sqrt(box_areas(boxes))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def multilevel_roi_align(features: Sequence[torch.Tensor], boxes: torch.Tensor, scales: Sequence[float],
                         output_size: int, sampling_ratio: int, canonical_box_size: int,
                         canonical_level: int) -> torch.Tensor:
    """(R, C, S, S) ROIAlignV2 features of one image's boxes, each from its assigned level.

    Args:
        features: per level (1, C, Hi, Wi), finest first, with spatial scale ``scales[i]`` = 1/stride.
        boxes: (R, 4) in input-image pixels.
    """
    min_level = -math.log2(scales[0])
    max_level = -math.log2(scales[-1])
    if not (min_level.is_integer() and max_level.is_integer()):
        raise ValueError(f"pooler scales must be powers of 1/2, got {list(scales)}")
    rois = torch.cat([torch.zeros((boxes.shape[0], 1), dtype=boxes.dtype, device=boxes.device), boxes], dim=1)
    out = torch.zeros((boxes.shape[0], features[0].shape[1], output_size, output_size),
                      dtype=features[0].dtype, device=features[0].device)
    if boxes.shape[0] == 0:
        return out
    levels = assign_levels(boxes, int(min_level), int(max_level), canonical_box_size, canonical_level)
    for level, (x, scale) in enumerate(zip(features, scales)):
        inds = torch.nonzero(levels == level, as_tuple=True)[0]
        pooled = roi_align(x, rois[inds].to(x.dtype), (output_size, output_size), scale, sampling_ratio, True)
        out.index_put_((inds,), pooled)
    return out


def fast_rcnn_inference(boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int], *,
                        score_thresh: float, nms_thresh: float, topk: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detectron2's ``fast_rcnn_inference_single_image``.

    Args:
        boxes: (R, 4K) class-specific boxes; scores: (R, K + 1) probabilities, background last.
        image_size: (h, w) the boxes are clipped to.

    Returns:
        boxes (D, 4), scores (D,), classes (D,) int64, D <= topk, by descending score.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid.all()):
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    num_reg_classes = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_reg_classes, 4)
    mask = scores > score_thresh
    inds = mask.nonzero()
    boxes = boxes[inds[:, 0], 0] if num_reg_classes == 1 else boxes[mask]
    scores = scores[mask]
    keep = batched_nms(boxes.float(), scores, inds[:, 1], nms_thresh)
    if topk >= 0:
        keep = keep[:topk]
    return boxes[keep], scores[keep], inds[keep, 1]


class FastRCNNConvFCHead(nn.Module):
    """Flatten -> fc1 -> ReLU -> fc2 -> ReLU (``MODEL.ROI_BOX_HEAD.NUM_FC = 2``, no convs)."""

    def __init__(self, in_features: int, fc_dim: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_features, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))


class FastRCNNOutputLayers(nn.Module):
    """Class logits (K + 1, background last) and class-specific box deltas (4K)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class StandardROIHeads(nn.Module):
    """Box branch of Detectron2's ``StandardROIHeads`` on ``p2..p5`` (strides 4..32)."""

    def __init__(self, *, in_channels: int, strides: Sequence[int], num_classes: int, pooler_resolution: int,
                 sampling_ratio: int, canonical_box_size: int, canonical_level: int, fc_dim: int,
                 bbox_reg_weights: tuple[float, float, float, float], scale_clamp: float,
                 score_thresh: float, nms_thresh: float, detections_per_image: int,
                 mask_head: nn.Module | None = None, mask_pooler_resolution: int = 14, mask_sampling_ratio: int = 0):
        super().__init__()
        self.scales = tuple(1.0 / s for s in strides)
        self.pooler_resolution = pooler_resolution
        self.sampling_ratio = sampling_ratio
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level
        self.bbox_reg_weights = bbox_reg_weights
        self.scale_clamp = scale_clamp
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.box_head = FastRCNNConvFCHead(in_channels * pooler_resolution**2, fc_dim)
        self.box_predictor = FastRCNNOutputLayers(fc_dim, num_classes)
        # Detectron2's mask pooler is ROIPooler(mask_pooler_resolution, the box pooler's scales, mask_sampling_ratio,
        # "ROIAlignV2") with the default canonical box and level, as the box pooler's.
        self.mask_head = mask_head
        self.mask_pooler_resolution = mask_pooler_resolution
        self.mask_sampling_ratio = mask_sampling_ratio

    def predictions(self, features: Sequence[torch.Tensor], proposals: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, K + 1) class logits and (R, 4K) box deltas for proposal boxes (R, 4)."""
        pooled = multilevel_roi_align(features, proposals, self.scales, self.pooler_resolution,
                                      self.sampling_ratio, self.canonical_box_size, self.canonical_level)
        return self.box_predictor(self.box_head(pooled))

    def inference(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
                  image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections (boxes (D, 4) in input-image pixels, scores (D,), classes (D,)) from :meth:`predictions`."""
        boxes = apply_deltas(deltas, proposals, self.bbox_reg_weights, self.scale_clamp)
        probs = F.softmax(logits, dim=-1)
        return fast_rcnn_inference(boxes, probs, image_size, score_thresh=self.score_thresh,
                                   nms_thresh=self.nms_thresh, topk=self.detections_per_image)

    def mask_logits(self, features: Sequence[torch.Tensor], boxes: torch.Tensor, classes: torch.Tensor
                    ) -> torch.Tensor:
        """(D, 2S, 2S) mask logits of final boxes (D, 4) (input-image pixels), each at its class (D,).

        Raises:
            RuntimeError: this head has no mask branch.
        """
        if self.mask_head is None:
            raise RuntimeError("these ROI heads have no mask head (a Faster R-CNN configuration)")
        side = 2 * self.mask_pooler_resolution
        if boxes.shape[0] == 0:
            return boxes.new_zeros((0, side, side))
        pooled = multilevel_roi_align(features, boxes, self.scales, self.mask_pooler_resolution,
                                      self.mask_sampling_ratio, self.canonical_box_size, self.canonical_level)
        logits = self.mask_head(pooled)
        if logits.shape[1] == 1:  # class-agnostic: one mask for every class
            return logits[:, 0]
        return logits[torch.arange(logits.shape[0], device=logits.device), classes]

    def forward(self, features: Sequence[torch.Tensor], proposals: torch.Tensor, image_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one image from its ``p2..p5`` and proposal boxes (R, 4)."""
        return self.inference(*self.predictions(features, proposals), proposals, image_size)
