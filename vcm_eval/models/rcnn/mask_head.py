"""Mask R-CNN's mask branch at test time, and the paste of its 28x28 masks into the picture.

The head is Detectron2's ``MaskRCNNConvUpsampleHead`` as the ``COCO-InstanceSegmentation/mask_rcnn_*_FPN_3x``
configurations build it (``MODEL.ROI_MASK_HEAD``: ``NUM_CONV 4``, ``CONV_DIM 256``, no norm, class-specific):
``mask_fcn1..4`` (3x3 convolution, padding 1, + ReLU), ``deconv`` (2x2 transposed convolution, stride 2,
+ ReLU) and ``predictor`` (1x1 convolution, one output per class). Its input is the 14x14 ROIAlignV2 pooling
(``sampling_ratio 0``, ``aligned=True``) of each *final* box, in resized-picture pixels, from ``p2..p5``,
each box on the level the box head's rule gives it (canonical box 224 px on level 4).

:func:`paste_masks` is ``detector_postprocess``'s paste (``paste_masks_in_image``, threshold 0.5): every mask
is bilinearly resampled (``grid_sample``, ``align_corners=False``, zero padding) at the centres of the
picture's pixels, with the box spanning the mask's outer edges, and thresholded at ``>= 0.5``. On the CPU it
goes one instance at a time over the pixels around that instance's box, as Detectron2 does; elsewhere it
resamples whole pictures in chunks of at most 1 GiB of float32. Pixels outside the sampled region are False.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: float32 bytes of one chunk of whole-picture masks off the CPU (Detectron2's ``GPU_MEM_LIMIT``)
CHUNK_BYTES = 1024**3


class MaskRCNNConvUpsampleHead(nn.Module):
    """``num_conv`` x (conv 3x3 + ReLU), deconv 2x2/2 + ReLU, 1x1 predictor: (R, C, S, S) -> (R, K, 2S, 2S)."""

    def __init__(self, in_channels: int, num_classes: int, num_conv: int = 4, conv_dim: int = 256):
        super().__init__()
        self.num_conv = num_conv
        channels = in_channels
        for k in range(1, num_conv + 1):
            self.add_module(f"mask_fcn{k}", nn.Conv2d(channels, conv_dim, 3, stride=1, padding=1))
            channels = conv_dim
        self.deconv = nn.ConvTranspose2d(channels, conv_dim, 2, stride=2, padding=0)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, self.num_conv + 1):
            x = F.relu(getattr(self, f"mask_fcn{k}")(x))
        return self.predictor(F.relu(self.deconv(x)))


def _sample_region(probs: torch.Tensor, boxes: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int]
                   ) -> torch.Tensor:
    """(N, h, w) bilinear samples of masks (N, M, M) at the centres of pixel rows ``[r0, r1)`` x cols ``[c0, c1)``.

    A box (x0, y0, x1, y1) spans the mask's outer edges: a pixel centre x maps to
    ``(x - x0) / (x1 - x0) * 2 - 1`` in ``grid_sample``'s [-1, 1] (``align_corners=False``); outside the mask the
    samples fade to zero.
    """
    n = probs.shape[0]
    ys = torch.arange(rows[0], rows[1], device=probs.device, dtype=torch.float32) + 0.5
    xs = torch.arange(cols[0], cols[1], device=probs.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (boxes[:, i:i + 1] for i in range(4))
    gx = (xs - x0) / (x1 - x0) * 2 - 1  # (N, w), this order of float32 operations
    gy = (ys - y0) / (y1 - y0) * 2 - 1  # (N, h)
    grid = torch.stack((gx[:, None, :].expand(n, gy.shape[1], gx.shape[1]),
                        gy[:, :, None].expand(n, gy.shape[1], gx.shape[1])), dim=3)
    return F.grid_sample(probs[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, 0]


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float = 0.5, *,
                one_by_one: bool | None = None, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Detectron2's ``paste_masks_in_image``: (N, H, W) bool masks of the picture.

    Args:
        probs: (N, M, M) mask probabilities (after the sigmoid).
        boxes: (N, 4) float32 boxes in the picture's pixels (scaled and clipped as ``detector_postprocess`` does).
        image_size: (H, W) of the picture.
        threshold: a pixel is in the mask when its resampled probability is ``>= threshold``.
        one_by_one: paste each instance over the pixels around its box (default: on the CPU, as Detectron2),
            or whole pictures in chunks of at most ``chunk_bytes`` of float32 (default elsewhere). Both sample
            each pixel with the same arithmetic; beyond one pixel outside a box no sample reaches 0.5.
    """
    if probs.ndim != 3 or probs.shape[-1] != probs.shape[-2]:
        raise ValueError(f"masks must be (N, M, M), got {tuple(probs.shape)}")
    if boxes.shape != (probs.shape[0], 4):
        raise ValueError(f"need one box (N, 4) per mask, got {tuple(boxes.shape)} for {probs.shape[0]} masks")
    height, width = int(image_size[0]), int(image_size[1])
    out = torch.zeros((probs.shape[0], height, width), dtype=torch.bool, device=probs.device)
    if probs.shape[0] == 0:
        return out
    boxes = boxes.to(probs.device, torch.float32)
    if one_by_one is None:
        one_by_one = probs.device.type == "cpu"
    if one_by_one:
        # Only the pixels from one before the box to one after it can reach the threshold.
        for i in range(probs.shape[0]):
            x0, y0, x1, y1 = boxes[i].tolist()
            c0, r0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
            c1, r1 = min(math.ceil(x1) + 1, width), min(math.ceil(y1) + 1, height)
            if c1 <= c0 or r1 <= r0:
                continue
            region = _sample_region(probs[i:i + 1], boxes[i:i + 1], (r0, r1), (c0, c1))
            out[i, r0:r1, c0:c1] = region[0] >= threshold
        return out
    chunks = min(probs.shape[0], math.ceil(probs.shape[0] * height * width * 4 / chunk_bytes))
    for inds in torch.chunk(torch.arange(probs.shape[0], device=probs.device), chunks):
        out[inds] = _sample_region(probs[inds], boxes[inds], (0, height), (0, width)) >= threshold
    return out


def masks_to_coco_rle(masks) -> list[dict]:
    """COCO run-length encodings of (N, H, W) bool masks, as COCO results files hold them: the ``segmentation``
    Detectron2's ``instances_to_coco_json`` writes for ``COCOeval(iouType="segm")``
    (:func:`vcm_eval.data.masks.encode_masks`)."""
    from vcm_eval.data.masks import encode_masks

    return encode_masks(masks)
