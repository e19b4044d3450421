"""COCO-style detection mAP with pycocotools.

Detections come as ``{image_id: Detections}`` whose ``classes`` index the *model's* class list; the
evaluator maps each model class to the dataset category of the same name (model classes the dataset
lacks are dropped), converts boxes to COCO ``[x, y, w, h]`` and runs ``COCOeval`` on the dataset's
images only. pycocotools' printing is captured and sent to the ``logging`` module at DEBUG level.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from vcm_eval.data.base import DetectionEvaluator
from vcm_eval.types import Detections

log = logging.getLogger(__name__)

#: ``COCOeval.stats`` index -> metric name (bbox, maxDets 100 unless named).
STAT_NAMES: tuple[str, ...] = (
    "map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)


def class_to_category(class_names: Sequence[str], categories: Sequence[Mapping]) -> dict[int, int]:
    """Model class index -> dataset category id, matched by exact name.

    Raises:
        ValueError: when no model class name is a dataset category (a wrong model/dataset pairing).
    """
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    mapping = {i: by_name[n] for i, n in enumerate(class_names) if n in by_name}
    if not mapping:
        raise ValueError(f"none of the model's classes {list(class_names)[:8]}... is a dataset category "
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


class CocoEvaluator(DetectionEvaluator):
    """Bounding-box mAP of a COCO-format ground truth, via pycocotools.

    Args:
        ground_truth: the COCO annotation document (``images``, ``annotations``, ``categories``).
        image_ids: the integer ids of the evaluated pictures (a subset of the document's images).
        class_names: the model's class index -> name.

    ``evaluate`` returns fractions: ``map_50`` (the headline, AP at IoU 0.5), ``map_50_95``
    (AP averaged over IoU 0.50:0.05:0.95), ``map_75``, ``map_small/medium/large``, ``mar_*``, and
    ``num_detections``. A metric pycocotools cannot define (no ground truth in an area range) is NaN.
    An empty detection set scores 0.

    Example::

        >>> ev = CocoEvaluator(gt_doc, [1, 2], ["disc", "square"])
        >>> ev.evaluate({"1": dets_1, "2": dets_2})["map_50"]
    """

    headline = "map_50"

    def __init__(self, ground_truth: Mapping, image_ids: Sequence[int], class_names: Sequence[str]) -> None:
        from pycocotools.coco import COCO

        self.class_names = list(class_names)
        self.image_ids = [int(i) for i in image_ids]
        self.mapping = class_to_category(self.class_names, ground_truth.get("categories", []))
        known = {int(im["id"]) for im in ground_truth.get("images", [])}
        unknown = [i for i in self.image_ids if i not in known]
        if unknown:
            raise ValueError(f"image ids {unknown[:5]} are not in the ground truth")
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
        num = len(results)
        if not results or not self.image_ids:
            # COCO.loadRes rejects an empty list; nothing detected is an AP of 0, not an error.
            return {**{name: 0.0 for name in STAT_NAMES}, "num_detections": 0.0}

        from pycocotools.cocoeval import COCOeval

        with _captured("COCOeval"):
            dt = self._coco.loadRes(results)
            ev = COCOeval(self._coco, dt, iouType="bbox")
            ev.params.imgIds = sorted(self.image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics = {name: (float("nan") if v < 0 else float(v)) for name, v in zip(STAT_NAMES, ev.stats)}
        metrics["num_detections"] = float(num)
        return metrics


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
