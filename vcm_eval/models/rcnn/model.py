"""Detectron2-compatible Faster R-CNN FPN (and Mask R-CNN FPN) behind vcm_eval's split interface.

:class:`FasterRCNNFPN` is the network, with Detectron2's parameter names (``backbone.*``,
``proposal_generator.rpn_head.*``, ``roi_heads.box_head.*``, ``roi_heads.box_predictor.*``, and for
Mask R-CNN configurations ``roi_heads.mask_head.*``).
:class:`RCNNSplitModel` wraps it as a :class:`~vcm_eval.models.base.SplitModel`:

* ``encode``: ``DefaultPredictor`` preprocessing, bottom-up ResNet, FPN lateral 1x1 convs
  -> ``c2..c5`` as float32 (256, Hp/s, Wp/s) arrays of the padded input, plus :class:`SplitMeta`;
* ``to_split(c, "p")``: top-down sums and output convs -> ``p2..p5`` (256 channels, the C-layers' shapes);
* ``decode``: from C-layers top-down sums and output convs, then (from P-layers directly) P6, RPN, ROI heads,
  then Detectron2's ``detector_postprocess`` (scale to the original size, clip, drop empty boxes; for Mask R-CNN, paste
  each instance's 28x28 mask into the picture at threshold 0.5 -> ``Detections.masks``).

``detect`` runs the same operations without the float32 numpy round trip, which is lossless,
so it equals ``decode(encode(image))`` and ``decode(to_split(encode(image), "p"))`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcm_eval.errors import SettingError
from vcm_eval.hashing import file_sha256
from vcm_eval.models.base import SPLIT_LEVELS, SplitModel, split_of
from vcm_eval.models.rcnn.box_ops import clip_boxes, nonempty
from vcm_eval.models.rcnn.checkpoint import load_state, read_checkpoint
from vcm_eval.models.rcnn.fpn import ResNetFPN, last_level_max_pool
from vcm_eval.models.rcnn.mask_head import MaskRCNNConvUpsampleHead, paste_masks
from vcm_eval.models.rcnn.preprocess import Preprocessed, padded_shape, preprocess
from vcm_eval.models.rcnn.resnet import ResNet
from vcm_eval.models.rcnn.roi_heads import StandardROIHeads
from vcm_eval.models.rcnn.rpn import RPN
from vcm_eval.models.rcnn.zoo import RCNNConfig
from vcm_eval.types import Detections, SplitFeatures, SplitMeta

_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32, "p2": 4, "p3": 8, "p4": 16, "p5": 32}


class FasterRCNNFPN(nn.Module):
    """ResNet(-X)-FPN Faster R-CNN (inference only) built from an :class:`RCNNConfig`.

    With ``cfg.mask_on`` it is a Mask R-CNN: the ROI heads carry Detectron2's ``MaskRCNNConvUpsampleHead``.
    """

    def __init__(self, cfg: RCNNConfig):
        super().__init__()
        bottom_up = ResNet(cfg.blocks_per_stage, num_groups=cfg.num_groups, width_per_group=cfg.width_per_group,
                           stride_in_1x1=cfg.stride_in_1x1, stem_out_channels=cfg.stem_out_channels,
                           res2_out_channels=cfg.res2_out_channels, eps=cfg.frozen_bn_eps)
        self.backbone = ResNetFPN(bottom_up, cfg.fpn_out_channels)
        self.proposal_generator = RPN(
            in_channels=cfg.fpn_out_channels, sizes=cfg.anchor_sizes, aspect_ratios=cfg.anchor_aspect_ratios,
            strides=(4, 8, 16, 32, 64), offset=cfg.anchor_offset, bbox_reg_weights=cfg.rpn_bbox_reg_weights,
            scale_clamp=cfg.scale_clamp, pre_nms_topk=cfg.rpn_pre_nms_topk_test,
            post_nms_topk=cfg.rpn_post_nms_topk_test, nms_thresh=cfg.rpn_nms_thresh,
            min_box_size=cfg.rpn_min_box_size)
        self.roi_heads = StandardROIHeads(
            in_channels=cfg.fpn_out_channels, strides=(4, 8, 16, 32), num_classes=cfg.num_classes,
            pooler_resolution=cfg.pooler_resolution, sampling_ratio=cfg.pooler_sampling_ratio,
            canonical_box_size=cfg.canonical_box_size, canonical_level=cfg.canonical_level, fc_dim=cfg.fc_dim,
            bbox_reg_weights=cfg.roi_bbox_reg_weights, scale_clamp=cfg.scale_clamp,
            score_thresh=cfg.score_thresh_test, nms_thresh=cfg.nms_thresh_test,
            detections_per_image=cfg.detections_per_image,
            mask_head=MaskRCNNConvUpsampleHead(cfg.fpn_out_channels, cfg.num_classes, cfg.mask_num_conv,
                                               cfg.mask_conv_dim) if cfg.mask_on else None,
            mask_pooler_resolution=cfg.mask_pooler_resolution, mask_sampling_ratio=cfg.mask_pooler_sampling_ratio)

    def heads(self, p_layers: dict[str, torch.Tensor], input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """RPN + ROI heads on ``p2..p6`` of one image; boxes in input-image (resized) pixels.

        Returns:
            ``proposal_boxes`` (R, 4), ``proposal_logits`` (R,), ``roi_cls_logits`` (R, K + 1),
            ``boxes`` (D, 4), ``scores`` (D,), ``classes`` (D,); with a mask head also ``mask_logits``
            (D, 28, 28), the mask head's output at each detection's class, before the sigmoid.
        """
        levels = [p_layers[k] for k in ("p2", "p3", "p4", "p5", "p6")]
        proposals, logits = self.proposal_generator(levels, input_size)
        cls_logits, deltas = self.roi_heads.predictions(levels[:4], proposals)
        boxes, scores, classes = self.roi_heads.inference(cls_logits, deltas, proposals, input_size)
        out = {"proposal_boxes": proposals, "proposal_logits": logits, "roi_cls_logits": cls_logits,
               "boxes": boxes, "scores": scores, "classes": classes}
        if self.roi_heads.mask_head is not None:
            out["mask_logits"] = self.roi_heads.mask_logits(levels[:4], boxes, classes)
        return out


def rescale_boxes(boxes: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Detectron2's ``detector_postprocess`` for boxes: back to original-image pixels.

    x *= W / w, y *= H / h (``input_size`` = (h, w), ``original_size`` = (H, W)), clip to (H, W).

    Returns:
        (boxes (N, 4), keep mask (N,) of the boxes that are still non-empty).
    """
    scale_x = original_size[1] / input_size[1]
    scale_y = original_size[0] / input_size[0]
    boxes = boxes.clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, original_size)
    return boxes, nonempty(boxes)


@dataclass
class StageOutputs:
    """Every intermediate of one unsplit run, for parity checks and inspection."""

    pre: Preprocessed
    c_layers: dict[str, torch.Tensor]
    p_layers: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    detections: Detections


class RCNNSplitModel(SplitModel):
    """A Detectron2 zoo Faster R-CNN FPN (or Mask R-CNN FPN) split after the FPN lateral convolutions (C-layers)
    or after its output convolutions (P-layers, ``to_split(features, "p")``).

    For a Mask R-CNN configuration (``cfg.mask_on``) the detections carry ``masks``: (N, H, W) bool in the
    picture's pixels, pasted as Detectron2's ``detector_postprocess`` does.

    Args:
        cfg: the zoo configuration (see :mod:`vcm_eval.models.rcnn.zoo`).
        weights: path of a Detectron2 ``.pkl`` / ``.pth`` checkpoint for that configuration.
        device: torch device for the network (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises:
        WeightsError: weights not configured, missing, unreadable, or for another architecture.
        ValueError: an unusable device.

    Example::

        model = RCNNSplitModel(get_zoo_config("faster_rcnn_X_101_32x8d_FPN_3x"), "model_final_68b088.pkl")
        feats = model.encode(read_image("000001.jpg"))   # {c2..c5}: (256, Hp/4, Wp/4) ... (256, Hp/32, Wp/32)
        dets = model.decode(feats)                        # boxes in the picture's pixels
    """

    def __init__(self, cfg: RCNNConfig, weights: str | Path | None, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = _resolve_device(device)
        state = read_checkpoint(weights, cfg)
        net = FasterRCNNFPN(cfg)
        load_state(net, state, source=str(weights), cfg=cfg)
        del state
        self.net = net.eval().to(self.device)
        for param in self.net.parameters():
            param.requires_grad_(False)
        self.weights_path = Path(weights)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.name = f"rcnn/{cfg.zoo_name}"
        self.class_names = cfg.class_names

    # ------------------------------------------------------------------ stages
    def preprocess(self, image: np.ndarray) -> Preprocessed:
        """RGB uint8 (H, W, 3) -> normalised, padded (1, 3, Hp, Wp) tensor and geometry."""
        return preprocess(image, self.cfg, self.device)

    @torch.inference_mode()
    def c_layers(self, pre: Preprocessed) -> dict[str, torch.Tensor]:
        """``c2..c5`` tensors (1, 256, Hp/s, Wp/s) of a preprocessed image."""
        return self.net.backbone.c_layers(pre.tensor)

    @torch.inference_mode()
    def p_layers(self, c_layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``p2..p6`` tensors from ``c2..c5``."""
        return self.net.backbone.p_layers(c_layers)

    @torch.inference_mode()
    def _decode_tensors(self, c_layers: dict[str, torch.Tensor], meta: SplitMeta
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Detections]:
        return self._decode_p_tensors(self.net.backbone.p_layers(c_layers), meta)

    @torch.inference_mode()
    def _decode_p_tensors(self, p_layers: dict[str, torch.Tensor], meta: SplitMeta
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Detections]:
        if "p6" not in p_layers:  # P-layers from the split: the receiver derives P6 as the FPN's top block does
            p_layers = {**p_layers, "p6": last_level_max_pool(p_layers["p5"])}
        heads = self.net.heads(p_layers, meta.input_size)
        boxes, keep = rescale_boxes(heads["boxes"], meta.input_size, meta.original_size)
        masks = None
        if "mask_logits" in heads:
            masks = paste_masks(heads["mask_logits"][keep].sigmoid(), boxes[keep], meta.original_size,
                                self.cfg.mask_threshold).cpu().numpy()
        dets = Detections(boxes[keep].cpu().numpy(), heads["scores"][keep].cpu().numpy(),
                          heads["classes"][keep].cpu().numpy(), masks=masks)
        return p_layers, heads, dets

    def run_stages(self, image: np.ndarray) -> StageOutputs:
        """Unsplit inference keeping every intermediate (preprocessed input, C, P, proposals, detections)."""
        pre = self.preprocess(image)
        c = self.c_layers(pre)
        p, heads, dets = self._decode_tensors(c, _meta(pre))
        return StageOutputs(pre, c, p, heads, dets)

    # ------------------------------------------------------------ split API
    def encode(self, image: np.ndarray) -> SplitFeatures:
        pre = self.preprocess(image)
        c = self.c_layers(pre)
        layers = {k: np.ascontiguousarray(v[0].cpu().numpy(), dtype=np.float32) for k, v in c.items()}
        return SplitFeatures(layers=layers, meta=_meta(pre))

    @torch.inference_mode()
    def c_to_p(self, features: SplitFeatures) -> SplitFeatures:
        """C-layers -> P-layers ``p2..p5`` (:func:`~vcm_eval.models.rcnn.fpn.top_down` without P6)."""
        if split_of(features) != "c":
            raise ValueError(f"c_to_p takes C-layers, got levels {sorted(features.layers)}")
        p = self.net.backbone.p_layers(self.features_to_tensors(features))
        layers = {k: np.ascontiguousarray(p[k][0].cpu().numpy(), dtype=np.float32) for k in SPLIT_LEVELS["p"]}
        return features.replace_layers(layers)

    def decode(self, features: SplitFeatures) -> Detections:
        tensors = self.features_to_tensors(features)
        if split_of(features) == "p":
            return self._decode_p_tensors(tensors, features.meta)[2]
        return self._decode_tensors(tensors, features.meta)[2]

    def detect(self, image: np.ndarray) -> Detections:
        return self.run_stages(image).detections

    def features_to_tensors(self, features: SplitFeatures) -> dict[str, torch.Tensor]:
        """Validated (1, 256, H, W) float32 tensors of ``features.layers`` (C-layers or P-layers).

        Raises:
            ValueError: a level is missing, mis-shaped for ``features.meta.padded_size``, or not finite.
        """
        levels = SPLIT_LEVELS[split_of(features)]
        meta = features.meta
        hp, wp = meta.padded_size
        if (hp, wp) != padded_shape(hp, wp, self.cfg.size_divisibility) or min(hp, wp) < 1:
            raise ValueError(f"padded_size {meta.padded_size} is not a positive multiple of "
                             f"{self.cfg.size_divisibility}; these features were not made by this model")
        if not (0 < meta.input_size[0] <= hp and 0 < meta.input_size[1] <= wp):
            raise ValueError(f"input_size {meta.input_size} does not fit padded_size {meta.padded_size}")
        out = {}
        for level in levels:
            if level not in features.layers:
                raise ValueError(f"features lack level {level}; a split Faster R-CNN FPN needs {list(levels)}")
            arr = np.asarray(features.layers[level])
            want = (self.cfg.fpn_out_channels, hp // _STRIDES[level], wp // _STRIDES[level])
            if arr.shape != want:
                raise ValueError(f"feature {level} has shape {arr.shape}, expected {want} for padded size "
                                 f"{meta.padded_size}")
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"feature {level} has dtype {arr.dtype}; dequantise it to float32 first")
            arr = arr.astype(np.float32, copy=False)
            if not np.isfinite(arr).all():
                raise ValueError(f"feature {level} contains NaN or infinite values")
            out[level] = torch.from_numpy(np.ascontiguousarray(arr))[None].to(self.device)
        return out

    def identity(self) -> dict:
        cfg = self.cfg
        extra = {"mask_threshold": cfg.mask_threshold} if cfg.mask_on else {}
        return {
            "family": "detectron2-mask-rcnn-fpn" if cfg.mask_on else "detectron2-faster-rcnn-fpn",
            "implementation": "vcm_eval.models.rcnn",
            "zoo_name": cfg.zoo_name,
            "config_file": cfg.config_file,
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "min_size_test": cfg.min_size_test,
            "max_size_test": cfg.max_size_test,
            "score_thresh_test": cfg.score_thresh_test,
            "nms_thresh_test": cfg.nms_thresh_test,
            "detections_per_image": cfg.detections_per_image,
            "device": self.device.type,
            **extra,
        }


def _meta(pre: Preprocessed) -> SplitMeta:
    return SplitMeta(original_size=pre.original_size, input_size=pre.input_size, padded_size=pre.padded_size)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SettingError(f"device {device!r} is not a torch device (use 'cpu' or 'cuda')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(f"device {device!r} requested but CUDA is not available here; set model.device=cpu")
    return dev
