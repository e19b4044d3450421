"""Any COCO-format detection set: one annotation JSON plus a folder of pictures, scored with pycocotools
(box mAP, or with ``task="segmentation"`` mask mAP too)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vcm_eval.data.base import DetectionDataset, ImageRecord, check_task
from vcm_eval.errors import MissingInputError, SettingError
from vcm_eval.evaluation.coco import CocoEvaluator, check_mask_annotations


class CocoDataset(DetectionDataset):
    """A COCO-format detection set.

    Args:
        annotations: the COCO annotation JSON (``images``, ``annotations``, ``categories``).
        images: folder that the images' ``file_name`` entries are relative to.
        num_images: keep only the first N pictures in image-id order; ``None`` = all.
        name: identifier recorded with results.
        task: ``"detection"`` (box mAP) or ``"segmentation"`` (mask mAP as the headline, box mAP beside it;
            every annotation of the selected pictures needs a ``segmentation``, checked here).

    Raises:
        FileNotFoundError: naming the annotation file or image folder when it is missing.
        ValueError: naming the annotation file when it is not COCO-format JSON, and under segmentation
            naming the annotation whose mask is missing or corrupt.

    Example::

        >>> ds = CocoDataset(annotations="instances_val2017.json", images="val2017", num_images=10)
        >>> img = ds.load(ds.records()[0])       # RGB uint8 (H, W, 3)
        >>> ev = ds.make_evaluator(model.class_names)
    """

    def __init__(self, annotations: str | Path, images: str | Path, num_images: int | None = None,
                 name: str = "coco", task: str = "detection") -> None:
        self.task = check_task(task)
        self.annotation_file = Path(annotations).expanduser()
        self.image_dir = Path(images).expanduser()
        self.name = name
        if not self.annotation_file.is_file():
            raise MissingInputError(f"{self.annotation_file}: COCO annotation file not found; set "
                                    "dataset.annotations to the instances JSON of the set")
        if not self.image_dir.is_dir():
            raise MissingInputError(f"{self.image_dir}: image folder not found; set dataset.images to the "
                                    "folder the JSON's file_name entries are relative to")
        try:
            doc = json.loads(self.annotation_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SettingError(f"{self.annotation_file}: not readable JSON ({exc})") from exc
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
            raise SettingError(f"{self.annotation_file}: not a COCO annotation file (needs 'images' and "
                             "'categories' lists)")
        doc.setdefault("annotations", [])
        if num_images is not None and int(num_images) < 1:
            raise SettingError(f"num_images must be a positive count or null, got {num_images}")
        self.ground_truth = doc
        images_sorted = sorted(doc["images"], key=lambda im: int(im["id"]))
        if num_images is not None:
            images_sorted = images_sorted[: int(num_images)]
        self.num_images = num_images
        self._records = [ImageRecord(str(int(im["id"])), self.image_dir / im["file_name"]) for im in images_sorted]
        if self.task == "segmentation":  # before a sweep, not after it: a corrupt mask stops the run at once
            check_mask_annotations(doc, [int(r.image_id) for r in self._records], str(self.annotation_file))

    @property
    def categories(self) -> list[dict]:
        return list(self.ground_truth["categories"])

    @property
    def class_names(self) -> list[str]:
        """Category names in category-id order."""
        return [str(c["name"]) for c in sorted(self.ground_truth["categories"], key=lambda c: int(c["id"]))]

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def make_evaluator(self, class_names: Sequence[str]) -> CocoEvaluator:
        return CocoEvaluator(self.ground_truth, [int(r.image_id) for r in self._records], class_names,
                             iou_type="segm" if self.task == "segmentation" else "bbox",
                             source=str(self.annotation_file))

    def missing_files(self) -> list[Path]:
        """Pictures of the selected records that are not on disk."""
        return [r.path for r in self._records if not r.path.is_file()]

    def identity(self) -> dict:
        ident = {"name": self.name, "annotations": str(self.annotation_file), "num_images": len(self._records)}
        if self.task != "detection":  # detection runs keep the identity they had before tasks
            ident["task"] = self.task
        return ident
