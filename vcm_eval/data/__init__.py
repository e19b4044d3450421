"""Datasets: image lists, ground truth and the evaluator each one chooses."""

from vcm_eval.data.base import DetectionDataset, DetectionEvaluator, ImageRecord
from vcm_eval.data.images import ImageReadError, read_image

__all__ = ["DetectionDataset", "DetectionEvaluator", "ImageReadError", "ImageRecord", "read_image"]
