"""Sequences as data: frames, a frame rate, and per-frame boxes with track ids.

A video CTC codes and scores sequences, not pictures. :class:`SequenceDataset` is what the video sweep reads;
two readers cover the layouts of MPEG FCM's test data:

- :class:`MotSequences`: MOTChallenge's layout, which TVD and HiEve use: one folder per sequence with
  ``seqinfo.ini`` (``name``, ``imDir``, ``frameRate``, ``seqLength``, ``imWidth``, ``imHeight``, ``imExt``),
  its frames ``<imDir>/000001<imExt>``..., and ``gt/gt.txt`` of rows
  ``frame, id, x, y, w, h, flag, class, visibility`` (1-based frames; ``flag = 0`` rows are ignored, as the
  MOT devkit ignores them; ``class`` is mapped to a class name by ``classes``);
- :class:`SfuHwSequences`: SFU-HW-Objects-v1: 8-bit 4:2:0 ``.yuv`` sequences named
  ``<Name>_<W>x<H>_<fps>[...].yuv`` and, per sequence, one YOLO-format text file per frame
  (``class cx cy w h``, normalised to the picture; ``class`` a COCO class index), in the HEVC CTC's
  classes A-E.

Frames are RGB uint8 (H, W, 3); boxes ``x0, y0, x1, y1`` in pixels.
"""

from __future__ import annotations

import abc
import configparser
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vcm_eval.errors import MissingInputError, SettingError

#: the sequence tasks of a video CTC
SEQUENCE_TASKS = ("detection", "tracking")


@dataclass(frozen=True)
class FrameObjects:
    """The annotated objects of one frame: (N, 4) ``x0, y0, x1, y1`` boxes, class indices, track ids."""

    boxes: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray

    @classmethod
    def empty(cls) -> FrameObjects:
        return cls(np.zeros((0, 4), np.float64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SequenceRecord:
    """One sequence: its id, class (SFU's A-E, or a set's own grouping), frames used, frame rate and size."""

    sequence_id: str
    seq_class: str
    num_frames: int
    frame_rate: float
    width: int
    height: int
    source: str


class SequenceDataset(abc.ABC):
    """What a video CTC reads. Subclasses say where frames and annotations are."""

    name: str = "sequences"
    class_names: list[str] = []
    task: str = "detection"

    @abc.abstractmethod
    def sequences(self) -> list[SequenceRecord]:
        """The sequences of the CTC, in a fixed order."""

    @abc.abstractmethod
    def frame(self, record: SequenceRecord, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) of ``record``: RGB uint8 (H, W, 3)."""

    @abc.abstractmethod
    def annotations(self, record: SequenceRecord) -> list[FrameObjects]:
        """The ground truth of each frame used (``record.num_frames`` of them)."""

    def fingerprint(self, record: SequenceRecord) -> str:
        """sha256 of the sequence's id and the samples of every frame used: cache keys follow the content."""
        digest = hashlib.sha256(f"{record.sequence_id}:{record.num_frames}".encode())
        for index in range(record.num_frames):
            digest.update(np.ascontiguousarray(self.frame(record, index)).tobytes())
        return digest.hexdigest()

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "class": type(self).__name__,
                "sequences": [r.sequence_id for r in self.sequences()]}


def _check_task(task: str) -> str:
    if task not in SEQUENCE_TASKS:
        raise SettingError(f"ctc.task={task}: sequences are scored for {list(SEQUENCE_TASKS)}")
    return task


def _select(records: list[SequenceRecord], names: Sequence[str] | None, where: Path) -> list[SequenceRecord]:
    if not names:
        return records
    by_name = {r.sequence_id: r for r in records}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise MissingInputError(f"{where}: no sequences {missing}; it holds {sorted(by_name)} (dataset.sequences)")
    return [by_name[n] for n in names]


def read_mot_gt(path: Path, num_frames: int, classes: Mapping[int, int]) -> list[FrameObjects]:
    """``gt.txt`` rows as :class:`FrameObjects` per frame (frames 1..num_frames); rows with flag 0 or a class
    not in ``classes`` (MOT class id -> class index) are left out."""
    per_frame: list[list[tuple]] = [[] for _ in range(num_frames)]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no ground truth; a MOT sequence folder holds gt/gt.txt") from None
    except UnicodeDecodeError as exc:
        raise MissingInputError(f"{path}: not a text file ({exc}); expected MOT gt.txt rows") from None
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            frame, track, x, y, w, h = int(float(fields[0])), int(float(fields[1])), *map(float, fields[2:6])
            flag = float(fields[6]) if len(fields) > 6 else 1.0
            mot_class = int(float(fields[7])) if len(fields) > 7 else 1
        except (ValueError, IndexError):
            raise SettingError(f"{path}:{line_number}: {line!r} is not a MOT row "
                               "(frame, id, x, y, w, h, flag, class, visibility)") from None
        if flag == 0 or mot_class not in classes or not 1 <= frame <= num_frames:
            continue
        per_frame[frame - 1].append((x, y, x + w, y + h, classes[mot_class], track))
    out = []
    for rows in per_frame:
        if not rows:
            out.append(FrameObjects.empty())
            continue
        a = np.asarray(rows, np.float64)
        out.append(FrameObjects(a[:, :4], a[:, 4].astype(np.int64), a[:, 5].astype(np.int64)))
    return out


class MotSequences(SequenceDataset):
    """Sequences in MOTChallenge's layout (TVD, HiEve, and the embedded synthetic video set).

    Args:
        root: the folder holding one folder per sequence.
        class_names: the data set's class names; ``classes`` maps MOT class ids onto their indices.
        classes: MOT class id -> index into ``class_names``; default ``{1: 0}`` (MOT's pedestrian).
        sequences: the sequences to use, in order (default: every folder with a ``seqinfo.ini``, sorted).
        seq_classes: sequence -> its class in the reports (default: the set's ``name``).
        num_frames: use only the first N frames of each sequence (default: all).
        task: ``detection`` or ``tracking``.
        name: the set's name in reports.
    """

    def __init__(self, root: str | Path, *, class_names: Sequence[str] = ("person",),
                 classes: Mapping[int, int] | None = None, sequences: Sequence[str] | None = None,
                 seq_classes: Mapping[str, str] | None = None, num_frames: int | None = None,
                 task: str = "tracking", name: str = "mot") -> None:
        self.root = Path(root)
        self.class_names = [str(c) for c in class_names]
        self.classes = {int(k): int(v) for k, v in (classes or {1: 0}).items()}
        self.selected = list(sequences or [])
        self.seq_classes = dict(seq_classes or {})
        self.num_frames = None if num_frames is None else int(num_frames)
        self.task = _check_task(str(task))
        self.name = name

    def _info(self, folder: Path) -> configparser.SectionProxy:
        parser = configparser.ConfigParser()
        path = folder / "seqinfo.ini"
        try:
            parser.read_string(path.read_text(encoding="utf-8"))
            return parser["Sequence"]
        except (OSError, UnicodeDecodeError, configparser.Error, KeyError) as exc:
            raise MissingInputError(f"{path}: not a MOT seqinfo.ini with a [Sequence] section ({exc})") from None

    @cached_property
    def _records(self) -> list[SequenceRecord]:
        if not self.root.is_dir():
            raise MissingInputError(f"{self.root}: no such folder; set dataset.root to the folder of the MOT-style "
                                    "sequence folders (each with seqinfo.ini, img1/, gt/gt.txt)")
        records = []
        for folder in sorted(p for p in self.root.iterdir() if (p / "seqinfo.ini").is_file()):
            info = self._info(folder)
            try:
                length = int(info["seqLength"])
                record = SequenceRecord(
                    sequence_id=folder.name, seq_class=self.seq_classes.get(folder.name, self.name),
                    num_frames=min(length, self.num_frames or length), frame_rate=float(info["frameRate"]),
                    width=int(info["imWidth"]), height=int(info["imHeight"]), source=str(folder))
            except (KeyError, ValueError) as exc:
                raise MissingInputError(f"{folder / 'seqinfo.ini'}: missing or bad field ({exc}); it needs "
                                        "seqLength, frameRate, imWidth, imHeight") from None
            records.append(record)
        if not records:
            raise MissingInputError(f"{self.root}: holds no sequence folder with a seqinfo.ini")
        return _select(records, self.selected, self.root)

    def sequences(self) -> list[SequenceRecord]:
        return list(self._records)

    def frame_path(self, record: SequenceRecord, index: int) -> Path:
        info = self._info(Path(record.source))
        return Path(record.source) / info.get("imDir", "img1") / f"{index + 1:06d}{info.get('imExt', '.jpg')}"

    def frame(self, record: SequenceRecord, index: int) -> np.ndarray:
        path = self.frame_path(record, index)
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise MissingInputError(f"{path}: frame {index + 1} of {record.sequence_id} is missing") from None
        except OSError as exc:
            raise MissingInputError(f"{path}: cannot read frame {index + 1} of {record.sequence_id} ({exc}); "
                                    "replace the file") from None
        if rgb.shape[:2] != (record.height, record.width):
            raise MissingInputError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, but seqinfo.ini says "
                                    f"{record.width}x{record.height}")
        return rgb

    def annotations(self, record: SequenceRecord) -> list[FrameObjects]:
        return read_mot_gt(Path(record.source) / "gt" / "gt.txt", record.num_frames, self.classes)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "classes": self.classes, "num_frames": self.num_frames}


#: HEVC CTC classes of the SFU-HW-Objects-v1 sequences (by the name before the size)
SFU_CLASSES = {
    "Traffic": "A", "PeopleOnStreet": "A",
    "Kimono": "B", "ParkScene": "B", "Cactus": "B", "BasketballDrive": "B", "BQTerrace": "B",
    "BasketballDrill": "C", "BQMall": "C", "PartyScene": "C", "RaceHorsesC": "C", "RaceHorses": "D",
    "BasketballPass": "D", "BQSquare": "D", "BlowingBubbles": "D",
    "FourPeople": "E", "Johnny": "E", "KristenAndSara": "E",
}
_SFU_NAME = re.compile(r"^(?P<name>[A-Za-z]+)_(?P<w>\d+)x(?P<h>\d+)_(?P<fps>\d+)")


class SfuHwSequences(SequenceDataset):
    """SFU-HW-Objects-v1: 8-bit 4:2:0 YUV sequences with per-frame YOLO-format boxes (COCO classes).

    Args:
        root: the folder of the ``.yuv`` files.
        annotations: the folder holding one folder per sequence (named as the ``.yuv`` file without suffix, or
            as the sequence's name), each with one ``*.txt`` per frame in frame order (sorted by name).
        class_names: the class names the indices refer to (COCO's 80, as SFU-HW-Objects-v1 uses them).
        sequences: the sequences to use by name (default: every ``.yuv`` in ``root``).
        num_frames: use only the first N frames of each sequence.
        name: the set's name in reports.
    """

    def __init__(self, root: str | Path, annotations: str | Path, *, class_names: Sequence[str] | None = None,
                 sequences: Sequence[str] | None = None, num_frames: int | None = None, task: str = "detection",
                 name: str = "sfu_hw") -> None:
        from vcm_eval.models.rcnn.coco_classes import COCO_CLASS_NAMES

        self.root, self.annotations_root = Path(root), Path(annotations)
        self.class_names = [str(c) for c in (class_names or COCO_CLASS_NAMES)]
        self.selected = list(sequences or [])
        self.num_frames = None if num_frames is None else int(num_frames)
        self.task = _check_task(str(task))
        if self.task != "detection":
            raise SettingError("SFU-HW-Objects-v1 has boxes but no track ids: score it with ctc.task=detection")
        self.name = name

    @cached_property
    def _records(self) -> list[SequenceRecord]:
        if not self.root.is_dir():
            raise MissingInputError(f"{self.root}: no such folder; set dataset.root to the folder of the SFU-HW "
                                    "sequences (<Name>_<W>x<H>_<fps>.yuv)")
        records = []
        for path in sorted(self.root.glob("*.yuv")):
            match = _SFU_NAME.match(path.name)
            if not match:
                raise SettingError(f"{path}: not named <Name>_<W>x<H>_<fps>[...].yuv; rename it so that its size "
                                   "and frame rate can be read")
            w, h, fps = int(match["w"]), int(match["h"]), float(match["fps"])
            length = path.stat().st_size // (w * h * 3 // 2)
            name = match["name"]
            records.append(SequenceRecord(name, SFU_CLASSES.get(name, "?"), min(length, self.num_frames or length),
                                          fps, w, h, str(path)))
        if not records:
            raise MissingInputError(f"{self.root}: holds no .yuv sequence")
        return _select(records, self.selected, self.root)

    def sequences(self) -> list[SequenceRecord]:
        return list(self._records)

    def frame(self, record: SequenceRecord, index: int) -> np.ndarray:
        from vcm_eval.codecs.colour import ycbcr_to_rgb
        from vcm_eval.types import Frame

        w, h = record.width, record.height
        size = w * h * 3 // 2
        with open(record.source, "rb") as f:
            f.seek(index * size)
            data = f.read(size)
        if len(data) != size:
            raise MissingInputError(f"{record.source}: frame {index} is cut short ({len(data)} of {size} bytes)")
        samples = np.frombuffer(data, np.uint8)
        y = samples[: w * h].reshape(h, w)
        u = samples[w * h: w * h * 5 // 4].reshape(h // 2, w // 2)
        v = samples[w * h * 5 // 4:].reshape(h // 2, w // 2)
        return ycbcr_to_rgb(Frame((y.astype(np.uint16), u.astype(np.uint16), v.astype(np.uint16)), 8, "420"), (h, w))

    def _annotation_files(self, record: SequenceRecord) -> list[Path]:
        stem = Path(record.source).stem
        for folder in (self.annotations_root / stem, self.annotations_root / record.sequence_id):
            if folder.is_dir():
                files = sorted(folder.glob("*.txt"))
                if len(files) < record.num_frames:
                    raise MissingInputError(f"{folder}: {len(files)} annotation files for {record.num_frames} "
                                            "frames; each frame needs its own <name>_<frame>.txt")
                return files[: record.num_frames]
        raise MissingInputError(f"{self.annotations_root}: no folder {stem}/ or {record.sequence_id}/ of "
                                "per-frame annotation files (dataset.annotations)")

    def annotations(self, record: SequenceRecord) -> list[FrameObjects]:
        out = []
        for path in self._annotation_files(record):
            rows = []
            for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    cls, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
                except ValueError:
                    raise SettingError(f"{path}:{line_number}: {line!r} is not a YOLO row (class cx cy w h)") from None
                x0, y0 = (cx - bw / 2) * record.width, (cy - bh / 2) * record.height
                rows.append((x0, y0, x0 + bw * record.width, y0 + bh * record.height, int(cls)))
            if not rows:
                out.append(FrameObjects.empty())
                continue
            a = np.asarray(rows, np.float64)
            out.append(FrameObjects(a[:, :4], a[:, 4].astype(np.int64), np.arange(len(a), dtype=np.int64)))
        return out
