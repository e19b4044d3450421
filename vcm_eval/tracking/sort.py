"""SORT multi-object tracking (Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016), class-aware,
with an optional ByteTrack-style second association of low-score detections (Zhang et al., ECCV 2022).

Per frame, :meth:`SortTracker.update`:

1. predicts every track one frame ahead with its constant-velocity Kalman filter;
2. matches predictions to the frame's confident detections (``score >= score_threshold``) by IoU with
   ``lap.lapjv(1 - IoU, extend_cost=True, cost_limit=1 - iou_threshold)``: the assignment of largest total
   IoU in which every pair has ``IoU >= iou_threshold``; a detection may only match a track of its own label
   (the IoU of pairs of different labels is set to 0, beyond the limit);
3. with ``low_score_threshold`` set, matches the tracks still unmatched *that were matched in the previous
   frame* to the low-score detections (``low_score_threshold <= score < score_threshold``) in the same way,
   with ``low_iou_threshold``; low-score detections never start tracks (ByteTrack's second association;
   unlike ByteTrack there is no separate, higher threshold for starting tracks and no "lost" pool beyond
   ``max_age``);
4. corrects matched tracks with their detection, starts a track on every unmatched confident detection,
   and drops tracks unmatched for more than ``max_age`` consecutive frames.

A track is reported in a frame when it was matched in that frame and either has been matched in its last
``min_hits`` frames in a row (its birth detection counts as the first) or the sequence is still in its first
``min_hits`` frames (SORT's rule, so the first frames are not left empty). The reported box is the Kalman
posterior, as SORT reports it, not the raw detection. Track ids count up from 1 (the MOT file convention)
and are never reused. Everything is plain float64 numpy arithmetic in a fixed order, so the same detections
always give the same tracks.

Kalman filter (SORT's, in pixels): state ``x = (cx, cy, s, r, vcx, vcy, vs)`` with box centre ``(cx, cy)``,
area ``s = w h`` and aspect ``r = w / h`` (held constant); measurement ``z = (cx, cy, s, r)``::

    F = [[I4, [I3; 0]], [0, I3]]    (cx += vcx, cy += vcy, s += vs)       H = [I4 | 0]
    Q = diag(1, 1, 1, 1, 0.01, 0.01, 1e-4)     R = diag(1, 1, 10, 10)
    P0 = diag(10, 10, 10, 10, 1e4, 1e4, 1e4)   (x0: the first detection, zero velocity)

    predict:  x <- F x,  P <- F P F' + Q     (vs <- 0 first when s + vs <= 0, so the area stays positive)
    update:   S = H P H' + R,  K = P H' S^-1,  x <- x + K (z - H x),
              P <- (I - K H) P (I - K H)' + K R K'     (Joseph form: stays symmetric positive definite)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import lap
import numpy as np

#: state transition: constant velocity in centre and area, constant aspect.
F = np.eye(7)
F[0, 4] = F[1, 5] = F[2, 6] = 1.0
#: measurement matrix: the box (cx, cy, s, r) is observed, the velocities are not.
H = np.eye(4, 7)
#: process noise (SORT's values): small on velocities, smallest on the area's velocity.
Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4])
#: measurement noise: area and aspect of a detection are less reliable than its centre.
R = np.diag([1.0, 1.0, 10.0, 10.0])
#: initial covariance: the velocities of a new track are unknown.
P0 = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])


@dataclass
class TrackedObjects:
    """The tracks reported in one frame.

    Attributes:
        boxes: (N, 4) float32, ``x0, y0, x1, y1`` in the frame's pixels.
        labels: (N,) int64 class of each track (the class of the detections it follows).
        track_ids: (N,) int64 identity, stable across frames, from 1.
        scores: (N,) float32 score of the detection each track matched in this frame.
    """

    boxes: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        self.scores = (np.ones(len(self.boxes), dtype=np.float32) if self.scores is None
                       else np.asarray(self.scores, dtype=np.float32).reshape(-1))
        if not (len(self.boxes) == len(self.labels) == len(self.track_ids) == len(self.scores)):
            raise ValueError(f"TrackedObjects need as many boxes, labels, track ids and scores; got {len(self.boxes)}, "
                             f"{len(self.labels)}, {len(self.track_ids)}, {len(self.scores)}")

    def __len__(self) -> int:
        return len(self.track_ids)

    @classmethod
    def empty(cls) -> TrackedObjects:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0))


def box_to_measurement(box: np.ndarray) -> np.ndarray:
    """``x0, y0, x1, y1`` -> ``z = (cx, cy, s, r)`` with ``s = w h``, ``r = w / h``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    return np.array([x0 + w / 2.0, y0 + h / 2.0, w * h, w / h])


def state_to_box(x: np.ndarray) -> np.ndarray:
    """Kalman state -> ``x0, y0, x1, y1`` with ``w = sqrt(s r)``, ``h = s / w``."""
    cx, cy, s, r = (float(v) for v in x[:4])
    w = float(np.sqrt(max(s * r, 0.0)))
    h = s / w if w > 0 else 0.0
    return np.array([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0])


def kalman_predict(x: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x <- F x``, ``P <- F P F' + Q``; the area's velocity is zeroed first if it would make the area <= 0."""
    x = x.copy()
    if x[2] + x[6] <= 0:
        x[6] = 0.0
    return F @ x, F @ P @ F.T + Q


def kalman_update(x: np.ndarray, P: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct ``(x, P)`` with measurement ``z``: ``K = P H' (H P H' + R)^-1``, ``x + K (z - H x)``, Joseph-form P."""
    S = H @ P @ H.T + R
    K = np.linalg.solve(S, H @ P).T  # = P H' S^-1, as S and P are symmetric
    x = x + K @ (z - H @ x)
    A = np.eye(7) - K @ H
    return x, A @ P @ A.T + K @ R @ K.T


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise ``|A & B| / |A | B|`` of ``x0, y0, x1, y1`` boxes, shape (len(a), len(b)); 0 for empty unions."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def associate(track_boxes: np.ndarray, track_labels: np.ndarray, det_boxes: np.ndarray, det_labels: np.ndarray,
              iou_threshold: float) -> list[tuple[int, int]]:
    """Matched ``(track, detection)`` index pairs: the assignment maximising the total IoU among pairs of equal
    label with ``IoU >= iou_threshold``, solved by ``lap.lapjv`` on ``1 - IoU`` with ``cost_limit = 1 - iou_threshold``
    (its extended matrix lets any row or column stay unmatched at half that cost)."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return []
    iou = iou_matrix(track_boxes, det_boxes)
    iou[np.asarray(track_labels)[:, None] != np.asarray(det_labels)[None, :]] = 0.0  # cost 1 > cost_limit
    _, rows, _ = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - iou_threshold)
    # lapjv keeps pairs whose cost equals the limit; the check also guards against its rounding
    return [(t, int(d)) for t, d in enumerate(rows) if d >= 0 and iou[t, d] >= iou_threshold]


@dataclass
class _Track:
    """One track's filter and counters (SORT's ``KalmanBoxTracker``)."""

    track_id: int
    label: int
    x: np.ndarray
    P: np.ndarray
    score: float
    hit_streak: int = 1  # consecutive matched frames, birth included
    time_since_update: int = 0  # frames since the last match

    def predict(self) -> None:
        self.x, self.P = kalman_predict(self.x, self.P)
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1

    def correct(self, box: np.ndarray, score: float) -> None:
        self.x, self.P = kalman_update(self.x, self.P, box_to_measurement(box))
        self.score = score
        self.hit_streak += 1
        self.time_since_update = 0


def _valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mask of boxes with positive width and height and finite coordinates (others have no aspect to filter)."""
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


class SortTracker:
    """Class-aware SORT, optionally with ByteTrack's second association of low-score detections.

    Args:
        iou_threshold: least IoU between a track's prediction and a confident detection to match them (SORT: 0.3).
        max_age: a track unmatched for more than this many consecutive frames is dropped (SORT: 1); a track
            survives an occlusion of up to ``max_age`` frames, coasting on its prediction, and is not reported
            while unmatched.
        min_hits: consecutive matched frames (birth included) before a track is reported (SORT: 3).
        score_threshold: detections scoring below this are not used by the first association and never start
            tracks.
        low_score_threshold: ``None`` (plain SORT) drops every detection below ``score_threshold``; a value
            enables the second association with the detections scoring in ``[low_score_threshold, score_threshold)``
            (ByteTrack: 0.1 with ``score_threshold`` 0.5).
        low_iou_threshold: least IoU of the second association (ByteTrack: 0.5).

    Example::

        tracker = SortTracker(max_age=5, min_hits=1)
        per_frame = tracker.track_sequence(detections_of_each_frame)   # list[TrackedObjects]
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 1, min_hits: int = 3, score_threshold: float = 0.5,
                 low_score_threshold: float | None = None, low_iou_threshold: float = 0.5):
        if not 0.0 < iou_threshold <= 1.0 or not 0.0 < low_iou_threshold <= 1.0:
            raise ValueError(f"IoU thresholds must be in (0, 1], got {iou_threshold} and {low_iou_threshold}")
        if max_age < 0 or min_hits < 0:
            raise ValueError(f"max_age and min_hits must be >= 0, got {max_age} and {min_hits}")
        if low_score_threshold is not None and low_score_threshold > score_threshold:
            raise ValueError(f"low_score_threshold {low_score_threshold} is above score_threshold {score_threshold}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.score_threshold = float(score_threshold)
        self.low_score_threshold = None if low_score_threshold is None else float(low_score_threshold)
        self.low_iou_threshold = float(low_iou_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1 and the frame count at 0 (a new sequence)."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame_count = 0

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> TrackedObjects:
        """Advance one frame with its detections (``x0, y0, x1, y1`` boxes, scores, labels); the tracks reported
        in this frame, in increasing id order."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"need as many boxes, scores and labels; got {len(boxes)}, {len(scores)}, {len(labels)}")
        self._frame_count += 1
        valid = _valid_boxes(boxes)
        high = np.flatnonzero(valid & (scores >= self.score_threshold))
        low = (np.flatnonzero(valid & (scores < self.score_threshold) & (scores >= self.low_score_threshold))
               if self.low_score_threshold is not None else np.zeros(0, dtype=np.int64))

        for track in self._tracks:
            track.predict()
        # a prediction that is no box any more (degenerate covariance) cannot be matched: drop the track, as SORT does
        self._tracks = [t for t in self._tracks if np.isfinite(t.x).all()]

        unmatched = list(range(len(self._tracks)))
        matched_high = self._match(unmatched, high, boxes, labels, self.iou_threshold, scores)
        unmatched = [t for t in unmatched if self._tracks[t].time_since_update > 0]
        if len(low):
            # ByteTrack: only tracks followed up to the previous frame may pick up a weak detection
            recent = [t for t in unmatched if self._tracks[t].time_since_update == 1]
            self._match(recent, low, boxes, labels, self.low_iou_threshold, scores)

        for d in high:
            if d not in matched_high:
                self._tracks.append(_Track(self._next_id, int(labels[d]), np.r_[box_to_measurement(boxes[d]), 0, 0, 0],
                                           P0.copy(), float(scores[d])))
                self._next_id += 1

        reported = [t for t in self._tracks if t.time_since_update == 0
                    and (t.hit_streak >= self.min_hits or self._frame_count <= self.min_hits)]
        self._tracks = [t for t in self._tracks if t.time_since_update <= self.max_age]
        if not reported:
            return TrackedObjects.empty()
        reported.sort(key=lambda t: t.track_id)
        return TrackedObjects(np.stack([state_to_box(t.x) for t in reported]), [t.label for t in reported],
                              [t.track_id for t in reported], [t.score for t in reported])

    def _match(self, track_indices: Sequence[int], det_indices: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
               iou_threshold: float, scores: np.ndarray) -> set[int]:
        """Associate the given tracks with the given detections and correct the matched tracks; the detection
        indices (into the frame's arrays) that were matched."""
        tracks = [self._tracks[t] for t in track_indices]
        pairs = associate(np.array([state_to_box(t.x) for t in tracks]).reshape(-1, 4), [t.label for t in tracks],
                          boxes[det_indices], labels[det_indices], iou_threshold)
        for t, d in pairs:
            tracks[t].correct(boxes[det_indices[d]], float(scores[det_indices[d]]))
        return {int(det_indices[d]) for _, d in pairs}

    def track_sequence(self, per_frame_detections: Iterable) -> list[TrackedObjects]:
        """Track one sequence from its first frame: :meth:`reset`, then :meth:`update` on each frame's detections
        (:class:`vcm_eval.types.Detections`, or anything with ``boxes``, ``scores`` and ``classes`` or ``labels``)."""
        self.reset()
        out = []
        for dets in per_frame_detections:
            labels = dets.classes if hasattr(dets, "classes") else dets.labels
            out.append(self.update(dets.boxes, dets.scores, labels))
        return out
