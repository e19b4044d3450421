"""The dataset contract: an ordered list of pictures, their ground truth, and the evaluator that scores them.

The dataset entry, not the user, decides how detections are scored: COCO-format sets score with
pycocotools, Open Images sets with the Open Images Challenge metric. It also maps the detector's
class indices to its own label names.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcm_eval.data.images import read_image
from vcm_eval.errors import SettingError
from vcm_eval.hashing import file_sha256
from vcm_eval.types import Detections


@dataclass(frozen=True)
class ImageRecord:
    """One picture of a dataset: its id (as the ground truth names it) and its file."""

    image_id: str
    path: Path


class DetectionEvaluator(abc.ABC):
    """Scores detections of a whole image set.

    ``evaluate`` returns ``{metric: value}``; ``headline`` names the metric plotted against bpp and
    used for BD-rate (mAP at IoU 0.5 for every built-in dataset). Values are fractions in [0, 1].
    """

    headline: str = "map_50"

    @abc.abstractmethod
    def evaluate(self, detections: Mapping[str, Detections]) -> dict[str, float]:
        """``detections``: image id -> detections of the dataset's images (missing ids count as empty)."""


#: What a CTC scores (``ctc.task``): boxes (``detection``) or instance masks (``segmentation``).
TASKS: tuple[str, ...] = ("detection", "segmentation")


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`.

    Raises:
        ValueError: naming the known tasks.
    """
    if task not in TASKS:
        raise SettingError(f"unknown task {task!r} (ctc.task / dataset.task); choose one of {list(TASKS)}")
    return task


class DetectionDataset(abc.ABC):
    """An ordered set of pictures with detection ground truth.

    Subclasses set ``name`` and implement :meth:`records` and :meth:`make_evaluator`. ``task`` is what its
    evaluator scores (:data:`TASKS`); a data set that can score instance masks takes it as an argument.
    """

    name: str = "dataset"
    task: str = "detection"

    @abc.abstractmethod
    def records(self) -> list[ImageRecord]:
        """The pictures of the evaluation set, in order (already limited to the CTC's image count)."""

    @abc.abstractmethod
    def make_evaluator(self, class_names: Sequence[str]) -> DetectionEvaluator:
        """An evaluator for detections whose ``classes`` index into ``class_names``."""

    def load(self, record: ImageRecord) -> np.ndarray:
        """The picture as RGB uint8 (H, W, 3); raises ImageReadError naming the file."""
        return read_image(record.path)

    def fingerprint(self, record: ImageRecord) -> str:
        """Content identity of the picture (sha256 of the file), used in cache keys."""
        return file_sha256(record.path)

    def identity(self) -> dict:
        """What determines the image set and ground truth, for results tables."""
        return {"name": self.name, "num_images": len(self.records())}
