"""The real Detectron2 behind vcm_eval's split interface, for machines where it is installed.

Detectron2 is on no package registry, so vcm_eval's default is its own re-implementation
(:mod:`vcm_eval.models.rcnn`). Where ``import detectron2`` works, :class:`Detectron2SplitModel`
runs the same zoo configurations with Detectron2's own modules: ``DefaultPredictor``
preprocessing, ``backbone.bottom_up`` and the ``fpn_lateral*`` convolutions on the encoder side;
the top-down sums with its ``fpn_output*`` convolutions and ``top_block``, its RPN, ROI heads and
``detector_postprocess`` on the decoder side. For the Mask R-CNN zoo configurations
(``mask_rcnn_*``) its mask head runs too and ``decode`` returns the pasted masks in
``Detections.masks``. ``tests/test_rcnn_backends.py`` and ``tests/test_rcnn_mask.py`` check that both
backends agree (and skip, with the reason, where Detectron2 is absent).

Constructing it without Detectron2 raises :class:`Detectron2UnavailableError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vcm_eval.errors import UserError
from vcm_eval.hashing import file_sha256
from vcm_eval.models.base import SPLIT_LEVELS, SplitModel, WeightsError, check_image, split_of
from vcm_eval.models.rcnn.fpn import top_down
from vcm_eval.models.rcnn.zoo import get_zoo_config
from vcm_eval.types import Detections, SplitFeatures, SplitMeta


class Detectron2UnavailableError(UserError, ImportError):
    """``detectron2`` cannot be imported; the message says how to get it or what to use instead."""


def detectron2_available() -> tuple[bool, str]:
    """(True, version) when ``import detectron2`` works, else (False, the reason)."""
    try:
        import detectron2
    except Exception as exc:  # a broken build fails with other errors than ImportError
        return False, f"{type(exc).__name__}: {exc}"
    return True, str(getattr(detectron2, "__version__", "unknown"))


class Detectron2SplitModel(SplitModel):
    """A Detectron2 model-zoo Faster R-CNN FPN (or Mask R-CNN FPN) run by Detectron2 itself, split at the C-layers
    (or, ``to_split(features, "p")``, at the P-layers ``p2..p5``; P6 comes from its ``top_block`` at the receiver).

    Args: as :func:`vcm_eval.models.rcnn.build_zoo_model`.

    Raises:
        Detectron2UnavailableError: Detectron2 is not installed.
        WeightsError: the weights file is not configured or missing.
    """

    def __init__(self, zoo_name: str, weights: str | Path | None, min_size_test: int = 800,
                 max_size_test: int = 1333, device: str = "cpu"):
        ok, reason = detectron2_available()
        if not ok:
            raise Detectron2UnavailableError(
                f"the detectron2 backend needs Detectron2, which cannot be imported here ({reason}). It is on no "
                "package registry: build it from https://github.com/facebookresearch/detectron2 "
                "(pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'), "
                "or use vcm_eval's own implementation, _target_: vcm_eval.models.rcnn.build_zoo_model")
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        self.zoo = get_zoo_config(zoo_name).with_test_size(min_size_test, max_size_test)
        if weights is None or not Path(weights).is_file():
            where = "no weights file configured" if weights is None else f"weights file {weights} does not exist"
            raise WeightsError(f"{where}. For {self.zoo.zoo_name} fetch {self.zoo.weights_file} "
                               f"({self.zoo.weights_url}) and give its path as model.weights.")
        cfg = model_zoo.get_config(self.zoo.config_file)
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.MODEL.DEVICE = str(device)
        cfg.INPUT.MIN_SIZE_TEST = min_size_test
        cfg.INPUT.MAX_SIZE_TEST = max_size_test
        self.d2_cfg = cfg
        self.model = build_model(cfg).eval()
        DetectionCheckpointer(self.model).load(str(weights))
        self.aug = T.ResizeShortestEdge([min_size_test, min_size_test], max_size_test)
        self.input_format = cfg.INPUT.FORMAT
        self.weights_path = Path(weights)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.name = f"detectron2/{self.zoo.zoo_name}"
        self.class_names = self.zoo.class_names

    def _preprocess(self, image: np.ndarray) -> Any:
        """RGB uint8 picture -> Detectron2's normalised, padded ``ImageList``, as ``DefaultPredictor`` makes it."""
        check_image(image)
        picture = image[:, :, ::-1] if self.input_format == "BGR" else image
        height, width = picture.shape[:2]
        resized = self.aug.get_transform(picture).apply_image(picture)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return self.model.preprocess_image([{"image": tensor, "height": height, "width": width}])

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> SplitFeatures:
        images = self._preprocess(image)
        height, width = image.shape[:2]
        fpn = self.model.backbone
        res = fpn.bottom_up(images.tensor)
        layers = {f"c{k}": getattr(fpn, f"fpn_lateral{k}")(res[f"res{k}"])[0].cpu().numpy() for k in (2, 3, 4, 5)}
        meta = SplitMeta(original_size=(height, width), input_size=tuple(images.image_sizes[0]),
                         padded_size=tuple(images.tensor.shape[-2:]))
        return SplitFeatures(layers=layers, meta=meta)

    def _tensors(self, features: SplitFeatures) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        return {k: torch.as_tensor(np.asarray(features.layers[k], dtype=np.float32))[None].to(device)
                for k in SPLIT_LEVELS[split_of(features)]}

    def _p_tensors(self, c: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detectron2's FPN from the lateral outputs on: top-down sums, ``fpn_output*`` convs (p2..p5)."""
        fpn = self.model.backbone
        p = top_down(c, {f"p{k}": getattr(fpn, f"fpn_output{k}") for k in (2, 3, 4, 5)})
        return {k: p[k] for k in SPLIT_LEVELS["p"]}

    @torch.no_grad()
    def c_to_p(self, features: SplitFeatures) -> SplitFeatures:
        """C-layers -> P-layers ``p2..p5`` with Detectron2's own output convolutions (P6 left to the receiver)."""
        if split_of(features) != "c":
            raise ValueError(f"c_to_p takes C-layers, got levels {sorted(features.layers)}")
        p = self._p_tensors(self._tensors(features))
        return features.replace_layers({k: v[0].cpu().numpy() for k, v in p.items()})

    @torch.no_grad()
    def decode(self, features: SplitFeatures) -> Detections:
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import ImageList

        device = next(self.model.parameters()).device
        fpn = self.model.backbone
        x = self._tensors(features)
        p = self._p_tensors(x) if split_of(features) == "c" else x
        p["p6"] = fpn.top_block(p["p5"])[0]
        meta = features.meta
        # The RPN reads only image_sizes from the ImageList; anchors come from the feature shapes.
        images = ImageList(torch.zeros((1, 3, *meta.padded_size), device=device), [tuple(meta.input_size)])
        proposals, _ = self.model.proposal_generator(images, p, None)
        results, _ = self.model.roi_heads(images, p, proposals, None)
        out = detector_postprocess(results[0], meta.original_size[0], meta.original_size[1])
        masks = out.pred_masks.cpu().numpy() if out.has("pred_masks") else None
        return Detections(out.pred_boxes.tensor.cpu().numpy(), out.scores.cpu().numpy(),
                          out.pred_classes.cpu().numpy(), masks=masks)

    @torch.no_grad()
    def stage_arrays(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every stage of one unsplit Detectron2 run under the golden files' keys (see ``models/rcnn/parity.py``).

        C-layers are the outputs of ``fpn_lateral2..5``, the RPN's proposals come with their objectness
        logits, ``roi_cls_logits`` are the box predictor's class logits of every proposal, ``boxes_resized``
        the final boxes before they are scaled to the picture. Mask R-CNN configurations add ``mask_logits``
        (the mask predictor's output at each final instance's class, before the sigmoid) and ``pred_masks``
        ((N, H, W) bool, as ``DefaultPredictor`` returns them).
        """
        from detectron2.modeling.postprocessing import detector_postprocess

        images = self._preprocess(image)
        height, width = image.shape[:2]
        fpn = self.model.backbone
        captured: dict[str, torch.Tensor] = {}
        hooks = [getattr(fpn, f"fpn_lateral{k}").register_forward_hook(
            lambda _m, _i, out, k=k: captured.__setitem__(f"c{k}", out)) for k in (2, 3, 4, 5)]
        hooks.append(self.model.roi_heads.box_predictor.register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("roi_cls_logits", out[0])))
        mask_head = getattr(self.model.roi_heads, "mask_head", None) if self.zoo.mask_on else None
        if mask_head is not None:
            hooks.append(mask_head.predictor.register_forward_hook(
                lambda _m, _i, out: captured.__setitem__("mask_logits_all", out)))
        try:
            p = fpn(images.tensor)
            proposals, _ = self.model.proposal_generator(images, p, None)
            results, _ = self.model.roi_heads(images, p, proposals, None)
        finally:
            for hook in hooks:
                hook.remove()
        if "mask_logits_all" in captured:
            every = captured.pop("mask_logits_all")
            classes = results[0].pred_classes
            captured["mask_logits"] = every[torch.arange(len(classes), device=every.device), classes]
        out = {k: v.cpu().numpy() for k, v in captured.items()}
        out.update({k: v.cpu().numpy() for k, v in p.items()})
        out["proposal_boxes"] = proposals[0].proposal_boxes.tensor.cpu().numpy()
        out["proposal_logits"] = proposals[0].objectness_logits.cpu().numpy()
        out["boxes_resized"] = results[0].pred_boxes.tensor.cpu().numpy().copy()  # postprocess scales in place
        final = detector_postprocess(results[0], height, width)
        out.update(pred_boxes=final.pred_boxes.tensor.cpu().numpy(), scores=final.scores.cpu().numpy(),
                   pred_classes=final.pred_classes.cpu().numpy())
        if final.has("pred_masks"):
            out["pred_masks"] = final.pred_masks.cpu().numpy()
        return out

    def identity(self) -> dict:
        return {
            "family": "detectron2-mask-rcnn-fpn" if self.zoo.mask_on else "detectron2-faster-rcnn-fpn",
            "implementation": "detectron2",
            "detectron2_version": detectron2_available()[1],
            "zoo_name": self.zoo.zoo_name,
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "min_size_test": self.zoo.min_size_test,
            "max_size_test": self.zoo.max_size_test,
            "device": str(self.d2_cfg.MODEL.DEVICE),
        }
