"""Open Images V6 detection sets scored with the Open Images Challenge metric.

The entry ``oiv6_vcm`` (``conf/dataset/oiv6_vcm.yaml``) is the 5,000-image Open Images V6
validation subset that MPEG's Video Coding for Machines common test conditions use, with MPEG's own
files (from InterDigitalInc/CompressAI-Vision, folder ``data/mpeg-vcm/``):

* ``detection_validation_input_5k.lst``: the image file names, in the CTC's order;
* ``detection_validation_5k_bbox.csv``: ``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf`` boxes;
* ``detection_validation_labels_5k.csv``: ``ImageID,LabelName,Confidence`` verified image labels.

MPEG already renamed the Open Images classes to the detector's COCO names (lower case, spaces as
``_``: ``traffic_light``), so no hierarchy is needed. The images are the official Open Images V6
validation pictures, which users download themselves. The CTC's "1000 images" are the first 1000
names of the list, in order (``num_images``); a list file of the user's may replace the list.

The same class reads general Open Images ground truth too (``label_format="oi_mid"``: labels are
machine ids such as ``/m/01g317``, optionally expanded with a hierarchy JSON); detector classes are
then mapped to Open Images classes with ``resources/coco80_to_openimages.csv``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from vcm_eval.data.base import DetectionDataset, DetectionEvaluator, ImageRecord
from vcm_eval.data.images import ImageReadError
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.openimages import (
    DEFAULT_IOU,
    OpenImagesEvaluator,
    OpenImagesGroundTruth,
    ground_truth_by_image,
)
from vcm_eval.evaluation.openimages_files import (
    Category,
    InputCounts,
    LabelHierarchy,
    OpenImagesFormatError,
    categories_from_labels,
    check_labels_known,
    expand_boxes,
    expand_image_labels,
    iter_list_file,
    read_class_descriptions,
    read_gt_boxes,
    read_image_labels,
)
from vcm_eval.hashing import file_sha256

log = logging.getLogger(__name__)

ENV_ANNOTATIONS = "VCM_EVAL_OIV6_ANNOTATIONS"
ENV_IMAGES = "VCM_EVAL_OIV6_IMAGES"
ENV_LIST = "VCM_EVAL_OIV6_LIST"
MPEG_VCM_LIST = "detection_validation_input_5k.lst"
MPEG_VCM_BOXES = "detection_validation_5k_bbox.csv"
MPEG_VCM_LABELS = "detection_validation_labels_5k.csv"
MPEG_VCM_SOURCE = "https://github.com/InterDigitalInc/CompressAI-Vision/tree/main/data/mpeg-vcm"
OPEN_IMAGES_SOURCE = "https://storage.googleapis.com/openimages/web/download_v6.html"
LABEL_FORMATS = {"mpeg_vcm": "mpeg_vcm_label", "oi_mid": "oi_mid"}
#: List entries without a suffix are taken as image ids of JPEG files.
DEFAULT_SUFFIX = ".jpg"


@cache
def coco_to_openimages() -> pd.DataFrame:
    """The COCO-80 -> MPEG VCM / Open Images class table (``resources/coco80_to_openimages.csv``;
    its header comment states the sources and the judgement calls)."""
    with resources.files("vcm_eval.data").joinpath("resources/coco80_to_openimages.csv").open(encoding="utf-8") as f:
        return pd.read_csv(f, comment="#", dtype=str, keep_default_na=False)


def label_of_class(label_format: str) -> dict[str, str]:
    """Detector class name (COCO spelling) -> dataset label in ``label_format`` (``mpeg_vcm`` or ``oi_mid``)."""
    if label_format not in LABEL_FORMATS:
        raise SettingError(f"label_format must be one of {sorted(LABEL_FORMATS)}, got {label_format!r}")
    table = coco_to_openimages()
    return dict(zip(table.coco_name, table[LABEL_FORMATS[label_format]]))


def picture_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a picture as :func:`~vcm_eval.data.images.read_image` returns it.

    Only the header is read for JPEG files; EXIF orientations 5-8 swap width and height, as the
    transpose ``read_image`` applies does.

    Raises:
        ImageReadError: naming the file when it is missing or not a picture.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file; check the dataset's image folder setting")
    try:
        with Image.open(path) as img:
            if img.format != "JPEG":
                img.load()  # other formats may keep EXIF after the pixel data
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read this picture ({exc}); the file is corrupt or not an image") from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return height, width


def read_image_list(path: str | Path) -> list[str]:
    """Image file names of a list file (one a line; ``<ImageID>.jpg`` or a bare id, which gets ``.jpg``).

    Raises:
        OpenImagesFormatError: for a missing file, an entry with a folder part, or a repeated id.
    """
    path = Path(path)
    if not path.is_file():
        raise OpenImagesFormatError(f"{path}: no such image list file; check the list file setting "
                                    f"(or the {ENV_LIST} environment variable)")
    names: list[str] = []
    first_line: dict[str, int] = {}
    for line, entry in iter_list_file(path):
        if "/" in entry or "\\" in entry:
            raise OpenImagesFormatError(f"{path}: line {line}: {entry!r} has a folder part; list file names "
                                        "relative to the image folder")
        name = entry if Path(entry).suffix else entry + DEFAULT_SUFFIX
        stem = Path(name).stem
        if stem in first_line:
            raise OpenImagesFormatError(f"{path}: line {line}: image {stem} is listed again (first at line "
                                        f"{first_line[stem]}); list each image once")
        first_line[stem] = line
        names.append(name)
    if not names:
        raise OpenImagesFormatError(f"{path}: the image list is empty")
    return names


def select_images(names: Sequence[str], num_images: int | None, source: str = "image list") -> list[str]:
    """The first ``num_images`` names (all when None), in list order."""
    if num_images is None:
        return list(names)
    if int(num_images) < 1:
        raise SettingError(f"num_images must be >= 1 or null, got {num_images}")
    if int(num_images) > len(names):
        raise SettingError(f"num_images={num_images} but the {source} has only {len(names)} images")
    return list(names[: int(num_images)])


def _need(value: str | Path | None, setting: str, env: str, what: str) -> Path:
    if value is None or str(value) == "":
        raise SettingError(
            f"dataset: {setting} is not set. Set {setting}=... (e.g. dataset.{setting}=/path) or the environment "
            f"variable {env} to {what}")
    return Path(value).expanduser()


class OpenImagesDataset(DetectionDataset):
    """An Open Images detection set read from annotation CSVs and an image folder.

    Args:
        annotations_dir: folder of the list and annotation files (relative file names below are
            taken from here). For ``oiv6_vcm``: the MPEG VCM files (``$VCM_EVAL_OIV6_ANNOTATIONS``).
        images_dir: folder of the pictures named in the list (``$VCM_EVAL_OIV6_IMAGES``).
        list_file: image list; ``None`` takes every image with ground truth, in sorted id order.
        boxes_file: box CSV (``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf``).
        labels_file: image-level label CSV (``ImageID,LabelName,Confidence``).
        num_images: the first N images of the list (the CTC's count); ``None`` for all.
        name: dataset name recorded with results.
        label_format: ``"mpeg_vcm"`` (COCO names as MPEG writes them) or ``"oi_mid"`` (Open Images
            machine ids); detector classes are mapped with ``resources/coco80_to_openimages.csv``.
        hierarchy_file: Open Images hierarchy JSON; when given, boxes and labels are expanded.
        class_descriptions_file: Open Images class descriptions; when given, every ground-truth
            label must be in it (and display names are kept).
        iou_threshold: matching threshold of the metric (headline ``map_50`` at 0.5).
        duplicate_boxes: ``"error"`` (default), ``"keep"`` or ``"drop"`` repeated box rows.
        check_images: stat every selected picture at construction and fail naming missing ones.

    Raises:
        ValueError: for an unset folder, naming the setting and environment variable.
        OpenImagesFormatError: for a missing or malformed file, naming it.
        ImageReadError: for missing pictures (with ``check_images``), naming them.
    """

    def __init__(self, *, annotations_dir: str | Path | None, images_dir: str | Path | None,
                 list_file: str | Path | None = MPEG_VCM_LIST, boxes_file: str | Path = MPEG_VCM_BOXES,
                 labels_file: str | Path = MPEG_VCM_LABELS, num_images: int | None = None,
                 name: str = "oiv6_vcm", label_format: str = "mpeg_vcm",
                 hierarchy_file: str | Path | None = None, class_descriptions_file: str | Path | None = None,
                 iou_threshold: float = DEFAULT_IOU, duplicate_boxes: str = "error",
                 check_images: bool = True) -> None:
        fix_files = (f"the folder with {MPEG_VCM_LIST}, {MPEG_VCM_BOXES} and {MPEG_VCM_LABELS} (MPEG VCM's "
                     f"files, from {MPEG_VCM_SOURCE})")
        self.annotations_dir = _need(annotations_dir, "annotations_dir", ENV_ANNOTATIONS, fix_files)
        self.images_dir = _need(images_dir, "images_dir", ENV_IMAGES,
                                f"the folder of the Open Images V6 validation pictures ({OPEN_IMAGES_SOURCE})")
        if not self.annotations_dir.is_dir():
            raise SettingError(f"dataset: annotations_dir {self.annotations_dir} is not a folder; set it (or "
                             f"{ENV_ANNOTATIONS}) to {fix_files}")
        if not self.images_dir.is_dir():
            raise SettingError(f"dataset: images_dir {self.images_dir} is not a folder; set it (or {ENV_IMAGES}) "
                             f"to the folder of the Open Images V6 validation pictures ({OPEN_IMAGES_SOURCE})")
        self.name = name
        self.label_format = label_format
        self.iou_threshold = float(iou_threshold)
        self._label_of_class = label_of_class(label_format)
        self._files = {"boxes": self._resolve(boxes_file), "labels": self._resolve(labels_file)}
        if list_file is not None:
            self._files["list"] = self._resolve(list_file)
        if hierarchy_file is not None:
            self._files["hierarchy"] = self._resolve(hierarchy_file)
        if class_descriptions_file is not None:
            self._files["class_descriptions"] = self._resolve(class_descriptions_file)

        counts = InputCounts()
        boxes = read_gt_boxes(self._files["boxes"], duplicates=duplicate_boxes, counts=counts)
        labels = read_image_labels(self._files["labels"], counts=counts)
        display: dict[str, str] = {}
        if "class_descriptions" in self._files:
            described = read_class_descriptions(self._files["class_descriptions"])
            display = {c.name: c.display_name for c in described}
            check_labels_known(boxes, display, self._files["boxes"], "box")
            check_labels_known(labels, display, self._files["labels"], "image-level")
        elif label_format == "mpeg_vcm":
            known = set(self._label_of_class.values())
            check_labels_known(boxes, known, self._files["boxes"], "box")
            check_labels_known(labels, known, self._files["labels"], "image-level")
        if "hierarchy" in self._files:
            hierarchy = LabelHierarchy.from_file(self._files["hierarchy"])
            boxes = expand_boxes(boxes, hierarchy, self._files["boxes"])
            labels = expand_image_labels(labels, hierarchy, self._files["labels"])

        with_gt = set(boxes.ImageID) | set(labels.ImageID)
        if "list" in self._files:
            names = read_image_list(self._files["list"])
        else:
            names = [i + DEFAULT_SUFFIX for i in sorted(with_gt)]
        names = select_images(names, num_images, str(self._files.get("list", "ground truth")))
        self._records = [ImageRecord(Path(n).stem, self.images_dir / n) for n in names]
        self._path_of = {r.image_id: r.path for r in self._records}
        image_ids = [r.image_id for r in self._records]
        selected = set(image_ids)
        boxes = boxes[boxes.ImageID.isin(selected)]
        labels = labels[labels.ImageID.isin(selected)]
        without_gt = [i for i in image_ids if i not in with_gt]
        counts.add("images_without_gt", len(without_gt))
        if without_gt:
            log.warning("%d of %d selected images have no ground truth (their detections are not scored), e.g. %s",
                        len(without_gt), len(image_ids), without_gt[:3])
        categories = [Category(c.id, c.name, display.get(c.name, c.name))
                      for c in categories_from_labels(list(boxes.LabelName) + list(labels.LabelName))]
        if not categories:
            raise OpenImagesFormatError(f"{self._files['boxes']}: none of the {len(image_ids)} selected images has "
                                        "ground truth; check that the list and the annotation files belong together")
        self._ground_truth = OpenImagesGroundTruth(
            image_ids=image_ids, categories=categories,
            images=ground_truth_by_image(boxes, labels, categories, image_ids), counts=counts.nonzero())
        self._sizes: dict[str, tuple[int, int]] = {}
        if check_images:
            missing = [r.path.name for r in self._records if not r.path.is_file()]
            if missing:
                raise ImageReadError(
                    f"{len(missing)} of {len(self._records)} listed images are missing from {self.images_dir}: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Download them from the Open "
                    f"Images V6 validation set ({OPEN_IMAGES_SOURCE}); `python tools/check_images.py` lists "
                    "every missing or unreadable picture")

    def _resolve(self, name: str | Path) -> Path:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.annotations_dir / path
        if not path.is_file():
            raise OpenImagesFormatError(
                f"{path}: no such file. The annotation folder needs {MPEG_VCM_LIST}, {MPEG_VCM_BOXES} and "
                f"{MPEG_VCM_LABELS} for oiv6_vcm (get them from {MPEG_VCM_SOURCE})")
        return path

    @property
    def ground_truth(self) -> OpenImagesGroundTruth:
        return self._ground_truth

    @property
    def categories(self) -> list[Category]:
        return list(self._ground_truth.categories)

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) of a listed picture (header read once, then cached)."""
        if image_id not in self._sizes:
            if image_id not in self._path_of:
                raise KeyError(f"image {image_id!r} is not in dataset {self.name}")
            self._sizes[image_id] = picture_size(self._path_of[image_id])
        return self._sizes[image_id]

    def make_evaluator(self, class_names: Sequence[str]) -> DetectionEvaluator:
        return OpenImagesEvaluator(self._ground_truth, class_names, self._label_of_class, self.image_size,
                                   iou_threshold=self.iou_threshold)

    def identity(self) -> dict:
        ids = "\n".join(r.image_id for r in self._records).encode()
        return {
            "name": self.name,
            "num_images": len(self._records),
            "images_sha256": hashlib.sha256(ids).hexdigest(),
            "files": {k: {"name": p.name, "sha256": file_sha256(p)} for k, p in sorted(self._files.items())},
            "label_format": self.label_format,
            "iou_threshold": self.iou_threshold,
            "metric": "Open Images Challenge detection (TF OD API OpenImagesChallengeEvaluator semantics)",
        }


def default_paths() -> dict[str, str | None]:
    """The folders and list the environment names (``None`` where unset)."""
    return {"annotations_dir": os.environ.get(ENV_ANNOTATIONS), "images_dir": os.environ.get(ENV_IMAGES),
            "list_file": os.environ.get(ENV_LIST)}
