"""COCO-style detection and instance segmentation mAP with pycocotools.

Detections come as ``{image_id: Detections}`` whose ``classes`` index the *model's* class list; the
evaluator maps each model class to the dataset category of the same name (model classes the dataset
lacks are dropped), converts boxes to COCO ``[x, y, w, h]`` and runs ``COCOeval`` on the dataset's
images only. pycocotools' printing is captured and sent to the ``logging`` module at DEBUG level.

With ``iou_type="segm"`` (the CTC's ``task: segmentation``) it scores the detections' instance masks as
well: ``COCOeval(iouType="segm")``, where a detection matches a ground-truth object by the IoU of their
masks, ``|M_d & M_g| / |M_d | M_g|``, instead of their boxes; both the mask metrics (``segm_map_*``, the
headline ``segm_map_50``) and the box metrics (``map_*``) of the same detections are reported.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from vcm_eval.data.base import DetectionEvaluator
from vcm_eval.errors import SettingError
from vcm_eval.types import Detections

log = logging.getLogger(__name__)

#: ``COCOeval.stats`` index -> metric name (bbox, maxDets 100 unless named).
STAT_NAMES: tuple[str, ...] = (
    "map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)


#: prefix of the mask metrics' names (``segm_map_50`` ...), beside the box metrics' (``map_50`` ...).
SEGM_PREFIX = "segm_"

#: ``iou_type`` -> the name of its headline metric.
HEADLINES: dict[str, str] = {"bbox": "map_50", "segm": SEGM_PREFIX + "map_50"}


def class_to_category(class_names: Sequence[str], categories: Sequence[Mapping]) -> dict[int, int]:
    """Model class index -> dataset category id, matched by exact name.

    Raises:
        ValueError: when no model class name is a dataset category (a wrong model/dataset pairing).
    """
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    mapping = {i: by_name[n] for i, n in enumerate(class_names) if n in by_name}
    if not mapping:
        raise SettingError(f"none of the model's classes {list(class_names)[:8]}... is a dataset category "
                         f"{sorted(by_name)[:8]}...; this model was not trained for this dataset's labels")
    return mapping


def to_coco_results(detections: Mapping[int, Detections], mapping: Mapping[int, int]) -> list[dict]:
    """COCO results list: one ``{image_id, category_id, bbox: [x0, y0, x1-x0, y1-y0], score}`` per box
    whose class has a category; ``detections`` is keyed by the integer COCO image id."""
    out = []
    for image_id, dets in detections.items():
        for box, score, cls in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist()):
            cat = mapping.get(int(cls))
            if cat is None:
                continue
            x0, y0, x1, y1 = box
            out.append({"image_id": int(image_id), "category_id": cat,
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    return out


def to_coco_segm_results(detections: Mapping[int, Detections], mapping: Mapping[int, int]) -> list[dict]:
    """COCO segmentation results: one ``{image_id, category_id, segmentation: RLE, score}`` per detection whose
    class has a category. No ``bbox``: pycocotools then takes each result's area from its mask (the area
    ranges of ``segm_map_small/medium/large``), not from its box.

    Raises:
        ValueError: naming the image, when detections of a picture carry no masks (a box-only model).
    """
    out = []
    for image_id, dets in detections.items():
        if not len(dets):
            continue
        rles = dets.mask_rles()
        if rles is None:
            raise SettingError(f"detections of image {image_id} have no instance masks: segmentation scoring "
                             "(ctc.task=segmentation) needs a model with a mask head (the embedded model has one "
                             "under ctc.task=segmentation, Detectron2's under model=mask_rcnn_*)")
        for rle, score, cls in zip(rles, dets.scores.tolist(), dets.classes.tolist()):
            cat = mapping.get(int(cls))
            if cat is None:
                continue
            out.append({"image_id": int(image_id), "category_id": cat, "segmentation": dict(rle),
                        "score": float(score)})
    return out


def check_mask_annotations(ground_truth: Mapping, image_ids: Sequence[int], source: str) -> None:
    """Check that every annotation of the pictures ``image_ids`` has a usable mask (``segmentation``: polygons
    or an RLE of its picture's size, see :func:`vcm_eval.data.masks.check_segmentation`).

    Raises:
        ValueError: naming ``source`` (the annotation file), the annotation id, its picture and what is wrong.
    """
    from vcm_eval.data.masks import check_segmentation

    wanted = {int(i) for i in image_ids}
    sizes = {int(im["id"]): (im.get("height"), im.get("width")) for im in ground_truth.get("images", [])}
    for ann in ground_truth.get("annotations", []):
        image_id = int(ann.get("image_id", -1))
        if image_id not in wanted:
            continue
        what = f"{source}: annotation {ann.get('id')!r} (image {image_id})"
        height, width = sizes.get(image_id, (None, None))
        if not isinstance(height, int) or not isinstance(width, int):
            raise SettingError(f"{source}: image {image_id} has no integer height and width, which its masks need")
        if "segmentation" not in ann:
            raise SettingError(f"{what} has no 'segmentation'; segmentation scoring needs a mask for every object "
                             "(for the synthetic set: dataset.task=segmentation writes them)")
        problem = check_segmentation(ann["segmentation"], height, width)
        if problem:
            raise SettingError(f"{what}: corrupt mask: {problem}")


class CocoEvaluator(DetectionEvaluator):
    """Bounding-box (and instance-mask) mAP of a COCO-format ground truth, via pycocotools.

    Args:
        ground_truth: the COCO annotation document (``images``, ``annotations``, ``categories``).
        image_ids: the integer ids of the evaluated pictures (a subset of the document's images).
        class_names: the model's class index -> name.
        iou_type: ``"bbox"`` (detection) or ``"segm"`` (instance segmentation: every annotation of the
            evaluated pictures needs a mask, checked here; every detection needs one too).
        source: what the ground truth was read from (the annotation file), named in errors.

    ``evaluate`` returns fractions: ``map_50`` (the headline, AP at IoU 0.5), ``map_50_95``
    (AP averaged over IoU 0.50:0.05:0.95), ``map_75``, ``map_small/medium/large``, ``mar_*``, and
    ``num_detections``. A metric pycocotools cannot define (no ground truth in an area range) is NaN.
    An empty detection set scores 0. With ``iou_type="segm"`` the same metrics of the masks come as well,
    prefixed ``segm_`` (``segm_map_50``, the headline, ``segm_map_50_95`` ...).

    Example::

        >>> ev = CocoEvaluator(gt_doc, [1, 2], ["disc", "square"])
        >>> ev.evaluate({"1": dets_1, "2": dets_2})["map_50"]
    """

    headline = "map_50"

    def __init__(self, ground_truth: Mapping, image_ids: Sequence[int], class_names: Sequence[str],
                 iou_type: str = "bbox", source: str = "ground truth") -> None:
        from pycocotools.coco import COCO

        if iou_type not in HEADLINES:
            raise ValueError(f"iou_type must be one of {sorted(HEADLINES)}, got {iou_type!r}")
        self.iou_type = iou_type
        self.headline = HEADLINES[iou_type]
        self.class_names = list(class_names)
        self.image_ids = [int(i) for i in image_ids]
        self.mapping = class_to_category(self.class_names, ground_truth.get("categories", []))
        known = {int(im["id"]) for im in ground_truth.get("images", [])}
        unknown = [i for i in self.image_ids if i not in known]
        if unknown:
            raise ValueError(f"image ids {unknown[:5]} are not in the ground truth")
        if iou_type == "segm":
            check_mask_annotations(ground_truth, self.image_ids, source)
        self._coco = COCO()
        self._coco.dataset = copy.deepcopy(dict(ground_truth))
        self._coco.dataset.setdefault("annotations", [])
        with _captured("COCO.createIndex"):
            self._coco.createIndex()

    def evaluate(self, detections: Mapping[str, Detections]) -> dict[str, float]:
        wanted = set(self.image_ids)
        by_id: dict[int, Detections] = {}
        for key, dets in detections.items():
            image_id = int(key)
            if image_id not in wanted:
                raise ValueError(f"detections for image id {key!r}, which is not in the evaluated set")
            by_id[image_id] = dets
        results = to_coco_results(by_id, self.mapping)
        metrics = self._score(results, "bbox")
        if self.iou_type == "segm":
            segm = self._score(to_coco_segm_results(by_id, self.mapping), "segm")
            metrics.update({SEGM_PREFIX + name: value for name, value in segm.items() if name in STAT_NAMES})
        metrics["num_detections"] = float(len(results))
        return metrics

    def _score(self, results: list[dict], iou_type: str) -> dict[str, float]:
        """``COCOeval.stats`` of ``results`` by :data:`STAT_NAMES`; all 0 for no results."""
        if not results or not self.image_ids:
            # COCO.loadRes rejects an empty list; nothing detected is an AP of 0, not an error.
            return {name: 0.0 for name in STAT_NAMES}

        from pycocotools.cocoeval import COCOeval

        with _captured("COCOeval"):
            dt = self._coco.loadRes(results)
            ev = COCOeval(self._coco, dt, iouType=iou_type)
            ev.params.imgIds = sorted(self.image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {name: (float("nan") if v < 0 else float(v)) for name, v in zip(STAT_NAMES, ev.stats)}


@contextlib.contextmanager
def _captured(what: str):
    """Run pycocotools quietly; its printout goes to the log at DEBUG level."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue().strip()
    if text:
        log.debug("%s: %s", what, text)


def ground_truth_as_detections(ground_truth: Mapping, class_names: Sequence[str]) -> dict[str, Detections]:
    """The ground-truth boxes as score-1 detections keyed by image id string (a sanity check: mAP 1)."""
    name_of = {int(c["id"]): str(c["name"]) for c in ground_truth["categories"]}
    index_of = {n: i for i, n in enumerate(class_names)}
    per_image: dict[int, list[tuple[list[float], int]]] = {int(im["id"]): [] for im in ground_truth["images"]}
    for ann in ground_truth["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        per_image[int(ann["image_id"])].append(([x, y, x + w, y + h], index_of[name_of[int(ann["category_id"])]]))
    out = {}
    for image_id, items in per_image.items():
        boxes = np.asarray([b for b, _ in items], dtype=np.float32).reshape(-1, 4)
        out[str(image_id)] = Detections(boxes, np.ones(len(items)), np.asarray([c for _, c in items]))
    return out
