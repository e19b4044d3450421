"""Multi-object tracking metrics (CLEAR MOT and identity metrics) with ``motmetrics``, as MOTChallenge and
MPEG FCM's tracking sequences (TVD, HiEve) report them.

Each sequence fills one ``motmetrics.MOTAccumulator``, a frame at a time: ground-truth objects and hypotheses
(tracks) are paired by the distance ``d = 1 - IoU`` of their boxes (``motmetrics.distances.iou_matrix`` on
``x, y, w, h`` boxes, ``max_iou = max_iou_distance``: pairs with ``d > max_iou_distance``, i.e. IoU below 0.5 by
default, may not pair), and objects and hypotheses of different labels never pair (their distance is NaN).
motmetrics then counts, over all frames ``t``, misses ``FN``, false positives ``FP``, identity switches
``IDSW`` and ground-truth objects ``GT``::

    MOTA = 1 - (FN + FP + IDSW) / GT
    MOTP = sum of d over matched pairs / number of matches      (motmetrics' convention: 1 - mean IoU, lower is better)
    IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN)
    IDP = IDTP / (IDTP + IDFP),  IDR = IDTP / (IDTP + IDFN)

where IDTP/IDFP/IDFN come from the one-to-one matching of whole ground-truth trajectories to whole tracks that
maximises the number of frames they share (Ristani et al. 2016). ``mostly_tracked`` / ``partially_tracked`` /
``mostly_lost`` count trajectories covered for >= 80 %, 20-80 % and < 20 % of their frames. ``mean_iou = 1 - MOTP``
is added, as the MOTChallenge devkit prints MOTP as an overlap.

Frames are anything with ``boxes`` ((N, 4) ``x0, y0, x1, y1``), ``track_ids`` and ``labels`` (or ``classes``):
:class:`vcm_eval.tracking.TrackedObjects` for hypotheses, ``vcm_eval.data.sequences.FrameObjects`` for ground
truth. ``gt_frames[t]`` and ``hyp_frames[t]`` are the same picture.

motmetrics 1.4's ``MOTAccumulator.merge_event_dataframes`` calls ``DataFrame.append``, which pandas 2 removed;
the summary over sequences uses ``compute_many(..., generate_overall=True)``, which does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import motmetrics
import numpy as np

#: the metrics reported per sequence and overall, in motmetrics' names.
METRICS: tuple[str, ...] = (
    "num_frames", "mota", "motp", "idf1", "idp", "idr", "recall", "precision",
    "num_objects", "num_predictions", "num_matches", "num_switches", "num_false_positives", "num_misses",
    "num_fragmentations", "num_unique_objects", "mostly_tracked", "partially_tracked", "mostly_lost",
    "idtp", "idfp", "idfn",
)

#: metrics that are counts (reported as int).
COUNTS = frozenset(m for m in METRICS if m.startswith("num_") or m in
                   {"mostly_tracked", "partially_tracked", "mostly_lost", "idtp", "idfp", "idfn"})

#: name of the summary row over all sequences (motmetrics' own name for it).
OVERALL = "OVERALL"


def to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``x0, y0, x1, y1`` -> ``x, y, w, h`` (float64, as motmetrics computes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def frame_labels(frame: Any) -> np.ndarray:
    """The int64 labels of a frame's objects: its ``labels``, or ``classes`` for :class:`vcm_eval.types.Detections`."""
    labels = frame.labels if hasattr(frame, "labels") else frame.classes
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def frame_distances(gt: Any, hyp: Any, max_iou_distance: float = 0.5) -> np.ndarray:
    """(len(gt), len(hyp)) distances ``1 - IoU``; NaN (do not pair) beyond ``max_iou_distance`` or across labels."""
    gt_boxes, hyp_boxes = to_xywh(gt.boxes), to_xywh(hyp.boxes)
    if len(gt_boxes) == 0 or len(hyp_boxes) == 0:
        # motmetrics returns (0, 0) here; the accumulator wants the true shape
        return np.full((len(gt_boxes), len(hyp_boxes)), np.nan)
    dist = motmetrics.distances.iou_matrix(gt_boxes, hyp_boxes, max_iou=max_iou_distance)
    dist[frame_labels(gt)[:, None] != frame_labels(hyp)[None, :]] = np.nan
    return dist


def accumulate(gt_frames: Sequence[Any], hyp_frames: Sequence[Any],
               max_iou_distance: float = 0.5) -> motmetrics.MOTAccumulator:
    """One sequence's ``MOTAccumulator``, frame ``t`` pairing ``gt_frames[t]`` with ``hyp_frames[t]``."""
    if len(gt_frames) != len(hyp_frames):
        raise ValueError(f"a sequence needs one hypothesis frame per ground-truth frame; got {len(gt_frames)} "
                         f"and {len(hyp_frames)}")
    acc = motmetrics.MOTAccumulator(auto_id=True)
    for gt, hyp in zip(gt_frames, hyp_frames):
        acc.update(np.asarray(gt.track_ids, dtype=np.int64).reshape(-1).tolist(),
                   np.asarray(hyp.track_ids, dtype=np.int64).reshape(-1).tolist(),
                   frame_distances(gt, hyp, max_iou_distance))
    return acc


def _row_to_dict(row: Mapping[str, Any]) -> dict[str, float | int]:
    """A motmetrics summary row -> ``{metric: value}`` with counts as int, rates as float, and ``mean_iou``."""
    out: dict[str, float | int] = {m: int(row[m]) if m in COUNTS else float(row[m]) for m in METRICS}
    out["mean_iou"] = 1.0 - out["motp"]
    return out


def summarize(accumulators: Mapping[str, motmetrics.MOTAccumulator]) -> dict[str, dict[str, float | int]]:
    """``{sequence: metrics}`` for each accumulator plus ``OVERALL``: motmetrics' metrics of all sequences'
    events together (frames and ids offset so sequences do not collide), not a mean of per-sequence figures."""
    if not accumulators:
        raise ValueError("no sequences to summarise")
    names = list(accumulators)
    if OVERALL in names:
        raise ValueError(f"{OVERALL!r} is reserved for the summary row")
    table = motmetrics.metrics.create().compute_many([accumulators[n] for n in names], metrics=list(METRICS),
                                                     names=names, generate_overall=True)
    return {str(name): _row_to_dict(row) for name, row in table.iterrows()}


def mot_metrics(gt_frames: Sequence[Any], hyp_frames: Sequence[Any],
                max_iou_distance: float = 0.5) -> dict[str, float | int]:
    """MOTA, MOTP, IDF1 and the counts behind them (:data:`METRICS`, plus ``mean_iou``) of one sequence."""
    return summarize({"sequence": accumulate(gt_frames, hyp_frames, max_iou_distance)})["sequence"]


def mot_summary(sequences: Mapping[str, tuple[Sequence[Any], Sequence[Any]]],
                max_iou_distance: float = 0.5) -> dict[str, dict[str, float | int]]:
    """``{name: (gt_frames, hyp_frames)}`` -> ``{name: metrics}`` plus ``OVERALL`` over all sequences."""
    return summarize({name: accumulate(gt, hyp, max_iou_distance) for name, (gt, hyp) in sequences.items()})
