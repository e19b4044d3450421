"""A deterministic synthetic detection set: coloured shapes at 8 px to most-of-the-picture scales.

Every picture is a function of ``(seed, split, index)`` alone, so the first N pictures of a split are
the same whatever size the split is generated at, and the same seed gives the same pixels and the same
annotation JSON on any machine (only numpy's ``Generator`` stream methods ``random``/``integers``/
``uniform`` and Pillow's integer rasteriser are involved; no fonts, no antialiasing).

A picture has a short side of 320 px and a long side of 320..480 px (either orientation), a textured
background (smooth colour field, low-contrast stripes or checks, desaturated clutter that is *not*
annotated) and 3..9 objects of :data:`CLASS_NAMES`. Objects are saturated colours (max - min channel
at least 57 everywhere, textures included), backgrounds and clutter are not (at most 31), so a small
detector learns the classes quickly and the boxes can be checked against the pixels. Object sizes are
log-uniform between :data:`MIN_OBJECT_PX` and :data:`MAX_OBJECT_FRACTION` of the short side, so each
octave (8-16, 16-32, ..., 128-256 px) holds about the same number of objects and every FPN level has
work to do. Objects overlap; a placement is rejected when it would leave any object less than
:data:`MIN_VISIBLE_FRACTION` visible. A ground-truth box is the extent of the object's *visible*
pixels; its ``area`` is their count.

The split is written as a COCO-format folder (``annotations.json`` + ``images/*.png``) into a cache
folder, atomically, and read back through :class:`~vcm_eval.data.coco.CocoDataset`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vcm_eval.data.base import ImageRecord
from vcm_eval.data.coco import CocoDataset
from vcm_eval.data.images import read_image

log = logging.getLogger(__name__)

#: Bumped whenever a change to this module changes any generated pixel or annotation.
GENERATOR_VERSION = 1

CLASS_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "star", "ring", "cross")

#: Base colour (RGB) and fill texture of each class; colours are saturated, the background is not.
_CLASS_STYLE: dict[str, tuple[tuple[int, int, int], str]] = {
    "disc": ((220, 45, 40), "solid"),
    "square": ((40, 80, 225), "checker"),
    "triangle": ((40, 175, 60), "stripes"),
    "star": ((245, 200, 30), "solid"),
    "ring": ((205, 50, 205), "solid"),
    "cross": ((30, 195, 205), "stripes"),
}

SPLITS: dict[str, int] = {"train": 1, "val": 2}
#: The embedded model trains on train pictures 0..7999 (tools/train_embedded_model.py) and is scored on val.
DEFAULT_SPLIT_SIZE: dict[str, int] = {"train": 8000, "val": 200}

SHORT_SIDE_PX = 320
MAX_LONG_SIDE_PX = 480
MIN_OBJECT_PX = 8
MAX_OBJECT_FRACTION = 0.8
MIN_VISIBLE_FRACTION = 0.5
OBJECTS_PER_IMAGE = (3, 9)
_PLACEMENT_TRIES = 25
_PNG_COMPRESS_LEVEL = 6


@dataclass(frozen=True)
class SyntheticObject:
    """One annotated object: class index into CLASS_NAMES, visible-extent box (x0, y0, x1, y1), pixel count."""

    class_index: int
    box: tuple[int, int, int, int]
    area: int


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; choose one of {sorted(SPLITS)}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), SPLITS[split], int(index)])))


def _unit_polygon(angles_deg: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Vertices ``r_i * (cos a_i, sin a_i)``, rounded to 1e-9 so libm's last-bit differences vanish."""
    pts = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a, r in zip(angles_deg, radii)]
    return np.round(np.asarray(pts, dtype=np.float64), 9)


_STAR = _unit_polygon([-90 + 36 * i for i in range(10)], [1.0 if i % 2 == 0 else 0.45 for i in range(10)])
_TRIANGLE = _unit_polygon([-90, 30, 150], [1.0, 1.0, 1.0])
_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _cross(arm: float) -> np.ndarray:
    """Plus sign in [-1, 1]^2 with arm half-width ``arm``."""
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                     [-1, a], [-1, -a], [-a, -a]], dtype=np.float64)


# Rotations are whole degrees; a table keeps cos/sin out of the per-picture path.
_COS_SIN = np.round(np.array([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in range(360)]), 9)


def _fit_polygon(unit: np.ndarray, degrees: int, w: int, h: int) -> list[tuple[int, int]]:
    """Rotate ``unit`` by ``degrees`` and stretch its extent onto pixels [0, w-1] x [0, h-1].

    x' = (x cos - y sin - min) / (max - min) * (w - 1), likewise for y; rounded to whole pixels.
    """
    c, s = _COS_SIN[degrees % 360]
    rx = unit[:, 0] * c - unit[:, 1] * s
    ry = unit[:, 0] * s + unit[:, 1] * c
    px = (rx - rx.min()) / (rx.max() - rx.min()) * (w - 1)
    py = (ry - ry.min()) / (ry.max() - ry.min()) * (h - 1)
    return [(int(x), int(y)) for x, y in zip(np.rint(px), np.rint(py))]


def _shape_mask(name: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one object of class ``name`` filling its w x h box."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if name == "disc":
        draw.ellipse([0, 0, w - 1, h - 1], fill=255)
    elif name == "ring":
        draw.ellipse([0, 0, w - 1, h - 1], fill=255)
        inner = float(rng.uniform(0.45, 0.62))
        ix, iy = (w - 1) * (1 - inner) / 2, (h - 1) * (1 - inner) / 2
        if w - 2 * ix >= 2 and h - 2 * iy >= 2:
            draw.ellipse([round(ix), round(iy), round(w - 1 - ix), round(h - 1 - iy)], fill=0)
    else:
        unit = {"square": _SQUARE, "triangle": _TRIANGLE, "star": _STAR}.get(name)
        if name == "cross":
            unit = _cross(float(rng.uniform(0.28, 0.42)))
        degrees = int(rng.integers(0, 360))
        draw.polygon(_fit_polygon(unit, degrees, w, h), fill=255)
    return np.asarray(img, dtype=np.uint8) > 0


def _texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """0/1 pattern (h, w) selecting the darker tone of a two-tone fill (all zeros for solid)."""
    if kind == "solid":
        return np.zeros((h, w), dtype=bool)
    period = max(2, int(round(min(h, w) / float(rng.uniform(4.0, 7.0)))))
    yy, xx = np.indices((h, w))
    if kind == "stripes":
        a, b = ((1, 0), (0, 1), (1, 1), (1, -1))[int(rng.integers(0, 4))]
        return ((a * xx + b * yy + 4 * period * (h + w)) // period) % 2 == 1
    return ((xx // period) + (yy // period)) % 2 == 1  # checker


def _object_pixels(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 (h, w, 3) fill: class colour with per-object jitter and the class texture."""
    base, kind = _CLASS_STYLE[name]
    colour = np.clip(np.asarray(base) + rng.integers(-20, 21, size=3), 0, 255)
    dark = np.clip(colour * float(rng.uniform(0.6, 0.75)), 0, 255).astype(np.int64)
    sel = _texture(kind, h, w, rng)
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[...] = colour.astype(np.uint8)
    out[sel] = dark.astype(np.uint8)
    return out


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Desaturated textured background, RGB uint8 (h, w, 3)."""
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    grey = rng.integers(50, 200, size=(gh, gw, 1))
    tint = rng.integers(-15, 16, size=(gh, gw, 3))
    coarse = np.clip(grey + tint, 0, 255).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)

    yy, xx = np.indices((h, w))
    kind = int(rng.integers(0, 3))
    amp = int(rng.integers(6, 16))
    period = int(rng.integers(3, 14))
    if kind == 0:
        a, b = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2))[int(rng.integers(0, 6))]
        pattern = ((a * xx + b * yy + 8 * period * (h + w)) // period) % 2
    elif kind == 1:
        pattern = ((xx // period) + (yy // period)) % 2
    else:
        pattern = rng.integers(0, 2, size=((h + period - 1) // period, (w + period - 1) // period))
        pattern = np.repeat(np.repeat(pattern, period, axis=0), period, axis=1)[:h, :w]
    field += (2 * pattern.astype(np.int16) - 1)[..., None] * amp

    img = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        g = int(rng.integers(30, 226))
        fill = tuple(int(v) for v in np.clip(g + rng.integers(-12, 13, size=3), 0, 255))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(6, max(7, min(h, w) // 2)))
        x1, y1 = x0 + int(rng.integers(-size, size + 1)), y0 + int(rng.integers(-size, size + 1))
        what = int(rng.integers(0, 3))
        if what == 0:
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=int(rng.integers(1, 5)))
        elif what == 1:
            draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=fill,
                         width=int(rng.integers(1, 4)))
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            pts = [(x0 + (px - x0) // 4, y0 + (py - y0) // 4) for px, py in pts]
            draw.polygon(pts, fill=fill)
    return np.array(img, dtype=np.uint8)


def generate_image(seed: int, split: str, index: int) -> tuple[np.ndarray, list[SyntheticObject]]:
    """Picture ``index`` of ``split`` for ``seed``: RGB uint8 (H, W, 3) and its objects.

    A pure function of its arguments (see the module docstring); ``index`` may be any non-negative int.
    """
    rng = _rng(seed, split, index)
    long_side = int(rng.integers(SHORT_SIDE_PX, MAX_LONG_SIDE_PX + 1))
    h, w = (SHORT_SIDE_PX, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE_PX)
    canvas = _background(h, w, rng)

    owner = np.zeros((h, w), dtype=np.int16)  # 0 = background, k = k-th accepted object
    full_area: list[int] = []
    visible: list[int] = []
    classes: list[int] = []
    lo, hi = math.log(MIN_OBJECT_PX), math.log(MAX_OBJECT_FRACTION * SHORT_SIDE_PX)
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        size = math.exp(float(rng.uniform(lo, hi)))
        aspect = math.exp(float(rng.uniform(-0.4, 0.4)))  # width / height in [0.67, 1.49]
        ow = int(min(w, max(MIN_OBJECT_PX, round(size * math.sqrt(aspect)))))
        oh = int(min(h, max(MIN_OBJECT_PX, round(size / math.sqrt(aspect)))))
        mask = _shape_mask(CLASS_NAMES[cls], ow, oh, rng)
        pixels = _object_pixels(CLASS_NAMES[cls], oh, ow, rng)
        for _try in range(_PLACEMENT_TRIES):
            x, y = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))
            region = owner[y:y + oh, x:x + ow]
            covered = np.bincount(region[mask], minlength=len(full_area) + 1)[1:]
            ok = all(v - c >= MIN_VISIBLE_FRACTION * a for v, c, a in zip(visible, covered, full_area))
            if ok:
                break
        else:
            continue
        for k, c in enumerate(covered):
            visible[k] -= int(c)
        region[mask] = len(full_area) + 1
        canvas[y:y + oh, x:x + ow][mask] = pixels[mask]
        area = int(mask.sum())
        full_area.append(area)
        visible.append(area)
        classes.append(cls)

    objects = []
    for k, cls in enumerate(classes):
        ys, xs = np.nonzero(owner == k + 1)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SyntheticObject(cls, box, int(len(xs))))
    return canvas, objects


def coco_categories() -> list[dict]:
    """COCO ``categories`` of the synthetic set: ids 1..K in CLASS_NAMES order."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]


def write_split(folder: str | Path, *, seed: int, split: str, size: int) -> Path:
    """Generate ``size`` pictures of ``split`` as a COCO folder at ``folder`` (atomic; kept if present).

    Layout: ``folder/annotations.json`` and ``folder/images/{index:06d}.png``; image ids are
    ``index + 1``. The folder is built beside its final place and renamed in one step, so a reader
    never sees half a split; an existing folder is taken as complete and left alone.
    """
    folder = Path(folder).expanduser()
    if (folder / "annotations.json").is_file():
        return folder
    if size < 1:
        raise ValueError(f"a synthetic split needs at least one picture, got size={size}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / "images").mkdir()
        images, annotations = [], []
        for index in range(size):
            rgb, objects = generate_image(seed, split, index)
            name = f"images/{index:06d}.png"
            Image.fromarray(rgb, "RGB").save(tmp / name, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
            image_id = index + 1
            images.append({"id": image_id, "file_name": name, "height": int(rgb.shape[0]),
                           "width": int(rgb.shape[1])})
            for obj in objects:
                x0, y0, x1, y1 = obj.box
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": obj.class_index + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "area": obj.area, "iscrowd": 0})
        doc = {
            "info": {"description": "vcm_eval synthetic detection set", "generator_version": GENERATOR_VERSION,
                     "seed": int(seed), "split": split, "size": int(size)},
            "images": images,
            "annotations": annotations,
            "categories": coco_categories(),
        }
        (tmp / "annotations.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "annotations.json").is_file():  # not a concurrent writer that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def default_root() -> Path:
    """``$VCM_EVAL_DATA/synthetic`` if set, else ``$XDG_CACHE_HOME`` (or ~/.cache) ``/vcm_eval/synthetic``."""
    env = os.environ.get("VCM_EVAL_DATA")
    if env:
        return Path(env).expanduser() / "synthetic"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vcm_eval" / "synthetic"


def split_folder(root: str | Path, *, seed: int, split: str, size: int) -> Path:
    """Where a split lives under ``root``: one folder per (generator version, seed, split, size)."""
    return Path(root).expanduser() / f"v{GENERATOR_VERSION}-seed{seed}" / f"{split}-{size}"


class SyntheticDataset(CocoDataset):
    """The bundled synthetic detection set as a COCO-format dataset, generated on first use.

    Args:
        split: ``"val"`` (held out; the evaluation set) or ``"train"``.
        num_images: evaluate only the first N pictures (id order); ``None`` = the whole split.
        root: cache folder; ``None`` = :func:`default_root`.
        seed: generator seed.
        size: pictures in the split; ``None`` = 200 for val, 8000 for train.

    Example::

        >>> ds = SyntheticDataset(split="val", num_images=4, root="/tmp/syn")
        >>> [r.image_id for r in ds.records()]
        ['1', '2', '3', '4']
    """

    def __init__(self, split: str = "val", num_images: int | None = None, root: str | Path | None = None,
                 seed: int = 0, size: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown synthetic split {split!r}; choose one of {sorted(SPLITS)}")
        size = DEFAULT_SPLIT_SIZE[split] if size is None else int(size)
        if num_images is not None and num_images > size:
            raise ValueError(f"synthetic {split} split has {size} pictures but {num_images} were asked for; "
                             f"raise dataset.size to at least {num_images}")
        self.seed, self.split, self.size = int(seed), split, size
        folder = split_folder(root if root is not None else default_root(), seed=seed, split=split, size=size)
        if not (folder / "annotations.json").is_file():
            log.info("generating synthetic %s split (%d pictures, seed %d) into %s", split, size, seed, folder)
        write_split(folder, seed=seed, split=split, size=size)
        super().__init__(annotations=folder / "annotations.json", images=folder, num_images=num_images,
                         name=f"synthetic-{split}")

    def fingerprint(self, record: ImageRecord) -> str:
        """sha256 of the decoded pixels (shape-prefixed): the same on every machine, unlike PNG bytes,
        which depend on the zlib that Pillow bundles."""
        import hashlib

        rgb = read_image(record.path)
        h = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x3:".encode())
        h.update(rgb.tobytes())
        return h.hexdigest()

    def identity(self) -> dict:
        return {**super().identity(), "generator_version": GENERATOR_VERSION, "seed": self.seed,
                "split": self.split, "size": self.size}
