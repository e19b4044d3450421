"""The Open Images Challenge detection metric, in NumPy, without TensorFlow.

This reproduces the TF Object Detection API's ``OpenImagesChallengeEvaluator`` (boxes, group-of
weight 1) as its CLI ``oid_challenge_evaluation.py`` runs it, including its quirks. The checks in
``tests/test_openimages_*.py`` hold it to the reference's numbers to 1e-9 (in practice to the last
bit). The semantics, in the order they apply:

1. **Images.** Only images with ground-truth rows (a box or an image-level label) are evaluated;
   detections on any other image are ignored.
2. **Verified classes.** On an image, a class is evaluated only if it has a box there or an
   image-level label with either Confidence. Detections of other classes are dropped, not counted
   as false positives. Expanding a hierarchy (``openimages_files.expand_*``) decides what is
   verified: positive labels propagate up, negative labels down.
3. **Invalid detections** (``XMin >= XMax`` or ``YMin >= YMax``) are dropped. So are detections
   with score <= -10, and all but the 10,000 best of one class in one image (the reference's
   disabled NMS step keeps only that).
4. **Matching, per image and class.** Detections are ranked by score (see *Ties*). Each takes the
   single non-group-of box of highest IoU (``argmax``; the first box on equal IoU); it is a true
   positive if that IoU >= t and the box is still free, otherwise a false positive. There is no
   fall-back to the next-best box.
5. **Group-of boxes.** Every detection that is not a true positive -- duplicates included -- is
   then tested against the group-of boxes: the one of highest IoA (intersection over the
   *detection's* area) matches if IoA >= t. Matched detections are removed; each group-of box with
   a match adds one true positive whose score is the highest matched score, *kept only if that
   score > 0* (a group matched only by score-0 detections counts as missed).
6. **AP per class.** All scored entries of the class over all images (in ImageID order, each
   image's entries in the order above, group-of entries last) are ranked by score; precision and
   recall are accumulated with ``num_gt`` = non-group boxes + group-of boxes; AP is the VOC area
   under the precision envelope at the points where recall changes. A class with ground truth but
   no scored entry has AP 0; a class without ground-truth boxes has AP NaN, and mAP is the mean
   over the non-NaN classes (``np.nanmean``).

The same threshold ``t`` (0.5 by default) is used for IoU and IoA; ``>=`` makes exactly 0.5 a match.
Boxes are float64 fractions of the image size, ``(x0, y0, x1, y1)`` here (the reference stores
``(y0, x0, y1, x1)``; the formulas below give bit-identical values in either order).

**Ties.** The reference ranks with ``np.argsort(scores)[::-1]`` (default quicksort, reversed), both
inside an image and over all images. In its environment (numpy 1.23) quicksort on <= 16 values is a
stable insertion sort, so after the reversal *the tied entry that comes later in input order ranks
first*. Larger tied arrays were ordered by an unstable introsort there (and differently again by
numpy >= 1.25's SIMD sorts), so no portable rule reproduces them. vcm_eval applies the
small-array rule everywhere -- a stable sort, reversed: ``tie_order="later_first"`` -- which equals
the reference whenever its result is deterministic, and is the same on every machine.
``tie_order="earlier_first"`` gives the opposite order, to measure how much ties matter.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vcm_eval.data.base import DetectionEvaluator
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.openimages_files import Category, InputCounts, check_categories, reference_metric_names
from vcm_eval.types import Detections

log = logging.getLogger(__name__)

DEFAULT_IOU = 0.5
#: The reference keeps at most this many detections per class and image (``nms_max_output_boxes``).
MAX_DETECTIONS_PER_CLASS = 10_000
#: The reference keeps only detections scoring above this (its NMS ``score_threshold``).
SCORE_FLOOR = -10.0
TIE_ORDERS = ("later_first", "earlier_first")


# ----------------------------------------------------------------------------------------------
# Pure numerics


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Area of each ``(x0, y0, x1, y1)`` box: ``(x1 - x0) * (y1 - y0)``, shape (N,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas, shape (N, M).

    ``inter = max(0, min(y1a, y1b) - max(y0a, y0b)) * max(0, min(x1a, x1b) - max(x0a, x0b))``
    (height times width, in that order, as the reference multiplies).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    heights = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    widths = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    return heights * widths


def pairwise_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each detection with each box, (N, M): ``inter / ((area_det + area_gt) - inter)``.

    Detections must have positive area (invalid ones are dropped before matching), so the
    denominator is never 0.
    """
    inter = pairwise_intersection(det, gt)
    union = box_areas(det)[:, None] + box_areas(gt)[None, :] - inter
    return inter / union


def pairwise_ioa(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Intersection over the *detection's* area, (N, M): ``inter / area_det`` (for group-of boxes)."""
    return pairwise_intersection(det, gt) / box_areas(det)[:, None]


def descending_order(scores: np.ndarray, tie_order: str = "later_first") -> np.ndarray:
    """Indices that rank ``scores`` from highest to lowest.

    ``"later_first"`` (the reference's order, see the module docstring) is ``argsort(stable)[::-1]``:
    among equal scores the later index comes first. ``"earlier_first"`` puts the earlier index first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if tie_order == "later_first":
        return np.argsort(scores, kind="stable")[::-1]
    if tie_order == "earlier_first":
        return np.argsort(-scores, kind="stable")
    raise SettingError(f"tie_order must be one of {TIE_ORDERS}, got {tie_order!r}")


def valid_box_mask(boxes: np.ndarray) -> np.ndarray:
    """True where a box has positive width and height: ``x0 < x1 and y0 < y1``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])


def match_class_in_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
                         gt_group_of: np.ndarray, iou_threshold: float = DEFAULT_IOU,
                         tie_order: str = "later_first") -> tuple[np.ndarray, np.ndarray]:
    """Scored entries of one class on one image (steps 4 and 5 of the module docstring).

    Args:
        det_boxes: (N, 4) valid detection boxes of the class, in input order.
        det_scores: (N,) their scores (> SCORE_FLOOR).
        gt_boxes: (M, 4) ground-truth boxes of the class on the image.
        gt_group_of: (M,) True for group-of boxes.

    Returns:
        ``(scores, tp)``, float64: the detections that were neither matched to a group-of box nor
        capped, in rank order, with tp 1/0; then one entry (score = highest matched score, tp = 1)
        per group-of box whose matches scored > 0, in box order.
    """
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_group_of = np.asarray(gt_group_of, dtype=bool).reshape(-1)
    if len(det_scores) == 0:
        return np.zeros(0), np.zeros(0)
    order = descending_order(det_scores, tie_order)[:MAX_DETECTIONS_PER_CLASS]
    boxes, scores = det_boxes[order], det_scores[order]
    n = len(scores)
    if len(gt_boxes) == 0:
        return scores, np.zeros(n)
    tp = np.zeros(n, dtype=bool)
    single = gt_boxes[~gt_group_of]
    if len(single):
        iou = pairwise_iou(boxes, single)
        best = np.argmax(iou, axis=1)
        taken = np.zeros(len(single), dtype=bool)
        for i in range(n):
            g = best[i]
            if iou[i, g] >= iou_threshold and not taken[g]:
                tp[i] = True
                taken[g] = True
    in_group = np.zeros(n, dtype=bool)
    group_scores = np.zeros(0)
    groups = gt_boxes[gt_group_of]
    if len(groups):
        ioa = pairwise_ioa(boxes, groups)
        best = np.argmax(ioa, axis=1)
        group_scores = np.zeros(len(groups))
        for i in range(n):
            g = best[i]
            if not tp[i] and ioa[i, g] >= iou_threshold:
                in_group[i] = True
                group_scores[g] = max(group_scores[g], scores[i])
        # The reference keeps a group's entry only when its score is > 0 (its "matched" test).
        group_scores = group_scores[group_scores > 0]
    keep = ~in_group
    return (np.concatenate([scores[keep], group_scores]),
            np.concatenate([tp[keep].astype(np.float64), np.ones(len(group_scores))]))


def precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: float,
                     tie_order: str = "later_first") -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each entry ranked by score.

    ``precision_k = TP_k / (TP_k + FP_k)`` and ``recall_k = TP_k / num_gt``, with cumulative counts
    over the entries ranked by :func:`descending_order`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.float64)
    if num_gt <= 0:
        raise ValueError("precision/recall need num_gt > 0")
    if tp.sum() > num_gt:
        raise ValueError(f"{tp.sum()} true positives for {num_gt} ground-truth instances")
    ranked = tp[descending_order(scores, tie_order)]
    cum_tp = np.cumsum(ranked)
    cum_fp = np.cumsum((ranked <= 0).astype(np.float64))
    return cum_tp / (cum_tp + cum_fp), cum_tp / np.float64(num_gt)


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC AP: ``sum_i (r_i - r_{i-1}) * max_{j >= i} p_j`` over the points where recall changes.

    ``precision`` and ``recall`` are padded as ``[0, p..., 0]`` and ``[0, r..., 1]`` first. No entry
    at all gives 0.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.size == 0:
        return 0.0
    if np.any(np.diff(recall) < 0):
        raise ValueError("recall must not decrease")
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.where(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[changes] - r[changes - 1]) * p[changes]))


def nan_mean(values: np.ndarray) -> float:
    """Mean of the non-NaN values, NaN when there are none (``np.nanmean`` without its warning)."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    count = int((~nan).sum())
    if count == 0:
        return float("nan")
    # Summing with zeros in place of NaN (as np.nanmean does) keeps the reference's rounding.
    return float(np.sum(np.where(nan, 0.0, values)) / count)


# ----------------------------------------------------------------------------------------------
# Per-image data and the accumulator


@dataclass(frozen=True)
class ImageGroundTruth:
    """Ground truth of one image. Class indices are label-map ids minus 1.

    Attributes:
        boxes: (N, 4) float64 ``(x0, y0, x1, y1)`` fractions of the image size.
        classes: (N,) int64 class index of each box.
        group_of: (N,) bool.
        label_classes: (M,) int64 classes with an image-level label (either Confidence).
    """

    boxes: np.ndarray
    classes: np.ndarray
    group_of: np.ndarray
    label_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4))
        object.__setattr__(self, "classes", np.asarray(self.classes, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "group_of", np.asarray(self.group_of, dtype=bool).reshape(-1))
        object.__setattr__(self, "label_classes", np.asarray(self.label_classes, dtype=np.int64).reshape(-1))
        if not len(self.boxes) == len(self.classes) == len(self.group_of):
            raise ValueError("ImageGroundTruth needs as many boxes, classes and group_of flags")

    def verified_classes(self) -> np.ndarray:
        """Classes evaluated on this image: those with a box or an image-level label."""
        return np.unique(np.concatenate([self.label_classes, self.classes]))


@dataclass
class ChallengeResult:
    """What :meth:`ChallengeMetric.result` computes. Per-class arrays are indexed by class index.

    Attributes:
        mean_ap: mean of the non-NaN per-class APs (NaN when none).
        average_precision: (C,) AP per class, NaN for classes without ground-truth boxes.
        num_gt_instances: (C,) non-group-of boxes + group-of boxes.
        num_gt_images: (C,) images with at least one box of the class.
        precision, recall: per class, the arrays AP was computed from (None for NaN classes).
        entries: image id -> class index -> (scores, tp) the image contributed.
        counts: dropped-detection counts (``detections_unverified``, ``detections_invalid_box``,
            ``detections_low_score``, ``detections_over_cap``, ``detections_on_images_without_gt``).
    """

    mean_ap: float
    average_precision: np.ndarray
    num_gt_instances: np.ndarray
    num_gt_images: np.ndarray
    precision: list[np.ndarray | None]
    recall: list[np.ndarray | None]
    entries: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
    counts: dict[str, int]


class ChallengeMetric:
    """Accumulates images and computes the challenge metric (module docstring).

    Args:
        num_classes: class indices run over 0..num_classes-1 (label-map id - 1).
        iou_threshold: for IoU with boxes and IoA with group-of boxes.
        tie_order: ``"later_first"`` (reference) or ``"earlier_first"``.

    Example::

        >>> m = ChallengeMetric(1)
        >>> gt = ImageGroundTruth(boxes=[[0.1, 0.1, 0.5, 0.5]], classes=[0], group_of=[False])
        >>> m.add_image("img1", gt, boxes=[[0.1, 0.1, 0.5, 0.5]], scores=[0.9], classes=[0])
        >>> m.result().mean_ap
        1.0
    """

    def __init__(self, num_classes: int, *, iou_threshold: float = DEFAULT_IOU,
                 tie_order: str = "later_first") -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if tie_order not in TIE_ORDERS:
            raise SettingError(f"tie_order must be one of {TIE_ORDERS}, got {tie_order!r}")
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.tie_order = tie_order
        self._entries: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._num_gt = np.zeros(self.num_classes, dtype=np.float64)
        self._num_gt_images = np.zeros(self.num_classes, dtype=np.int64)
        self._counts: dict[str, int] = {}

    def _count(self, key: str, n: int) -> None:
        self._counts[key] = self._counts.get(key, 0) + int(n)

    def add_image(self, image_id: str, gt: ImageGroundTruth, *, boxes: np.ndarray, scores: np.ndarray,
                  classes: np.ndarray) -> None:
        """Add one image with ground truth and its detections (normalised ``(x0, y0, x1, y1)``)."""
        if image_id in self._entries:
            raise ValueError(f"image {image_id!r} was added twice")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"image {image_id!r}: detections need as many boxes, scores and classes")
        for arr, what in ((gt.classes, "ground-truth"), (gt.label_classes, "label"), (classes, "detection")):
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
                raise ValueError(f"image {image_id!r}: {what} class index outside 0..{self.num_classes - 1}")
        if np.isnan(scores).any():
            raise ValueError(f"image {image_id!r}: a detection score is NaN")

        for c in np.unique(gt.classes):
            sel = gt.classes == c
            self._num_gt[c] += float(np.sum(~gt.group_of[sel])) + float(np.sum(gt.group_of[sel]))
            self._num_gt_images[c] += 1

        verified = np.isin(classes, gt.verified_classes())
        self._count("detections_unverified", int((~verified).sum()))
        valid = valid_box_mask(boxes)
        self._count("detections_invalid_box", int((verified & ~valid).sum()))
        high = scores > SCORE_FLOOR
        self._count("detections_low_score", int((verified & valid & ~high).sum()))
        keep = verified & valid & high

        per_class: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(classes[keep]):
            sel = keep & (classes == c)
            self._count("detections_over_cap", max(0, int(sel.sum()) - MAX_DETECTIONS_PER_CLASS))
            on = gt.classes == c
            per_class[int(c)] = match_class_in_image(boxes[sel], scores[sel], gt.boxes[on], gt.group_of[on],
                                                     self.iou_threshold, self.tie_order)
        self._entries[image_id] = per_class

    def count_ignored_image(self, num_detections: int) -> None:
        """Record detections on an image without ground truth (the reference never visits it)."""
        self._count("detections_on_images_without_gt", num_detections)

    def result(self) -> ChallengeResult:
        """Per-class AP and mAP over the images added so far (images taken in sorted id order)."""
        ap = np.full(self.num_classes, np.nan)
        precisions: list[np.ndarray | None] = [None] * self.num_classes
        recalls: list[np.ndarray | None] = [None] * self.num_classes
        image_ids = sorted(self._entries)
        for c in range(self.num_classes):
            if self._num_gt[c] == 0:
                continue
            parts = [self._entries[i][c] for i in image_ids if c in self._entries[i]]
            scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
            tp = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
            precisions[c], recalls[c] = precision_recall(scores, tp, self._num_gt[c], self.tie_order)
            ap[c] = average_precision(precisions[c], recalls[c])
        return ChallengeResult(
            mean_ap=nan_mean(ap), average_precision=ap, num_gt_instances=self._num_gt.copy(),
            num_gt_images=self._num_gt_images.copy(), precision=precisions, recall=recalls,
            entries={i: dict(self._entries[i]) for i in image_ids}, counts=dict(self._counts))


# ----------------------------------------------------------------------------------------------
# Tables (see openimages_files) -> metric


def _class_index(labels: pd.Series, index_of: Mapping[str, int], what: str) -> np.ndarray:
    idx = labels.map(index_of)
    if idx.isna().any():
        raise SettingError(f"{what} label(s) {sorted(set(labels[idx.isna()]))[:5]} are not in the class list")
    return idx.to_numpy(dtype=np.int64)


def ground_truth_by_image(boxes: pd.DataFrame, labels: pd.DataFrame, categories: Sequence[Category],
                          image_ids: Iterable[str] | None = None) -> dict[str, ImageGroundTruth]:
    """Per-image ground truth from box and image-label tables (already expanded if wanted).

    Args:
        image_ids: restrict to these images; by default every image with a box or label row.
    """
    index_of = {c.name: c.id - 1 for c in categories}
    box_cls = _class_index(boxes.LabelName, index_of, "ground-truth box")
    lab_cls = _class_index(labels.LabelName, index_of, "image-level")
    coords = boxes[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64)
    group = boxes.IsGroupOf.to_numpy(dtype=bool)
    box_rows = boxes.groupby("ImageID", sort=False).indices if len(boxes) else {}
    lab_rows = labels.groupby("ImageID", sort=False).indices if len(labels) else {}
    wanted = set(box_rows) | set(lab_rows)
    if image_ids is not None:
        wanted &= set(image_ids)
    out = {}
    for image_id in sorted(wanted):
        b = box_rows.get(image_id, np.zeros(0, dtype=np.int64))
        lab = lab_rows.get(image_id, np.zeros(0, dtype=np.int64))
        out[image_id] = ImageGroundTruth(coords[b], box_cls[b], group[b], lab_cls[lab])
    return out


def evaluate_tables(boxes: pd.DataFrame, labels: pd.DataFrame, detections: pd.DataFrame,
                    categories: Sequence[Category], *, iou_threshold: float = DEFAULT_IOU,
                    tie_order: str = "later_first") -> ChallengeResult:
    """Score a detection table against box and label tables, as ``oid_challenge_evaluation.py`` does.

    Every label must be in ``categories`` (drop unknown detection labels first with
    :func:`~vcm_eval.evaluation.openimages_files.drop_unknown_detection_labels`).
    """
    categories = check_categories(categories)
    metric = ChallengeMetric(categories[-1].id, iou_threshold=iou_threshold, tie_order=tie_order)
    gt = ground_truth_by_image(boxes, labels, categories)
    index_of = {c.name: c.id - 1 for c in categories}
    det_cls = _class_index(detections.LabelName, index_of, "detection")
    det_boxes = detections[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64)
    det_scores = detections.Score.to_numpy(dtype=np.float64)
    det_rows = detections.groupby("ImageID", sort=False).indices if len(detections) else {}
    empty = np.zeros(0, dtype=np.int64)
    for image_id, image_gt in gt.items():
        r = det_rows.get(image_id, empty)
        metric.add_image(image_id, image_gt, boxes=det_boxes[r], scores=det_scores[r], classes=det_cls[r])
    for image_id, r in det_rows.items():
        if image_id not in gt:
            metric.count_ignored_image(len(r))
    return metric.result()


def reference_rows(result: ChallengeResult, categories: Sequence[Category],
                   iou_threshold: float = DEFAULT_IOU) -> list[tuple[str, float]]:
    """``(name, value)`` rows named and ordered as the reference CLI writes them: mAP, then one AP
    per class in label-map id order (class names NFKD-normalised as the reference does)."""
    map_name, ap_prefix = reference_metric_names(iou_threshold)
    rows = [(map_name, result.mean_ap)]
    for c in check_categories(categories):
        rows.append((ap_prefix + unicodedata.normalize("NFKD", c.name), float(result.average_precision[c.id - 1])))
    return rows


# ----------------------------------------------------------------------------------------------
# The dataset-facing evaluator


def iou_tag(iou_threshold: float) -> str:
    """Metric-name suffix for a threshold: 0.5 -> ``"50"``, 0.75 -> ``"75"``, 0.505 -> ``"50.5"``."""
    pct = iou_threshold * 100
    return f"{round(pct):d}" if abs(pct - round(pct)) < 1e-9 else f"{pct:g}"


@dataclass
class OpenImagesGroundTruth:
    """Ground truth of an evaluated image set, ready for :class:`OpenImagesEvaluator`.

    Attributes:
        image_ids: the evaluated images, in dataset order (some may have no ground truth).
        categories: the classes (label-map ids and labels).
        images: image id -> ground truth, for the images that have any.
        counts: counts from reading the files (reported with the results).
    """

    image_ids: list[str]
    categories: list[Category]
    images: dict[str, ImageGroundTruth]
    counts: dict[str, int] = field(default_factory=dict)


class OpenImagesEvaluator(DetectionEvaluator):
    """The Open Images Challenge metric for a dataset's detections.

    Detections come in original-image pixels with the model's class indices; the evaluator maps
    each model class name to a dataset label (model classes without one are dropped and counted),
    divides box coordinates by each image's width and height, and scores with
    :class:`ChallengeMetric`.

    Args:
        ground_truth: the evaluated images and their ground truth.
        class_names: the model's class index -> name.
        label_of_class: model class name -> dataset label (MPEG VCM name or Open Images MID).
        image_size: image id -> (height, width) of the picture the detections refer to.
        iou_threshold: matching threshold; the headline metric is ``map_<100*t>`` (``map_50``).
        tie_order: see the module docstring.

    ``evaluate`` returns fractions: ``map_50`` (headline), ``ap_50/<label>`` per class (NaN for a
    class without ground-truth boxes in the set), ``num_gt_instances``, ``num_detections``, and
    ``count/<what>`` for every nonzero count of dropped detections and odd input rows
    (``count/detections_unverified`` etc.; see :class:`ChallengeResult` and
    :class:`~vcm_eval.evaluation.openimages_files.InputCounts`).

    Example::

        >>> ev = dataset.make_evaluator(model.class_names)
        >>> ev.evaluate({"0001eeaf4aed83f9": dets})["map_50"]
    """

    def __init__(self, ground_truth: OpenImagesGroundTruth, class_names: Sequence[str],
                 label_of_class: Mapping[str, str], image_size: Callable[[str], tuple[int, int]], *,
                 iou_threshold: float = DEFAULT_IOU, tie_order: str = "later_first") -> None:
        self.ground_truth = ground_truth
        self.categories = check_categories(ground_truth.categories, "dataset classes")
        self.class_names = list(class_names)
        self.iou_threshold = float(iou_threshold)
        self.tie_order = tie_order
        self.tag = iou_tag(self.iou_threshold)
        self.headline = f"map_{self.tag}"
        self._image_size = image_size
        index_of = {c.name: c.id - 1 for c in self.categories}
        self._class_to_index: dict[int, int] = {}
        unmapped = []
        for k, name in enumerate(self.class_names):
            label = label_of_class.get(name)
            if label is None:
                unmapped.append(name)
            elif label in index_of:
                self._class_to_index[k] = index_of[label]
            # A label the ground truth never uses is never verified: dropped as unverified.
        if not any(name in label_of_class for name in self.class_names):
            raise SettingError(f"none of the model's classes {self.class_names[:8]}... has a label in this "
                             "dataset; this model was not trained for these classes")
        if unmapped:
            log.info("model classes without an Open Images label (their detections are dropped): %s",
                     unmapped[:10])
        self._unmapped = np.array([k for k, name in enumerate(self.class_names) if name not in label_of_class],
                                  dtype=np.int64)
        self.last_result: ChallengeResult | None = None

    def normalized_boxes(self, image_id: str, boxes: np.ndarray) -> np.ndarray:
        """Pixel ``(x0, y0, x1, y1)`` -> fractions ``x / width``, ``y / height`` (float64).

        Raises:
            ValueError: when a box leaves the image (detectors clip their boxes to the image).
        """
        height, width = self._image_size(image_id)
        norm = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([width, height, width, height],
                                                                               dtype=np.float64)
        outside = ((norm < 0.0) | (norm > 1.0)).any(axis=1)
        if outside.any():
            raise ValueError(f"image {image_id!r} ({width}x{height}): {int(outside.sum())} detection box(es) leave "
                             f"the image, e.g. {boxes[np.argmax(outside)].tolist()}; the model must clip its "
                             "boxes to the image")
        return norm

    def evaluate(self, detections: Mapping[str, Detections]) -> dict[str, float]:
        gt = self.ground_truth
        metric = ChallengeMetric(self.categories[-1].id, iou_threshold=self.iou_threshold,
                                 tie_order=self.tie_order)
        counts = InputCounts()
        counts.merge(gt.counts)
        wanted = set(gt.image_ids)
        extra = [k for k in detections if k not in wanted]
        if extra:
            counts.add("images_not_in_dataset", len(extra))
            log.warning("ignored detections of %d image(s) that are not in the dataset, e.g. %s", len(extra),
                        extra[:3])
        num_detections = 0
        lut = np.full(max(len(self.class_names), 1), -1, dtype=np.int64)
        for k, idx in self._class_to_index.items():
            lut[k] = idx
        for image_id in gt.image_ids:
            dets = detections.get(image_id, Detections.empty())
            num_detections += len(dets)
            if len(dets) and (dets.classes.min() < 0 or dets.classes.max() >= len(self.class_names)):
                raise ValueError(f"image {image_id!r}: detection class index outside the model's "
                                 f"{len(self.class_names)} classes")
            if image_id not in gt.images:
                metric.count_ignored_image(len(dets))
                continue
            idx = lut[dets.classes] if len(dets) else np.zeros(0, dtype=np.int64)
            unmapped = np.isin(dets.classes, self._unmapped)
            known = idx >= 0
            counts.add("detections_unmapped_class", int(unmapped.sum()))
            # A model class whose label the ground truth never uses is never verified on any image.
            counts.add("detections_unverified", int((~known & ~unmapped).sum()))
            boxes = self.normalized_boxes(image_id, dets.boxes[known]) if known.any() else np.zeros((0, 4))
            metric.add_image(image_id, gt.images[image_id], boxes=boxes, scores=dets.scores[known],
                             classes=idx[known])
        result = metric.result()
        self.last_result = result
        counts.merge(result.counts)
        out = {self.headline: result.mean_ap}
        for c in self.categories:
            out[f"ap_{self.tag}/{c.name}"] = float(result.average_precision[c.id - 1])
        out["num_gt_instances"] = float(result.num_gt_instances.sum())
        out["num_detections"] = float(num_detections)
        for key, n in counts.nonzero().items():
            out[f"count/{key}"] = float(n)
        return out
