"""The Open Images Challenge metric against the TF reference's golden numbers, plus edge cases.

Golden data: ``../shared/golden/openimages`` (made with the real TF Object Detection API; its README
describes every case). Tolerance 1e-9, as the README asks.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from vcm_eval.evaluation import openimages as M
from vcm_eval.evaluation import openimages_files as F

TOL = 1e-9


def _golden(case: str, name: str):
    return shared_path("golden", "openimages", case, name)


def _expected(case: str) -> dict:
    return json.loads(_golden(case, "expected_metrics.json").read_text())["results"]


def _assert_matches(result: M.ChallengeResult, cats: list[F.Category], expected: dict) -> None:
    assert abs(result.mean_ap - expected["mAP"]) <= TOL
    for c in cats:
        want = expected["per_class_AP"][c.name]
        got = result.average_precision[c.id - 1]
        if want is None:
            assert np.isnan(got), c
        else:
            assert abs(got - want) <= TOL, (c, got, want)
        assert result.num_gt_instances[c.id - 1] == expected["num_gt_instances"][c.name]


def _evaluate_expanded(case: str, iou: float, tie_order: str = "later_first") -> tuple[M.ChallengeResult, list]:
    cats = F.read_labelmap(_golden(case, "labelmap.pbtxt"))
    boxes = F.read_gt_boxes(_golden(case, "gt_boxes_expanded.csv"), duplicates="keep")
    labels = F.read_image_labels(_golden(case, "gt_image_labels_expanded.csv"))
    dets = F.read_detections(_golden(case, "detections.csv"))
    return M.evaluate_tables(boxes, labels, dets, cats, iou_threshold=iou, tie_order=tie_order), cats


def _evaluate_unexpanded(case: str, iou: float) -> tuple[M.ChallengeResult, list]:
    cats = F.read_labelmap(_golden(case, "labelmap.pbtxt"))
    hierarchy = F.LabelHierarchy.from_file(_golden(case, "hierarchy.json"))
    boxes = F.expand_boxes(F.read_gt_boxes(_golden(case, "gt_boxes.csv")), hierarchy)
    labels = F.expand_image_labels(F.read_image_labels(_golden(case, "gt_image_labels.csv")), hierarchy)
    dets = F.read_detections(_golden(case, "detections.csv"))
    return M.evaluate_tables(boxes, labels, dets, cats, iou_threshold=iou), cats


# ---------------------------------------------------------------------------------------------
# Golden cases


@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_main_case_from_reference_expanded_files(iou):
    result, cats = _evaluate_expanded("main", iou)
    _assert_matches(result, cats, _expected("main")[f"iou_{iou}"])


@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_main_case_with_our_hierarchy_expansion(iou):
    result, cats = _evaluate_unexpanded("main", iou)
    _assert_matches(result, cats, _expected("main")[f"iou_{iou}"])


@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_main_case_internals_match_reference_details(iou):
    """Per-image scored entries (order included), and the precision/recall arrays behind each AP."""
    details = json.loads(_golden("main", "expected_details.json").read_text())[str(iou)]["details"]
    result, cats = _evaluate_expanded("main", iou)
    for c in cats:
        d = details[c.name]
        k = c.id - 1
        assert result.num_gt_images[k] == d["num_gt_images"], c
        got_entries = [{"image_id": i, "scores": e[k][0].tolist(), "tp": e[k][1].tolist()}
                       for i, e in result.entries.items() if k in e and len(e[k][0])]
        assert got_entries == d["per_image_scored_entries"], c
        if d["precision"] is None:
            assert result.precision[k] is None
        else:
            np.testing.assert_allclose(result.precision[k], d["precision"], rtol=0, atol=1e-12)
            np.testing.assert_allclose(result.recall[k], d["recall"], rtol=0, atol=1e-12)


def test_main_case_is_tie_order_invariant():
    """The README: main has no TP tied with an FP, so both tie orders give its numbers."""
    result, cats = _evaluate_expanded("main", 0.5, tie_order="earlier_first")
    _assert_matches(result, cats, _expected("main")["iou_0.5"])


def test_ties_case_default_order_and_the_opposite():
    expected = json.loads(_golden("ties", "expected_metrics.json").read_text())
    default, cats = _evaluate_expanded("ties", 0.5)
    _assert_matches(default, cats, {**expected["results"]["iou_0.5"]})
    alternatives = expected["tie_order"]["alternatives"]
    for order in ("later_first", "earlier_first"):
        result, _ = _evaluate_expanded("ties", 0.5, tie_order=order)
        want = alternatives[order]["iou_0.5"]
        assert abs(result.mean_ap - want["mAP"]) <= TOL, order
        for c in cats:
            w = want["per_class_AP"][c.name]
            got = result.average_precision[c.id - 1]
            assert (np.isnan(got) if w is None else abs(got - w) <= TOL), (order, c)
    assert abs(default.mean_ap - 0.16666666666666666) <= TOL


def test_ties_case_with_our_hierarchy_expansion():
    result, cats = _evaluate_unexpanded("ties", 0.5)
    _assert_matches(result, cats, _expected("ties")["iou_0.5"])


@pytest.mark.parametrize("case", ["main", "ties", "mpeg_vcm"])
def test_reference_rows_equal_the_tf_cli_csv(case):
    """Names, order and values of the reference CLI's CSV (mpeg_vcm: flat labels, no hierarchy)."""
    if case == "mpeg_vcm":
        boxes = F.read_gt_boxes(_golden(case, "gt_boxes.csv"))
        labels = F.read_image_labels(_golden(case, "gt_image_labels.csv"))
        cats = F.read_labelmap(_golden(case, "labelmap.pbtxt"))
        result = M.evaluate_tables(boxes, labels, F.read_detections(_golden(case, "detections.csv")), cats)
    else:
        result, cats = _evaluate_expanded(case, 0.5)
    got = M.reference_rows(result, cats, 0.5)
    want = F.read_metrics_csv(_golden(case, "tf_cli_metrics_iou0.5.csv"))
    assert [n for n, _ in got] == [n for n, _ in want]
    for (name, g), (_, w) in zip(got, want):
        assert (np.isnan(g) and np.isnan(w)) or abs(g - w) <= TOL, name


def test_mpeg_vcm_case_label_map_is_the_sorted_ground_truth_labels():
    """Why the dataset entry's class list (sorted GT labels) reproduces the reference's per-class rows."""
    boxes = F.read_gt_boxes(_golden("mpeg_vcm", "gt_boxes.csv"))
    labels = F.read_image_labels(_golden("mpeg_vcm", "gt_image_labels.csv"))
    derived = F.categories_from_labels(list(boxes.LabelName) + list(labels.LabelName))
    assert [(c.id, c.name) for c in derived] == [(c.id, c.name) for c in
                                                 F.read_labelmap(_golden("mpeg_vcm", "labelmap.pbtxt"))]


# ---------------------------------------------------------------------------------------------
# Pure functions


def test_iou_ioa_and_area_formulas():
    det = np.array([[0.0, 0.0, 0.5, 1.0]])
    gt = np.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.0, 0.75, 1.0], [0.6, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(M.box_areas(gt), [1.0, 0.5, 0.4])
    np.testing.assert_array_equal(M.pairwise_intersection(det, gt), [[0.5, 0.25, 0.0]])
    # IoU = inter / (0.5 + area_gt - inter)
    np.testing.assert_array_equal(M.pairwise_iou(det, gt), [[0.5 / 1.0, 0.25 / 0.75, 0.0]])
    # IoA divides by the detection's area only
    np.testing.assert_array_equal(M.pairwise_ioa(det, gt), [[1.0, 0.5, 0.0]])


def test_descending_order_tie_rules():
    scores = np.array([0.5, 0.9, 0.5, 0.7, 0.9])
    assert M.descending_order(scores).tolist() == [4, 1, 3, 2, 0]
    assert M.descending_order(scores, "earlier_first").tolist() == [1, 4, 3, 0, 2]
    with pytest.raises(ValueError):
        M.descending_order(scores, "random")


def test_voc_average_precision_by_hand():
    # ranked: TP, FP, TP with 2 GT -> precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
    p, r = M.precision_recall(np.array([0.9, 0.8, 0.7]), np.array([1.0, 0.0, 1.0]), 2)
    np.testing.assert_allclose(p, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r, [0.5, 0.5, 1])
    # envelope: 1 up to recall 1/2, then 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert M.average_precision(p, r) == pytest.approx(0.5 + 1 / 3, abs=1e-15)
    assert M.average_precision(np.zeros(0), np.zeros(0)) == 0.0
    with pytest.raises(ValueError):
        M.precision_recall(np.array([0.9, 0.8]), np.array([1.0, 1.0]), 1)


def test_nan_mean_leaves_out_nan_and_is_nan_when_empty():
    assert M.nan_mean(np.array([np.nan, 0.5, 1.0])) == 0.75
    assert np.isnan(M.nan_mean(np.array([np.nan])))


# ---------------------------------------------------------------------------------------------
# Edge cases (our own; expected values worked out by hand in each docstring)


def _single(boxes, classes=None, group=None, labels=()):
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    classes = np.zeros(len(boxes), dtype=int) if classes is None else classes
    group = np.zeros(len(boxes), dtype=bool) if group is None else group
    return M.ImageGroundTruth(boxes, classes, group, np.asarray(labels, dtype=int))


def _run(images: dict, num_classes: int = 2, iou: float = 0.5, tie_order: str = "later_first") -> M.ChallengeResult:
    metric = M.ChallengeMetric(num_classes, iou_threshold=iou, tie_order=tie_order)
    for image_id, (gt, dets) in images.items():
        boxes, scores, classes = dets if dets else (np.zeros((0, 4)), [], [])
        metric.add_image(image_id, gt, boxes=boxes, scores=scores, classes=classes)
    return metric.result()


def test_image_with_labels_but_no_boxes():
    """Image b has only a positive label of class 0: its class-0 detection is an FP (AP 1/2 by hand:
    FP ranked first at 0.9, then the TP of image a at 0.8 -> precision [0, 1/2], recall [0, 1])."""
    box = [0.1, 0.1, 0.4, 0.4]
    result = _run({"a": (_single([box]), ([box], [0.8], [0])),
                   "b": (_single([], labels=[0]), ([box], [0.9], [0]))})
    assert result.average_precision[0] == 0.5
    assert result.num_gt_instances[0] == 1


def test_image_with_boxes_and_no_detections_counts_its_instances():
    box = [0.1, 0.1, 0.4, 0.4]
    result = _run({"a": (_single([box]), ([box], [0.8], [0])), "b": (_single([box]), None)})
    assert result.num_gt_instances[0] == 2
    assert result.average_precision[0] == 0.5  # one of two found, precision 1


def test_class_present_only_as_negative_label():
    """Class 1 is verified absent on image a: its detection there is an FP, but with no box of class 1
    anywhere its AP is NaN and the mAP is class 0's alone."""
    box = [0.1, 0.1, 0.4, 0.4]
    gt = _single([box], labels=[1])
    result = _run({"a": (gt, ([box, box], [0.9, 0.8], [0, 1]))})
    assert np.isnan(result.average_precision[1])
    assert result.mean_ap == 1.0
    assert result.entries["a"][1][1].tolist() == [0.0]  # the FP entry exists, it just has no class AP


def test_unverified_class_detections_are_dropped_not_false_positives():
    box = [0.1, 0.1, 0.4, 0.4]
    gt = _single([box])  # only class 0 verified
    result = _run({"a": (gt, ([box, [0.5, 0.5, 0.9, 0.9]], [0.8, 0.99], [0, 1]))})
    assert result.average_precision[0] == 1.0
    assert result.counts["detections_unverified"] == 1
    assert 1 not in result.entries["a"]


@pytest.mark.parametrize("threshold, tp", [(0.5, 1.0), (np.nextafter(0.5, 1), 0.0)])
def test_iou_exactly_half_is_a_match(threshold, tp):
    """GT x in [0, 0.5], detection x in [0, 0.25], full height: IoU = 0.25 / 0.5 = 0.5 exactly in binary."""
    result = _run({"a": (_single([[0.0, 0.0, 0.5, 1.0]]), ([[0.0, 0.0, 0.25, 1.0]], [0.9], [0]))}, iou=threshold)
    assert result.entries["a"][0][1].tolist() == [tp]


def test_ioa_exactly_half_matches_a_group_of_box():
    """Detection x in [0.25, 0.75] over group box x in [0, 0.5]: IoA = 0.25 / 0.5 = 0.5 -> one group TP."""
    gt = _single([[0.0, 0.0, 0.5, 1.0]], group=np.array([True]))
    result = _run({"a": (gt, ([[0.25, 0.0, 0.75, 1.0]], [0.7], [0]))})
    assert result.entries["a"][0][0].tolist() == [0.7]
    assert result.entries["a"][0][1].tolist() == [1.0]


def test_score_ties_across_images_follow_the_reference_order():
    """One GT (image a). Image a's TP and image b's FP both score 0.8. Entries are concatenated in
    ImageID order (a, b); "later first" ranks b's FP first -> precision [0, 1/2] -> AP 1/2.
    "earlier first" ranks the TP first -> precision [1, 1/2] -> AP 1."""
    box = [0.1, 0.1, 0.4, 0.4]
    images = {"b": (_single([], labels=[0]), ([box], [0.8], [0])), "a": (_single([box]), ([box], [0.8], [0]))}
    assert _run(images).average_precision[0] == 0.5
    assert _run(images, tie_order="earlier_first").average_precision[0] == 1.0


def test_score_ties_inside_an_image_later_row_matches_first():
    """Two tied detections on one box: the later row takes the box (TP), the earlier is the duplicate."""
    box = [0.1, 0.1, 0.4, 0.4]
    near = [0.1, 0.1, 0.4, 0.39]
    result = _run({"a": (_single([box]), ([box, near], [0.8, 0.8], [0, 0]))})
    scores, tp = result.entries["a"][0]
    assert tp.tolist() == [1.0, 0.0]  # rank order: row 1 (near) first, it is the TP


def test_no_fall_back_to_the_second_best_box():
    """Det 1 (score 0.9) takes box A. Det 2's best IoU is with A (taken) -> FP, though box B is free."""
    a, b = [0.0, 0.0, 0.4, 1.0], [0.45, 0.0, 0.85, 1.0]
    d2 = [0.1, 0.0, 0.5, 1.0]  # IoU with A = 0.3/0.5 = 0.6, with B = 0.05/0.75
    result = _run({"a": (_single([a, b]), ([a, d2], [0.9, 0.8], [0, 0]))})
    assert result.entries["a"][0][1].tolist() == [1.0, 0.0]


def test_group_of_box_matched_only_by_zero_scores_counts_as_missed():
    gt = _single([[0.0, 0.0, 1.0, 1.0]], group=np.array([True]))
    result = _run({"a": (gt, ([[0.1, 0.1, 0.2, 0.2]], [0.0], [0]))})
    assert result.entries["a"][0][0].size == 0  # no entry: the detection vanished, the group is missed
    assert result.average_precision[0] == 0.0


def test_nested_group_of_boxes_credit_only_the_first_best():
    """Detections equal to the inner of two nested group boxes have IoA 1 with both; argmax takes the
    first box (the outer one here), so the inner group stays unmatched: AP = 1/2 (precision 1, recall 1/2)."""
    outer, inner = [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4]
    gt = _single([outer, inner], group=np.array([True, True]))
    result = _run({"a": (gt, ([inner], [0.6], [0]))})
    assert result.average_precision[0] == 0.5


def test_invalid_low_score_and_capped_detections_are_dropped_and_counted():
    box = [0.1, 0.1, 0.4, 0.4]
    dets = ([box, [0.3, 0.1, 0.3, 0.4], [0.4, 0.1, 0.1, 0.4], box], [0.5, 0.9, 0.9, -10.0], [0, 0, 0, 0])
    result = _run({"a": (_single([box]), dets)})
    assert result.entries["a"][0][1].tolist() == [1.0]
    assert result.counts["detections_invalid_box"] == 2
    assert result.counts["detections_low_score"] == 1


def test_more_than_ten_thousand_detections_of_a_class_keeps_the_best():
    """10,000 FPs at 0.9 fill the cap, so the TP at 0.1 is cut: AP 0 (it would be 1/10001 uncapped)."""
    n = M.MAX_DETECTIONS_PER_CLASS
    fps = np.tile([0.8, 0.8, 0.81, 0.81], (n, 1))
    boxes = np.vstack([fps, [[0.1, 0.1, 0.4, 0.4]]])
    scores = np.concatenate([np.full(n, 0.9), [0.1]])
    result = _run({"a": (_single([[0.1, 0.1, 0.4, 0.4]]), (boxes, scores, np.zeros(n + 1, dtype=int)))})
    assert result.average_precision[0] == 0.0
    assert result.counts["detections_over_cap"] == 1


def test_detections_on_images_without_ground_truth_are_ignored():
    boxes = pd.DataFrame({"ImageID": ["a"], "LabelName": ["x"], "XMin": [0.1], "XMax": [0.4], "YMin": [0.1],
                          "YMax": [0.4], "IsGroupOf": [False]})
    labels = pd.DataFrame({"ImageID": pd.Series([], dtype=object), "LabelName": pd.Series([], dtype=object),
                           "Confidence": pd.Series([], dtype=int)})
    dets = pd.DataFrame({"ImageID": ["a", "z"], "LabelName": ["x", "x"], "Score": [0.5, 0.9], "XMin": [0.1, 0.1],
                         "XMax": [0.4, 0.4], "YMin": [0.1, 0.1], "YMax": [0.4, 0.4]})
    result = M.evaluate_tables(boxes, labels, dets, [F.Category(1, "x")])
    assert result.mean_ap == 1.0
    assert result.counts["detections_on_images_without_gt"] == 1


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="iou_threshold"):
        M.ChallengeMetric(2, iou_threshold=0.0)
    metric = M.ChallengeMetric(1)
    gt = _single([[0.1, 0.1, 0.4, 0.4]])
    with pytest.raises(ValueError, match="class index"):
        metric.add_image("a", gt, boxes=[[0.1, 0.1, 0.4, 0.4]], scores=[0.5], classes=[3])
    with pytest.raises(ValueError, match="NaN"):
        metric.add_image("a", gt, boxes=[[0.1, 0.1, 0.4, 0.4]], scores=[np.nan], classes=[0])
    metric.add_image("a", gt, boxes=np.zeros((0, 4)), scores=[], classes=[])
    with pytest.raises(ValueError, match="twice"):
        metric.add_image("a", gt, boxes=np.zeros((0, 4)), scores=[], classes=[])


def test_iou_tag_names_the_headline():
    assert M.iou_tag(0.5) == "50" and M.iou_tag(0.75) == "75" and M.iou_tag(0.505) == "50.5"


# ---------------------------------------------------------------------------------------------
# The real MPEG VCM ground truth (first 1000 images of the CTC list)

NUM_CTC_IMAGES = 1000


@pytest.fixture(scope="module")
def mpeg_gt():
    folder = shared_path("data", "mpeg-vcm")
    names = [line.strip() for line in (folder / "detection_validation_input_5k.lst").read_text().splitlines()
             if line.strip()][:NUM_CTC_IMAGES]
    ids = [n[:-4] for n in names]
    boxes = F.read_gt_boxes(folder / "detection_validation_5k_bbox.csv")
    labels = F.read_image_labels(folder / "detection_validation_labels_5k.csv")
    return ids, boxes[boxes.ImageID.isin(ids)].reset_index(drop=True), labels[labels.ImageID.isin(ids)]


def _as_detections(boxes: pd.DataFrame, score: float) -> pd.DataFrame:
    out = boxes[["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]].copy()
    out.insert(2, "Score", score)
    return out


def _categories(boxes, labels):
    return F.categories_from_labels(list(boxes.LabelName) + list(labels.LabelName))


def test_real_gt_detections_equal_to_the_boxes_score_one(mpeg_gt):
    """Ground truth = the non-group-of MPEG boxes of the 1000 CTC images; detections = those boxes."""
    _, boxes, labels = mpeg_gt
    single = boxes[~boxes.IsGroupOf].reset_index(drop=True)
    result = M.evaluate_tables(single, labels, _as_detections(single, 1.0), _categories(single, labels))
    evaluated = ~np.isnan(result.average_precision)
    assert evaluated.sum() == single.LabelName.nunique() == 20
    # AP sums the recall steps 1/N; in floating point that total can miss 1 by an ulp or two.
    np.testing.assert_allclose(result.average_precision[evaluated], 1.0, rtol=0, atol=1e-12)
    assert abs(result.mean_ap - 1.0) <= 1e-12


def test_real_gt_without_group_of_detections_scores_the_found_fraction(mpeg_gt):
    """With the full ground truth, detecting exactly the non-group boxes finds N_c of N_c + G_c
    instances of class c at precision 1, so AP_c = N_c / (N_c + G_c) (counted here with pandas)."""
    _, boxes, labels = mpeg_gt
    single = boxes[~boxes.IsGroupOf]
    cats = _categories(boxes, labels)
    result = M.evaluate_tables(boxes, labels, _as_detections(single, 1.0), cats)
    found = single.groupby("LabelName").size() / boxes.groupby("LabelName").size()
    found = found.fillna(0.0)
    for c in cats:
        want = found.get(c.name, np.nan)
        got = result.average_precision[c.id - 1]
        assert (np.isnan(got) and np.isnan(want)) or abs(got - want) <= 1e-15, c
    assert abs(result.mean_ap - found.mean()) <= 1e-12


def test_real_gt_documented_perturbation(mpeg_gt):
    """Start from the score-1.0 set (non-group-of ground truth, detections = its boxes), then:

    1. add one "person" false positive at score 2.0 on image c540d9c96b6a79a2, box x,y in [0.9, 1]:
       that image's only person box spans x in [0.442, 0.580], so the FP touches no person box
       (IoU 0, not rescued by any group box: there is none). Ranked first, it makes the person
       precision after k TPs equal k / (k + 1), increasing in k, so its envelope is N / (N + 1)
       everywhere and AP_person = N_person / (N_person + 1).
    2. drop the detection of the single car box of image 945d6f685752e31b: the car precision stays 1
       and recall stops at (N_car - 1) / N_car, so AP_car = (N_car - 1) / N_car.

    The other C - 2 classes keep AP 1, so mAP = (C - 2 + N_p / (N_p + 1) + (N_c - 1) / N_c) / C.
    In the 1000 CTC images: N_person = 1516, N_car = 474 non-group boxes, C = 20 classes with boxes:
    mAP = (18 + 1516/1517 + 473/474) / 20 = 0.999861554978875...
    """
    _, boxes, labels = mpeg_gt
    single = boxes[~boxes.IsGroupOf].reset_index(drop=True)
    cats = _categories(single, labels)
    n_person = int((single.LabelName == "person").sum())
    n_car = int((single.LabelName == "car").sum())
    n_classes = single.LabelName.nunique()
    assert (n_person, n_car, n_classes) == (1516, 474, 20)
    person_here = single[(single.ImageID == "c540d9c96b6a79a2") & (single.LabelName == "person")]
    assert len(person_here) == 1 and person_here.XMax.iloc[0] < 0.9  # the FP box is disjoint from it
    car = single[(single.ImageID == "945d6f685752e31b") & (single.LabelName == "car")]
    assert len(car) == 1

    dets = _as_detections(single.drop(index=car.index), 1.0)
    fp = pd.DataFrame({"ImageID": ["c540d9c96b6a79a2"], "LabelName": ["person"], "Score": [2.0],
                       "XMin": [0.9], "XMax": [1.0], "YMin": [0.9], "YMax": [1.0]})
    result = M.evaluate_tables(single, labels, pd.concat([dets, fp], ignore_index=True), cats)
    by_name = {c.name: result.average_precision[c.id - 1] for c in cats}
    assert by_name["person"] == pytest.approx(1516 / 1517, abs=1e-12)
    assert by_name["car"] == pytest.approx(473 / 474, abs=1e-12)
    want = (18 + 1516 / 1517 + 473 / 474) / 20
    assert want == pytest.approx(0.999861554978875, abs=1e-14)
    assert abs(result.mean_ap - want) <= 1e-12


def test_real_gt_scored_against_itself_loses_nested_group_of_boxes(mpeg_gt):
    """Every box as a detection (non-group at 1.0, group-of at 0.5) is not a perfect score: a detection
    equal to a group box inside a larger group box of the same class credits the first best box only.
    Bottles: image 560df95288a192ac has 2 single and 12 group-of boxes, one group box is never
    credited, the other 31 of the 32 bottle instances are found at precision 1 -> AP = 31/32."""
    _, boxes, labels = mpeg_gt
    dets = pd.concat([_as_detections(boxes[~boxes.IsGroupOf], 1.0), _as_detections(boxes[boxes.IsGroupOf], 0.5)],
                     ignore_index=True)
    cats = _categories(boxes, labels)
    result = M.evaluate_tables(boxes, labels, dets, cats)
    by_name = {c.name: result.average_precision[c.id - 1] for c in cats}
    assert int((boxes.LabelName == "bottle").sum()) == 32
    assert by_name["bottle"] == pytest.approx(31 / 32, abs=1e-12)
    assert 0.99 < result.mean_ap < 1.0
