"""Multi-object tracking as a task: a class-aware SORT tracker (:mod:`vcm_eval.tracking.sort`) turns each
frame's detections into tracks; :mod:`vcm_eval.evaluation.mot` scores them (MOTA, IDF1, MOTP)."""

from vcm_eval.tracking.sort import SortTracker, TrackedObjects

__all__ = ["SortTracker", "TrackedObjects"]
