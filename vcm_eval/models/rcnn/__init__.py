"""Detectron2-compatible Faster R-CNN FPN and Mask R-CNN FPN (inference), split at the FPN lateral outputs.

A PyTorch re-implementation of Detectron2's ``GeneralizedRCNN`` inference path for the model-zoo
``COCO-Detection/faster_rcnn_{R_50,R_101,X_101_32x8d}_FPN_{1x,3x}`` and
``COCO-InstanceSegmentation/mask_rcnn_{R_50,X_101_32x8d}_FPN_3x`` configurations: it loads the
zoo checkpoints unchanged and reproduces Detectron2's outputs (checked against
``../shared/golden/detectron2`` by ``tests/test_rcnn_parity.py`` and ``tests/test_rcnn_mask.py``). The
package is named ``rcnn`` so that it never shadows the real ``detectron2``; see
:mod:`vcm_eval.models.detectron2_backend` for running the real one behind the same interface.

Hydra builds models with :func:`build_zoo_model` (``conf/model/faster_rcnn_*.yaml``, ``conf/model/mask_rcnn_*.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from vcm_eval.models.rcnn.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from vcm_eval.models.rcnn.model import FasterRCNNFPN, RCNNSplitModel
from vcm_eval.models.rcnn.zoo import ZOO, RCNNConfig, get_zoo_config


def build_zoo_model(zoo_name: str, weights: str | Path | None, min_size_test: int = 800,
                    max_size_test: int = 1333, device: str = "cpu") -> RCNNSplitModel:
    """A zoo Faster R-CNN FPN (or Mask R-CNN FPN) with its weights loaded, at the given test size.

    Args:
        zoo_name: e.g. ``faster_rcnn_X_101_32x8d_FPN_3x`` or ``mask_rcnn_X_101_32x8d_FPN_3x`` (see :data:`ZOO`).
        weights: path of the Detectron2 checkpoint (``model_final_*.pkl`` or ``.pth``).
        min_size_test, max_size_test: Detectron2's ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``.
        device: torch device.

    Raises:
        WeightsError: ``weights`` is None, missing or does not fit; the message names the zoo file.
        ValueError: unknown zoo name, bad sizes or device.
    """
    cfg = get_zoo_config(zoo_name).with_test_size(min_size_test, max_size_test)
    return RCNNSplitModel(cfg, weights, device=device)


__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASS_NAMES",
    "FasterRCNNFPN",
    "RCNNConfig",
    "RCNNSplitModel",
    "ZOO",
    "build_zoo_model",
    "get_zoo_config",
]
