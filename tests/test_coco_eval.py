"""CocoEvaluator: sanity cases and small hand-computed APs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcm_eval.data.synthetic import CLASS_NAMES, write_split
from vcm_eval.evaluation.coco import CocoEvaluator, class_to_category, ground_truth_as_detections
from vcm_eval.types import Detections


def _doc(boxes_by_image: dict[int, list[tuple[list[float], int]]], categories=("a", "b")) -> dict:
    """COCO document; boxes are (x0, y0, x1, y1) with a category id."""
    anns = []
    for image_id, items in boxes_by_image.items():
        for (x0, y0, x1, y1), cat in items:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in boxes_by_image],
            "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}


def _dets(rows: list[tuple[list[float], float, int]]) -> Detections:
    if not rows:
        return Detections.empty()
    return Detections(np.asarray([r[0] for r in rows]), np.asarray([r[1] for r in rows]),
                      np.asarray([r[2] for r in rows]))


def test_ground_truth_as_detections_scores_one(tmp_path):
    folder = write_split(tmp_path / "val", seed=0, split="val", size=6)
    import json

    doc = json.loads((folder / "annotations.json").read_text())
    ev = CocoEvaluator(doc, [im["id"] for im in doc["images"]], CLASS_NAMES)
    m = ev.evaluate(ground_truth_as_detections(doc, CLASS_NAMES))
    assert m["map_50"] == pytest.approx(1.0) and m["map_50_95"] == pytest.approx(1.0)
    assert m["num_detections"] == len(doc["annotations"])


def test_empty_detections_score_zero(capsys):
    doc = _doc({1: [([0, 0, 10, 10], 1)], 2: [([5, 5, 50, 50], 2)]})
    ev = CocoEvaluator(doc, [1, 2], ["a", "b"])
    for dets in ({}, {"1": Detections.empty(), "2": Detections.empty()}):
        m = ev.evaluate(dets)
        assert m["map_50"] == 0.0 and m["map_50_95"] == 0.0 and m["num_detections"] == 0
    assert capsys.readouterr().out == ""


def test_hand_computed_precision_recall_curve(capsys):
    # Two ground-truth boxes; detections TP (0.9), FP (0.8), TP (0.7). Precision/recall after each:
    # (1, 1/2), (1/2, 1/2), (2/3, 1). COCO interpolates precision as the max at recall >= r and samples
    # 101 recall points 0, 0.01, ..., 1: the 51 points r <= 0.5 get 1, the 50 points r > 0.5 get 2/3.
    doc = _doc({1: [([0, 0, 10, 10], 1), ([20, 20, 30, 30], 1)]})
    dets = _dets([([0, 0, 10, 10], 0.9, 0), ([50, 50, 60, 60], 0.8, 0), ([20, 20, 30, 30], 0.7, 0)])
    m = CocoEvaluator(doc, [1], ["a", "b"]).evaluate({"1": dets})
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert m["map_50"] == pytest.approx(expected, abs=1e-9)
    assert m["map_50_95"] == pytest.approx(expected, abs=1e-9)  # IoUs are exactly 1 or 0
    assert m["map_small"] == pytest.approx(expected, abs=1e-9)  # 10x10 boxes are COCO "small"
    assert math.isnan(m["map_large"])  # no large ground truth: undefined, not 0
    assert capsys.readouterr().out == ""


def test_hand_computed_iou_thresholds():
    # IoU of (0,0,10,16) with (0,0,10,10) is 100/160 = 0.625: a hit at thresholds 0.50, 0.55, 0.60 and
    # a miss at 0.65..0.95, so AP@[.5:.95] = 3/10 while AP@0.5 = 1 and AP@0.75 = 0.
    doc = _doc({1: [([0, 0, 10, 10], 2)]})
    m = CocoEvaluator(doc, [1], ["a", "b"]).evaluate({"1": _dets([([0, 0, 10, 16], 0.5, 1)])})
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == pytest.approx(0.0)
    assert m["map_50_95"] == pytest.approx(0.3)


def test_classes_map_to_categories_by_name():
    doc = _doc({1: [([0, 0, 10, 10], 1)], 2: [([0, 0, 30, 30], 2)]})
    # Model order differs from category ids, and the model knows a class the data set lacks.
    names = ["b", "zebra", "a"]
    assert class_to_category(names, doc["categories"]) == {0: 2, 2: 1}
    dets = {"1": _dets([([0, 0, 10, 10], 0.9, 2), ([40, 40, 60, 60], 0.95, 1)]),
            "2": _dets([([0, 0, 30, 30], 0.8, 0)])}
    m = CocoEvaluator(doc, [1, 2], names).evaluate(dets)
    assert m["map_50"] == pytest.approx(1.0)  # the "zebra" box is dropped, not counted as a false positive
    assert m["num_detections"] == 2
    # The same boxes with the classes swapped are all wrong.
    wrong = {"1": _dets([([0, 0, 10, 10], 0.9, 0)]), "2": _dets([([0, 0, 30, 30], 0.8, 2)])}
    assert CocoEvaluator(doc, [1, 2], names).evaluate(wrong)["map_50"] == pytest.approx(0.0)


def test_subset_of_images_is_evaluated_alone():
    doc = _doc({1: [([0, 0, 10, 10], 1)], 2: [([0, 0, 30, 30], 1)]})
    ev = CocoEvaluator(doc, [1], ["a", "b"])
    assert ev.evaluate({"1": _dets([([0, 0, 10, 10], 0.9, 0)])})["map_50"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the evaluated set"):
        ev.evaluate({"2": _dets([([0, 0, 30, 30], 0.9, 0)])})


def test_bad_pairings_are_clear_errors():
    doc = _doc({1: [([0, 0, 10, 10], 1)]})
    with pytest.raises(ValueError, match="not trained for this dataset"):
        CocoEvaluator(doc, [1], ["person", "car"])
    with pytest.raises(ValueError, match="not in the ground truth"):
        CocoEvaluator(doc, [1, 9], ["a"])
