"""The embedded synthetic video set (``ctc=embedded_video``): short sequences in the natural style, with tracks.

Each sequence is a pure function of ``(seed, index, frames, size)``:

- a background patchwork of the bundled photographs (as the natural still pictures), larger than the frame;
  a ``panning`` sequence moves its view over it by a constant whole-pixel velocity per frame, a ``static`` one
  keeps it still (the two classes of the set's per-class BD-rate);
- 4-7 objects of the six classes with photo-textured, class-tinted fills, each moving on a smooth path
  ``p(t) = p0 + v t + a sin(2 pi t / T + phi)``; about a third start outside the frame and enter it, others
  leave it; later objects pass in front of earlier ones (occlusions);
- the same sensor (read and shot noise) on every frame, new noise each frame.

Ground truth per frame is every object whose visible part (neither occluded nor outside the frame) is at least
half its shape and at least 8 px each way, boxed at its visible extent, with the object's track id. The set is
written once in MOTChallenge's layout (``seqinfo.ini``, ``img1/000001.png``, ``gt/gt.txt`` with the class column
``1..6``) and read back with :class:`~vcm_eval.data.sequences.MotSequences`, the reader TVD and HiEve use.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vcm_eval.data.sequences import FrameObjects, MotSequences
from vcm_eval.data.synthetic import (
    _FEATHER_PAD,
    CLASS_NAMES,
    MIN_OBJECT_PX,
    MIN_VISIBLE_FRACTION,
    _natural_fill,
    _object_geometry,
    _patchwork,
    _sensor_noise,
    default_root,
)
from vcm_eval.errors import SettingError

#: bump when the generator's output changes (it names the folder, so a new version is generated anew)
VIDEO_GENERATOR_VERSION = 1
OBJECTS_PER_SEQUENCE = (4, 7)
MAX_SPEED_PX = 3.0
MAX_PAN_PX = 2


def _object_size_cap(h: int, w: int) -> int:
    return int(0.45 * min(h, w))


def generate_sequence(seed: int, index: int, num_frames: int, height: int, width: int
                      ) -> tuple[list[np.ndarray], list[FrameObjects], str]:
    """Frames (RGB uint8), per-frame ground truth and the class (``static`` / ``panning``) of sequence ``index``."""
    rng = np.random.default_rng([int(seed), 20261207, int(index)])
    panning = index % 2 == 1
    pan = (np.array([int(rng.integers(-MAX_PAN_PX, MAX_PAN_PX + 1)) or 1,
                     int(rng.integers(-MAX_PAN_PX, MAX_PAN_PX + 1))]) if panning else np.zeros(2, int))
    reach = np.abs(pan) * max(num_frames - 1, 0)
    canvas_h, canvas_w = height + int(reach[1]), width + int(reach[0])
    canvas, _ = _patchwork(canvas_h, canvas_w, rng)
    grey = canvas.convert("L").convert("RGB")
    canvas = Image.composite(canvas, grey, Image.new("L", (canvas_w, canvas_h), int(rng.integers(140, 240))))
    soft = float(rng.uniform(0.3, 0.6)) if rng.random() < 0.35 else 0.0
    read, gain = float(rng.uniform(1.0, 3.0)), float(rng.uniform(0.01, 0.06))
    start = np.where(pan < 0, reach, 0)  # the view's top-left on the canvas at frame 0

    objects = []
    cap = _object_size_cap(height, width)
    for _ in range(int(rng.integers(OBJECTS_PER_SEQUENCE[0], OBJECTS_PER_SEQUENCE[1] + 1))):
        cls, ow, oh, mask = _object_geometry(min(width, cap), min(height, cap), rng)
        pad = _FEATHER_PAD
        fill = Image.fromarray(_natural_fill(CLASS_NAMES[cls], oh + 2 * pad, ow + 2 * pad, rng), "RGB")
        hard = np.pad(np.where(mask, np.uint8(255), np.uint8(0)), pad)
        alpha = Image.fromarray(hard, "L").filter(ImageFilter.BoxBlur(float(rng.uniform(0.4, 1.0))))
        speed = rng.uniform(0.5, MAX_SPEED_PX)
        if rng.random() < 1 / 3:  # enters: starts beyond one side, heading in
            side, beyond, drift = int(rng.integers(0, 4)), float(rng.uniform(0, 20)), float(rng.uniform(-0.4, 0.4))
            x, y = float(rng.uniform(0, max(1, width - ow))), float(rng.uniform(0, max(1, height - oh)))
            p0, velocity = {0: ((-ow - beyond, y), (speed, drift)), 1: ((width + beyond, y), (-speed, drift)),
                            2: ((x, -oh - beyond), (drift, speed)), 3: ((x, height + beyond), (drift, -speed))}[side]
            p0, velocity = np.array(p0), np.array(velocity)
        else:
            p0 = np.array([rng.uniform(0, max(1, width - ow)), rng.uniform(0, max(1, height - oh))])
            angle = rng.uniform(0, 2 * math.pi)
            velocity = speed * np.array([math.cos(angle), math.sin(angle)])
        wobble = (rng.uniform(0, 8), rng.uniform(30, 90), rng.uniform(0, 2 * math.pi))
        objects.append((cls, ow, oh, mask, fill, alpha, p0, velocity, wobble))

    frames, truth = [], []
    for t in range(num_frames):
        x0, y0 = (start + pan * t).astype(int)
        frame = canvas.crop((int(x0), int(y0), int(x0) + width, int(y0) + height))
        owner = np.full((height, width), -1, np.int32)
        for k, (_cls, _ow, _oh, mask, fill, alpha, p0, velocity, (amp, period, phase)) in enumerate(objects):
            offset = amp * math.sin(2 * math.pi * t / period + phase)
            x = int(round(p0[0] + velocity[0] * t + offset * -velocity[1] / (np.hypot(*velocity) + 1e-9)))
            y = int(round(p0[1] + velocity[1] * t + offset * velocity[0] / (np.hypot(*velocity) + 1e-9)))
            frame.paste(fill, (x - _FEATHER_PAD, y - _FEATHER_PAD), alpha)
            ys, xs = np.nonzero(mask)
            ys, xs = ys + y, xs + x
            inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            owner[ys[inside], xs[inside]] = k
        if soft:
            frame = frame.filter(ImageFilter.BoxBlur(soft))
        noise_rng = np.random.default_rng([int(seed), 20261207, int(index), t + 1])
        frames.append(_sensor_noise(np.asarray(frame, dtype=np.uint8), noise_rng, read, gain))
        rows = []
        for k, (cls, *_rest) in enumerate(objects):
            visible = owner == k
            count = int(visible.sum())
            if count < MIN_VISIBLE_FRACTION * int(objects[k][3].sum()):
                continue
            ys, xs = np.nonzero(visible)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            if box[2] - box[0] < MIN_OBJECT_PX or box[3] - box[1] < MIN_OBJECT_PX:
                continue
            rows.append((*box, cls, k + 1))
        if rows:
            a = np.asarray(rows, np.float64)
            truth.append(FrameObjects(a[:, :4], a[:, 4].astype(np.int64), a[:, 5].astype(np.int64)))
        else:
            truth.append(FrameObjects.empty())
    return frames, truth, "panning" if panning else "static"


def write_sequences(folder: str | Path, *, seed: int, num_sequences: int, num_frames: int, height: int,
                    width: int, frame_rate: float = 30.0) -> Path:
    """Generate the set into ``folder`` in MOTChallenge's layout (atomic; kept if present)."""
    folder = Path(folder).expanduser()
    if (folder / "COMPLETE").is_file():
        return folder
    if num_sequences < 1 or num_frames < 1:
        raise SettingError(f"the synthetic video set needs sequences and frames, got {num_sequences} x {num_frames}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        classes = []
        for index in range(num_sequences):
            frames, truth, seq_class = generate_sequence(seed, index, num_frames, height, width)
            name = f"synthetic-{index:02d}"
            classes.append(f"{name} {seq_class}")
            (tmp / name / "img1").mkdir(parents=True)
            (tmp / name / "gt").mkdir()
            for t, rgb in enumerate(frames):
                Image.fromarray(rgb, "RGB").save(tmp / name / "img1" / f"{t + 1:06d}.png", compress_level=6)
            lines = [f"{t + 1},{int(tid)},{b[0]:.0f},{b[1]:.0f},{b[2] - b[0]:.0f},{b[3] - b[1]:.0f},1,{int(c) + 1},1"
                     for t, objs in enumerate(truth) for b, c, tid in zip(objs.boxes, objs.labels, objs.track_ids)]
            (tmp / name / "gt" / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (tmp / name / "seqinfo.ini").write_text(
                f"[Sequence]\nname={name}\nimDir=img1\nframeRate={frame_rate:g}\nseqLength={num_frames}\n"
                f"imWidth={width}\nimHeight={height}\nimExt=.png\n", encoding="utf-8")
        (tmp / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
        (tmp / "COMPLETE").write_text(f"generator {VIDEO_GENERATOR_VERSION}\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "COMPLETE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class SyntheticVideoDataset(MotSequences):
    """The embedded video set, generated into ``root`` on first use, then read as MOT-style sequences.

    Args:
        root: where generated sets live (default: the synthetic set's data folder).
        seed: the generator's seed (held-out sets: other seeds).
        num_sequences, num_frames: how many sequences, of how many frames.
        height, width: frame size.
        frame_rate: the frame rate written to ``seqinfo.ini`` (the kbps figures use it).
        task: ``detection`` or ``tracking``.
    """

    def __init__(self, root: str | Path | None = None, *, seed: int = 0, num_sequences: int = 8,
                 num_frames: int = 64, height: int = 320, width: int = 416, frame_rate: float = 30.0,
                 task: str = "detection", name: str = "embedded_video") -> None:
        self.params = {"seed": int(seed), "num_sequences": int(num_sequences), "num_frames": int(num_frames),
                       "height": int(height), "width": int(width), "frame_rate": float(frame_rate)}
        base = Path(root).expanduser() if root is not None else default_root()
        folder = base / (f"video-v{VIDEO_GENERATOR_VERSION}-seed{seed}-{num_sequences}x{num_frames}-"
                         f"{width}x{height}-{frame_rate:g}fps")
        super().__init__(folder, class_names=CLASS_NAMES, classes={k + 1: k for k in range(len(CLASS_NAMES))},
                         task=task, name=name)

    @property
    def _records(self):  # generated on first use, then read as any MOT-style folder
        if not hasattr(self, "_generated"):
            write_sequences(self.root, **self.params)
            self.seq_classes = dict(line.split() for line in (self.root / "classes.txt").read_text().splitlines())
            self._generated = MotSequences._records.func(self)
        return self._generated

    def identity(self) -> dict:
        return {**super().identity(), "generator_version": VIDEO_GENERATOR_VERSION, **self.params}
