"""Detectron2 model-zoo Faster R-CNN FPN and Mask R-CNN FPN configurations, as plain data.

Values are those of Detectron2's ``configs/Base-RCNN-FPN.yaml``,
``configs/COCO-Detection/faster_rcnn_*_FPN_*.yaml`` and
``configs/COCO-InstanceSegmentation/mask_rcnn_*_FPN_3x.yaml`` merged over
``detectron2/config/defaults.py`` (commit 02b5c4e); the weights file names, box AP and mask AP are
Detectron2's ``MODEL_ZOO.md`` / ``detectron2/model_zoo/model_zoo.py``.
``../shared/golden/detectron2/config_*.json`` and ``config_mask_*.json`` record the same values as
the real Detectron2 resolved them for R50-FPN and X101-FPN.

There is no R101-FPN 1x or X101-FPN 1x in the zoo; the 1x/3x models share the architecture and
differ only in training length (and so in weights).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from vcm_eval.errors import SettingError
from vcm_eval.models.rcnn.coco_classes import COCO_CLASS_NAMES

#: Detectron2's ``_DEFAULT_SCALE_CLAMP``: dw, dh are clamped so a 16 px box grows to at most 1000 px.
DEFAULT_SCALE_CLAMP: float = math.log(1000.0 / 16)

_ZOO_URL = "https://dl.fbaipublicfiles.com/detectron2/{folder}/{name}/{run}/{file}"
#: Detectron2's config folders: boxes only, and boxes + instance masks
DETECTION, INSTANCE_SEGMENTATION = "COCO-Detection", "COCO-InstanceSegmentation"


@dataclass(frozen=True)
class RCNNConfig:
    """Everything that fixes a Detectron2 Faster R-CNN FPN's (or Mask R-CNN FPN's) inference outputs.

    Field names follow Detectron2's config keys (``MODEL.RESNETS.DEPTH`` -> ``depth`` etc.).
    Build variants with :func:`dataclasses.replace` or :meth:`with_test_size`.
    """

    zoo_name: str
    config_file: str
    # backbone (MODEL.RESNETS.*)
    depth: int = 50
    num_groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    frozen_bn_eps: float = 1e-5
    fpn_out_channels: int = 256
    # input (MODEL.PIXEL_*, INPUT.*)
    input_format: str = "BGR"
    pixel_mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    min_size_test: int = 800
    max_size_test: int = 1333
    size_divisibility: int = 32
    # anchors and RPN (MODEL.ANCHOR_GENERATOR.*, MODEL.RPN.*)
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.0
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_box_size: float = 0.0
    rpn_bbox_reg_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # ROI heads (MODEL.ROI_HEADS.*, MODEL.ROI_BOX_HEAD.*)
    num_classes: int = 80
    pooler_resolution: int = 7
    pooler_sampling_ratio: int = 0
    canonical_box_size: int = 224
    canonical_level: int = 4
    fc_dim: int = 1024
    roi_bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    scale_clamp: float = DEFAULT_SCALE_CLAMP
    # mask branch (MODEL.MASK_ON, MODEL.ROI_MASK_HEAD.*; MaskRCNNConvUpsampleHead, class-specific masks),
    # pooled with ROIAlignV2 from p2..p5 with the box head's level rule; pasted at mask_threshold
    mask_on: bool = False
    mask_pooler_resolution: int = 14
    mask_pooler_sampling_ratio: int = 0
    mask_num_conv: int = 4
    mask_conv_dim: int = 256
    mask_threshold: float = 0.5
    # provenance of the released weights; weights_env is the variable conf/model/<zoo_name>.yaml reads
    weights_file: str = ""
    weights_url: str = ""
    weights_env: str = ""
    coco_box_ap: float = float("nan")
    coco_mask_ap: float = float("nan")

    @property
    def class_names(self) -> tuple[str, ...]:
        return COCO_CLASS_NAMES

    @property
    def blocks_per_stage(self) -> tuple[int, int, int, int]:
        """Bottleneck blocks in res2..res5 (Detectron2's ``num_blocks_per_stage``)."""
        table = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
        if self.depth not in table:
            raise SettingError(f"{self.zoo_name}: bottleneck ResNet depth must be one of {sorted(table)}, "
                             f"got {self.depth}")
        return table[self.depth]

    def with_test_size(self, min_size_test: int, max_size_test: int) -> RCNNConfig:
        """A copy at another ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, validated."""
        for key, value in (("min_size_test", min_size_test), ("max_size_test", max_size_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"{key} must be a positive integer, got {value!r}")
        if max_size_test < min_size_test:
            raise SettingError(f"max_size_test ({max_size_test}) must be >= min_size_test ({min_size_test})")
        return dataclasses.replace(self, min_size_test=min_size_test, max_size_test=max_size_test)


def _entry(name: str, run: str, file: str, box_ap: float, env: str, folder: str = DETECTION, **arch) -> RCNNConfig:
    return RCNNConfig(
        zoo_name=name,
        weights_env=env,
        config_file=f"{folder}/{name}.yaml",
        weights_file=file,
        weights_url=_ZOO_URL.format(folder=folder, name=name, run=run, file=file),
        coco_box_ap=box_ap,
        **arch,
    )


#: the X101 backbone is a Caffe2 (FAIR) model: stride in the 3x3 conv, ImageNet std scaling
_X101 = dict(depth=101, num_groups=32, width_per_group=8, stride_in_1x1=False, pixel_std=(57.375, 57.12, 58.395))


#: Supported zoo names -> configuration at the default test size 800/1333.
ZOO: dict[str, RCNNConfig] = {
    c.zoo_name: c
    for c in (
        _entry("faster_rcnn_R_50_FPN_1x", "137257794", "model_final_b275ba.pkl", 37.9,
               "VCM_EVAL_R50_FPN_1X_WEIGHTS", depth=50),
        _entry("faster_rcnn_R_50_FPN_3x", "137849458", "model_final_280758.pkl", 40.2,
               "VCM_EVAL_R50_FPN_3X_WEIGHTS", depth=50),
        _entry("faster_rcnn_R_101_FPN_3x", "137851257", "model_final_f6e8b1.pkl", 42.0,
               "VCM_EVAL_R101_FPN_3X_WEIGHTS", depth=101),
        _entry("faster_rcnn_X_101_32x8d_FPN_3x", "139173657", "model_final_68b088.pkl", 43.0,
               "VCM_EVAL_X101_FPN_3X_WEIGHTS", **_X101),
        # Mask R-CNN: the same networks plus MODEL.MASK_ON (COCO-InstanceSegmentation/*.yaml)
        _entry("mask_rcnn_R_50_FPN_3x", "137849600", "model_final_f10217.pkl", 41.0,
               "VCM_EVAL_MASK_R50_FPN_3X_WEIGHTS", INSTANCE_SEGMENTATION, depth=50, mask_on=True, coco_mask_ap=37.2),
        _entry("mask_rcnn_X_101_32x8d_FPN_3x", "139653917", "model_final_2d9806.pkl", 44.3,
               "VCM_EVAL_MASK_X101_FPN_3X_WEIGHTS", INSTANCE_SEGMENTATION, mask_on=True, coco_mask_ap=39.5,
               **_X101),
    )
}


def get_zoo_config(zoo_name: str) -> RCNNConfig:
    """The configuration of a zoo name; a ``COCO-Detection/`` or ``COCO-InstanceSegmentation/`` prefix and a
    ``.yaml`` suffix are accepted.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    key = zoo_name
    for folder in (DETECTION, INSTANCE_SEGMENTATION):
        key = key.removeprefix(folder + "/")
    key = key.removesuffix(".yaml")
    if key not in ZOO:
        raise SettingError(f"unknown Detectron2 zoo model {zoo_name!r}; known: {', '.join(ZOO)}")
    return ZOO[key]
