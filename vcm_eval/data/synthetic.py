"""A deterministic synthetic detection set: six shape classes at 8 px to most-of-the-picture scales.

Every picture is a function of ``(seed, split, index, style)`` alone, so the first N pictures of a split
are the same whatever size the split is generated at, and the same seed gives the same pixels and the
same annotation JSON on any machine: the pixel path uses only numpy's ``Generator`` stream methods
``random``/``integers``/``uniform``/``permutation``, integer arithmetic (and float ``+ - * /`` on scalars
or 256-entry tables, rounded to integers), and Pillow's C code (rasteriser, resampling, box blur, paste,
lookup tables: integer or plain IEEE arithmetic, and vanilla Pillow has no CPU-dependent code paths). No
numpy transcendental function (``np.exp``, ``np.sin`` ...) touches a pixel: numpy dispatches SIMD
versions of those whose last bits differ between CPUs; trigonometry and logarithms run on Python scalars
and are rounded to whole pixels or to 1e-9 before use.

A picture has a short side of 320 px and a long side of 320..480 px (either orientation) and 3..9 objects
of :data:`CLASS_NAMES`. Object sizes are log-uniform between :data:`MIN_OBJECT_PX` and
:data:`MAX_OBJECT_FRACTION` of the short side, so each octave (8-16, 16-32, ..., 128-256 px) holds about
the same number of objects and every FPN level has work to do. Objects overlap; a placement is rejected
when it would leave any object less than :data:`MIN_VISIBLE_FRACTION` visible. A ground-truth box is the
extent of the object's *visible* pixels; its ``area`` is their count (:attr:`SyntheticObject.mask` holds
them). Two styles (:data:`STYLES`) share those shapes and that geometry:

``shapes`` (:data:`GENERATOR_VERSION`)
    The original set, kept bit for bit so that runs made with it reproduce: flat saturated objects
    (max - min channel at least 57 everywhere, textures included) on a smooth, desaturated background
    (colour field, low-contrast stripes or checks, un-annotated clutter; at most 31), no antialiasing.
    Flat colours and hard edges are far easier for a codec than real photos.
``natural`` (:data:`NATURAL_GENERATOR_VERSION`; needs ``scikit-image``)
    Photographic pictures. The background is a patchwork of 2..4 views of different photographs bundled
    in scikit-image's wheel (:data:`PHOTOS`; grey ones tinted), each a random crop at a random scale,
    flipped, quarter-turned and sometimes tilted a few degrees, colour-jittered, joined along wiggly
    seams that fade over a few to about 30 px, and partly desaturated. An object is photographic texture
    cut out by its class's shape mask and tinted toward the class colour (so a class is recognisable by
    its shape *and* its colour cast), pasted with a feathered (blurred) edge. The whole picture is then
    sometimes slightly blurred and always gets sensor-like noise (Gaussian, stronger in bright parts),
    so there is texture everywhere and a codec spends bits on it (and damages it) much as on photos. A
    pixel of an object counts as *visible* when it is inside the object's hard shape mask (before
    feathering) and inside no later object's hard mask: the feathered rim outside the hard mask is not
    annotated, and the rim inside it is (blended with what lies under it).

The split is written as a COCO-format folder (``annotations.json`` + ``images/*.png``) into a cache
folder, atomically, and read back through :class:`~vcm_eval.data.coco.CocoDataset`.

Masks (``task="segmentation"``, the CTC's ``ctc.task``): :func:`write_masks` adds ``annotations_masks.json``
beside ``annotations.json``, the same COCO document with a ``segmentation`` (COCO compressed RLE of the
picture-sized visible-pixel mask, :attr:`SyntheticObject.mask` placed at its box) in every annotation, written
on first use by generating the split's pictures again. ``annotations.json``, the pictures, the folder names and
the generator versions stay exactly as they were, so every box result and cache key of a detection run is
unchanged; a segmentation run reads the other file. The mask's pixel count equals the annotation's ``area``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vcm_eval.data.base import ImageRecord, check_task
from vcm_eval.data.coco import CocoDataset
from vcm_eval.data.images import read_image
from vcm_eval.errors import SettingError

log = logging.getLogger(__name__)

#: Bumped whenever a change to this module changes any generated pixel or annotation of the ``shapes`` style.
GENERATOR_VERSION = 1
#: Bumped whenever a change to this module changes any generated pixel or annotation of the ``natural`` style.
NATURAL_GENERATOR_VERSION = 1

#: Picture styles (see the module docstring); ``shapes`` is the original set.
STYLES: tuple[str, ...] = ("shapes", "natural")

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

SPLITS: dict[str, int] = {"train": 1, "val": 2, "tune": 3}
#: The embedded model trains on train pictures 0..7999 (tools/train_embedded_model.py) and is scored on val.
#: ``tune`` is neither: what methods fitted or searched for an entry (channel bases, rate allocations) see, so
#: that neither the detector's training pictures nor the CTC's pictures bias them.
DEFAULT_SPLIT_SIZE: dict[str, int] = {"train": 8000, "val": 200, "tune": 200}

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
    """One annotated object: class index into CLASS_NAMES, visible-extent box (x0, y0, x1, y1), pixel count.

    ``mask`` is the boolean (y1 - y0, x1 - x0) map of the visible pixels inside ``box`` (``area`` of them
    are true); it is not part of equality and is not written to the JSON.
    """

    class_index: int
    box: tuple[int, int, int, int]
    area: int
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SyntheticSample:
    """One generated picture: RGB uint8 (H, W, 3), its objects, and the photos its background is made of.

    ``sources`` lists ``(photo name, share of the background)`` for the natural style (shares sum to 1,
    measured on the patchwork's seam grid) and is empty for the shapes style.
    """

    rgb: np.ndarray
    objects: list[SyntheticObject]
    sources: tuple[tuple[str, float], ...] = ()


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise SettingError(f"unknown synthetic style {style!r}; choose one of {list(STYLES)}")
    return style


def _rng(seed: int, split: str, index: int, style: str = "shapes") -> np.random.Generator:
    if split not in SPLITS:
        raise SettingError(f"unknown synthetic split {split!r}; choose one of {sorted(SPLITS)}")
    entropy = [int(seed), SPLITS[split], int(index)]
    if _check_style(style) != "shapes":  # shapes keeps its original stream; other styles get their own
        entropy.append(STYLES.index(style))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


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


def _object_geometry(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, np.ndarray]:
    """Class, width, height and hard shape mask (oh, ow) of the next object (log-uniform size)."""
    lo, hi = math.log(MIN_OBJECT_PX), math.log(MAX_OBJECT_FRACTION * SHORT_SIDE_PX)
    cls = int(rng.integers(0, len(CLASS_NAMES)))
    size = math.exp(float(rng.uniform(lo, hi)))
    aspect = math.exp(float(rng.uniform(-0.4, 0.4)))  # width / height in [0.67, 1.49]
    ow = int(min(w, max(MIN_OBJECT_PX, round(size * math.sqrt(aspect)))))
    oh = int(min(h, max(MIN_OBJECT_PX, round(size / math.sqrt(aspect)))))
    return cls, ow, oh, _shape_mask(CLASS_NAMES[cls], ow, oh, rng)


class _Occupancy:
    """Which object owns each pixel, and how much of each object is still visible."""

    def __init__(self, h: int, w: int) -> None:
        self.owner = np.zeros((h, w), dtype=np.int16)  # 0 = background, k = k-th accepted object
        self.full_area: list[int] = []
        self.visible: list[int] = []
        self.classes: list[int] = []
        self.rects: list[tuple[int, int, int, int]] = []  # (x, y, w, h) where each object was drawn

    def place(self, cls: int, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
        """Top-left corner for ``mask`` that leaves every earlier object MIN_VISIBLE_FRACTION visible
        (recorded as the next object), or None after _PLACEMENT_TRIES rejected draws."""
        h, w = self.owner.shape
        oh, ow = mask.shape
        for _try in range(_PLACEMENT_TRIES):
            x, y = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))
            region = self.owner[y:y + oh, x:x + ow]
            covered = np.bincount(region[mask], minlength=len(self.full_area) + 1)[1:]
            if all(v - c >= MIN_VISIBLE_FRACTION * a for v, c, a in zip(self.visible, covered, self.full_area)):
                break
        else:
            return None
        for k, c in enumerate(covered):
            self.visible[k] -= int(c)
        region[mask] = len(self.full_area) + 1
        area = int(mask.sum())
        self.full_area.append(area)
        self.visible.append(area)
        self.classes.append(cls)
        self.rects.append((x, y, ow, oh))
        return x, y

    def objects(self) -> list[SyntheticObject]:
        """The accepted objects with their visible-extent boxes, pixel counts and visible masks."""
        objects = []
        for k, (cls, (x, y, ow, oh)) in enumerate(zip(self.classes, self.rects)):
            ys, xs = np.nonzero(self.owner[y:y + oh, x:x + ow] == k + 1)  # an object owns nothing outside
            box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
            mask = self.owner[box[1]:box[3], box[0]:box[2]] == k + 1
            objects.append(SyntheticObject(cls, box, int(len(xs)), mask))
        return objects


def _generate_shapes(rng: np.random.Generator) -> SyntheticSample:
    """The ``shapes`` style (its random stream and pixels are those of GENERATOR_VERSION 1)."""
    long_side = int(rng.integers(SHORT_SIDE_PX, MAX_LONG_SIDE_PX + 1))
    h, w = (SHORT_SIDE_PX, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE_PX)
    canvas = _background(h, w, rng)
    occupancy = _Occupancy(h, w)
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        cls, ow, oh, mask = _object_geometry(w, h, rng)
        pixels = _object_pixels(CLASS_NAMES[cls], oh, ow, rng)
        at = occupancy.place(cls, mask, rng)
        if at is not None:
            x, y = at
            canvas[y:y + oh, x:x + ow][mask] = pixels[mask]
    return SyntheticSample(canvas, occupancy.objects())


# --- The natural style -------------------------------------------------------------------------------------

#: Photographs bundled in scikit-image's wheel (``skimage/data``; name -> file, sha256 as skimage's own
#: registry lists it). All are in the "legacy" set skimage has shipped inside its package since 0.15, with
#: these hashes. They are read straight from the installed package folder, never through ``skimage.data``
#: (some of its entries download), and checked against the hash, so a different file can never silently
#: change the pictures. Grey photos are tinted. The two JPEGs decode through libjpeg-turbo's integer IDCT,
#: whose SIMD and C paths agree bit for bit. Left out: camera (replaced by another photo in some skimage
#: versions), cell (not bundled by older ones), motorcycle_right (the stereo twin of motorcycle_left),
#: retina (a black disc border, 1411 px square), the small text/page/clock pictures and drawings.
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    "coffee": ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    "chelsea": ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    "motorcycle_left": ("motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "immunohistochemistry": ("ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    "rocket": ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    "brick": ("brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"),
    "grass": ("grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89"),
    "gravel": ("gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12"),
    "moon": ("moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"),
    "coins": ("coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"),
}
#: Photos that fill objects: all but the deep field, which is black almost everywhere.
_FILL_PHOTOS: tuple[str, ...] = tuple(name for name in PHOTOS if name != "hubble_deep_field")

_MISSING_PHOTOS = ("the 'natural' synthetic style builds its pictures from photographs shipped with "
                   "scikit-image; install it (pip install scikit-image) or use dataset.style=shapes")

_FEATHER_PAD = 2  # px around an object's box that its feathered edge may reach
#: Photo px per picture px of untilted views (the pyramid levels); tilted views take any scale in between.
_VIEW_SCALES = (0.8, 1.0, 1.3, 1.6, 2.0)
_TILT_PROBABILITY = 0.25
_QUARTER_TURNS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
_SEAM_CELL_PX = (6, 16)  # patchwork seam grid: one cell per this many pixels (the width of a seam's fade)

# Standard normal quantiles of the 256 uint8 noise draws, x 16, as integers: the noise's shape. Computed on
# scalars and rounded, so libm's last bits cannot reach a pixel.
_NOISE_QUANTILES = np.array([round(16 * statistics.NormalDist().inv_cdf((u + 0.5) / 256)) for u in range(256)],
                            dtype=np.int16)


@dataclass(frozen=True)
class _Photo:
    name: str
    image: Image.Image  # "RGB", or "L" for a grey photo
    grey: bool


def _photo_dir() -> Path:
    """``skimage/data`` of the installed scikit-image, found without importing it; ImportError if absent."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_MISSING_PHOTOS)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def _photos() -> dict[str, _Photo]:
    """The photos of :data:`PHOTOS`, decoded once per process.

    Raises:
        ImportError: scikit-image is not installed.
        RuntimeError: a photo file is missing or is not the one the natural style was pinned to.
    """
    folder = _photo_dir()
    photos = {}
    for name, (file, sha256) in PHOTOS.items():
        path = folder / file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"photo {name!r} ({path}) cannot be read: {exc}; {_MISSING_PHOTOS}") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"photo {name!r} ({path}) is not the file the natural style was made from "
                               f"(sha256 {sha256}); reinstall scikit-image (pip install scikit-image)")
        with Image.open(io.BytesIO(data)) as im:
            grey = im.mode == "L"
            photos[name] = _Photo(name, im.convert("L" if grey else "RGB"), grey)
    return photos


@functools.cache
def _level(name: str, level: int) -> Image.Image:
    """Photo ``name`` resampled to _VIEW_SCALES[level] photo px per picture px, made once (about 32 MB for
    all levels of all photos). Bicubic: its weights are polynomials, whereas Lanczos calls libm's sin,
    whose last bits may vary with the CPU."""
    image = _photos()[name].image
    scale = _VIEW_SCALES[level]
    if scale == 1.0:
        return image
    return image.resize((round(image.width / scale), round(image.height / scale)), Image.Resampling.BICUBIC)


def _photo_view(photo: _Photo, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A w x h view of ``photo`` (its mode): a random crop at a random scale, mirrored or not, turned a
    random quarter and, with probability _TILT_PROBABILITY, tilted 1..12 degrees.

    Untilted views are exact crops of a pyramid level (:func:`_level`) turned by transposition. Tilted
    views are one bilinear affine resample of the photo (Pillow: double-precision + - *, no FMA); its
    matrix comes from whole-degree cos/sin rounded to 1e-9 and scalar + - * /, and the view lies inside
    the photo, so no border is filled in.
    """
    quarter = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    pw, ph = photo.image.size
    vw, vh = (h, w) if quarter % 2 else (w, h)  # size before the quarter turn
    fits = [i for i, sc in enumerate(_VIEW_SCALES) if round(pw / sc) >= vw and round(ph / sc) >= vh]
    if rng.random() >= _TILT_PROBABILITY and fits:
        level = _level(photo.name, fits[int(rng.integers(0, len(fits)))])
        x0, y0 = int(rng.integers(0, level.width - vw + 1)), int(rng.integers(0, level.height - vh + 1))
        view = level.crop((x0, y0, x0 + vw, y0 + vh))
        if flip:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if quarter:
            view = view.transpose(_QUARTER_TURNS[quarter])
        return view
    tilt = int(rng.integers(1, 13)) * (1 if rng.random() < 0.5 else -1)
    c, s = (float(v) for v in _COS_SIN[(90 * quarter + tilt) % 360])
    ex, ey = w * abs(c) + h * abs(s), w * abs(s) + h * abs(c)  # extent of the turned view at scale 1
    scale = min(float(rng.uniform(_VIEW_SCALES[0], _VIEW_SCALES[-1])), (pw - 2) / ex, (ph - 2) / ey)
    hx, hy = scale * ex / 2, scale * ey / 2
    # max(): at the capped scale the two bounds meet, up to a rounding error either way
    cx = float(rng.uniform(hx + 1, max(hx + 1, pw - hx - 1)))
    cy = float(rng.uniform(hy + 1, max(hy + 1, ph - hy - 1)))
    fx = -1.0 if flip else 1.0
    a, b, d, e = scale * c * fx, -scale * s, scale * s * fx, scale * c
    return photo.image.transform((w, h), Image.Transform.AFFINE, (a, b, cx - a * w / 2 - b * h / 2,
                                                                  d, e, cy - d * w / 2 - e * h / 2),
                                 resample=Image.Resampling.BILINEAR)


def _jitter_lut(grey: bool, rng: np.random.Generator) -> list[int]:
    """Per-channel 768-entry lookup table: contrast, brightness and a colour cast (a tint for grey photos)."""
    spread = 0.22 if grey else 0.1
    gains = rng.uniform(1 - spread, 1 + spread, size=3)
    contrast, bright = float(rng.uniform(0.75, 1.25)), float(rng.uniform(-24, 24))
    tone = (np.arange(256, dtype=np.float64) - 128) * contrast + 128 + bright
    return np.clip(np.rint(gains[:, None] * tone[None, :]), 0, 255).astype(np.uint8).reshape(-1).tolist()


def _patchwork(h: int, w: int, rng: np.random.Generator) -> tuple[Image.Image, tuple[tuple[str, float], ...]]:
    """Background: 2..4 views of different photos, each owning one region of a wiggly Voronoi partition.

    The partition lives on a coarse grid (one cell per 6..16 px). Each region's seed point is at least a
    third of the grid's short side from the others and its squared-distance field is perturbed (a smooth
    bump) by less than that squared, so every region keeps its seed and no picture is a single photo.
    View j is pasted over views 0..j-1 with the mask ``128 + (min over i < j of dist_i - dist_j) * 64 / gap``
    (clipped): squared-distance differences are nearly linear in position, so the mask upsamples
    bilinearly into a straight-ish seam that fades over up to two cells, with no grid staircase; and the
    pixels where j wins outright are exactly its Voronoi region. View j covers only the rectangle its mask
    reaches (view 0 the whole picture). Returns the picture and (photo, share of the grid's cells) per
    region, in paste order.
    """
    photos = _photos()
    names = list(photos)
    k = int(rng.integers(2, 5))
    chosen = [names[int(i)] for i in rng.permutation(len(names))[:k]]
    cell = int(rng.integers(_SEAM_CELL_PX[0], _SEAM_CELL_PX[1] + 1))
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
    gap = max(2, min(gh, gw) // 3)
    seeds: list[tuple[int, int]] = []
    tries = 0
    while len(seeds) < k:
        p = (int(rng.integers(0, gh)), int(rng.integers(0, gw)))
        need = gap * gap if tries < 200 else 1  # crowded grids (never seen) fall back to distinct cells
        tries += 1
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= need for q in seeds):
            seeds.append(p)
    wiggle = min(255, gap * gap // 2) if tries <= 200 else 0
    yy, xx = np.indices((gh, gw), dtype=np.int32)
    dist = np.empty((k, gh, gw), dtype=np.int32)
    for j, (py, px) in enumerate(seeds):
        coarse = rng.integers(0, wiggle + 1, size=(4, 4)).astype(np.uint8)
        bump = np.asarray(Image.fromarray(coarse, "L").resize((gw, gh), Image.Resampling.BILINEAR), dtype=np.int32)
        dist[j] = (yy - py) ** 2 + (xx - px) ** 2 + bump
    labels = np.argmin(dist, axis=0)  # ties go to the lower index
    counts = np.bincount(labels[:-1, :-1].ravel(), minlength=k)  # the cells the picture covers

    canvas = Image.new("RGB", (w, h))
    for j, name in enumerate(chosen):
        if j == 0:
            x0, y0, x1, y1, mask = 0, 0, w, h, None
        else:
            margin = dist[:j].min(axis=0) - dist[j]  # integers: exact
            coarse = np.clip(128 + margin * 64 // gap, 0, 255).astype(np.uint8)
            rows, cols = np.nonzero(coarse.any(axis=1))[0], np.nonzero(coarse.any(axis=0))[0]
            # The pixels the upsampled mask can reach: a cell's value spreads over one cell each way.
            x0, x1 = max(0, (int(cols[0]) - 1) * cell), min(w, (int(cols[-1]) + 2) * cell)
            y0, y1 = max(0, (int(rows[0]) - 1) * cell), min(h, (int(rows[-1]) + 2) * cell)
            mask = Image.fromarray(coarse, "L").resize((w, h), Image.Resampling.BILINEAR,
                                                       box=(0, 0, w / cell, h / cell)).crop((x0, y0, x1, y1))
        # A view only as large as its region's reach: a small region can take a photo at a denser scale.
        photo = photos[name]
        view = _photo_view(photo, x1 - x0, y1 - y0, rng).convert("RGB").point(_jitter_lut(photo.grey, rng))
        canvas.paste(view, (x0, y0), mask)
    total = int(counts.sum())
    return canvas, tuple((name, int(n) / total) for name, n in zip(chosen, counts))


def _natural_fill(name: str, fh: int, fw: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 (fh, fw, 3) fill of one object: a view of a photo, its light and shade kept (stretched
    about its mean) but its colour mostly replaced by the class colour (with per-object jitter)."""
    photo = _photos()[_FILL_PHOTOS[int(rng.integers(0, len(_FILL_PHOTOS)))]]
    view = _photo_view(photo, fw, fh, rng).convert("RGB")
    colour = np.clip(np.asarray(_CLASS_STYLE[name][0]) + rng.integers(-20, 21, size=3), 0, 255)
    keep = int(rng.integers(40, 97))  # of 256: how much of the photo's own colour shows through
    luma = np.asarray(view.convert("L"), dtype=np.int32)
    mean = int(luma.sum()) // luma.size  # integer sum: exact in any order
    shade = np.clip(176 + (luma - mean) * 3 // 4, 48, 255)
    tinted = shade[..., None] * colour[None, None, :] // 255
    out = (tinted * (256 - keep) + np.asarray(view, dtype=np.int32) * keep + 128) >> 8
    return out.astype(np.uint8)


def _sensor_noise(rgb: np.ndarray, rng: np.random.Generator, read: float | None = None,
                  gain: float | None = None) -> np.ndarray:
    """``rgb`` plus Gaussian noise of standard deviation sqrt(read^2 + gain * level) per channel and pixel
    (``read`` and ``gain`` drawn from ``rng`` unless given: a video keeps one sensor for all its frames)."""
    if read is None or gain is None:
        read, gain = float(rng.uniform(1.0, 3.0)), float(rng.uniform(0.01, 0.06))
    # x 16: with the x 16 quantiles, (quantile * scale) >> 8 is sigma(level) * N(0, 1) in levels.
    scale = np.array([round(16 * math.sqrt(read * read + gain * v)) for v in range(256)], dtype=np.int16)
    draws = rng.integers(0, 256, size=rgb.shape, dtype=np.uint8)
    noise = (_NOISE_QUANTILES[draws] * scale[rgb] + 128) >> 8
    return np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _generate_natural(rng: np.random.Generator) -> SyntheticSample:
    """The ``natural`` style: see the module docstring."""
    long_side = int(rng.integers(SHORT_SIDE_PX, MAX_LONG_SIDE_PX + 1))
    h, w = (SHORT_SIDE_PX, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE_PX)
    canvas, sources = _patchwork(h, w, rng)
    # Pull the background's colours part of the way to grey (integer blend), so the photos' own saturated
    # patches rarely pass for an object's colour cast.
    grey = canvas.convert("L").convert("RGB")
    canvas = Image.composite(canvas, grey, Image.new("L", (w, h), int(rng.integers(140, 240))))

    occupancy = _Occupancy(h, w)
    pad = _FEATHER_PAD
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        cls, ow, oh, mask = _object_geometry(w, h, rng)
        fill = _natural_fill(CLASS_NAMES[cls], oh + 2 * pad, ow + 2 * pad, rng)
        feather = float(rng.uniform(0.4, 1.0))
        at = occupancy.place(cls, mask, rng)
        if at is None:
            continue
        x, y = at
        hard = np.pad(np.where(mask, np.uint8(255), np.uint8(0)), pad)
        alpha = Image.fromarray(hard, "L").filter(ImageFilter.BoxBlur(feather))
        canvas.paste(Image.fromarray(fill, "RGB"), (x - pad, y - pad), alpha)  # clipped at the borders

    if rng.random() < 0.35:  # optics: some pictures are slightly soft
        canvas = canvas.filter(ImageFilter.BoxBlur(float(rng.uniform(0.3, 0.6))))
    rgb = _sensor_noise(np.asarray(canvas, dtype=np.uint8), rng)
    return SyntheticSample(rgb, occupancy.objects(), sources)


def generate_sample(seed: int, split: str, index: int, style: str = "shapes") -> SyntheticSample:
    """Picture ``index`` of ``split`` for ``seed`` in ``style``, with its objects and background sources.

    A pure function of its arguments (see the module docstring); ``index`` may be any non-negative int.

    Raises:
        ValueError: unknown split or style.
        ImportError, RuntimeError: the natural style's photos (scikit-image) are missing.
    """
    rng = _rng(seed, split, index, style)
    return _generate_natural(rng) if style == "natural" else _generate_shapes(rng)


def generate_image(seed: int, split: str, index: int,
                   style: str = "shapes") -> tuple[np.ndarray, list[SyntheticObject]]:
    """Picture ``index`` of ``split`` for ``seed`` in ``style``: RGB uint8 (H, W, 3) and its objects.

    A pure function of its arguments (see the module docstring); ``index`` may be any non-negative int.
    """
    sample = generate_sample(seed, split, index, style)
    return sample.rgb, sample.objects


def coco_categories() -> list[dict]:
    """COCO ``categories`` of the synthetic set: ids 1..K in CLASS_NAMES order."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]


def generator_version(style: str = "shapes") -> int:
    """The generator version of ``style`` (GENERATOR_VERSION or NATURAL_GENERATOR_VERSION)."""
    return NATURAL_GENERATOR_VERSION if _check_style(style) == "natural" else GENERATOR_VERSION


def write_split(folder: str | Path, *, seed: int, split: str, size: int, style: str = "shapes") -> Path:
    """Generate ``size`` pictures of ``split`` in ``style`` as a COCO folder at ``folder`` (atomic; kept if
    present).

    Layout: ``folder/annotations.json`` and ``folder/images/{index:06d}.png``; image ids are
    ``index + 1``. The folder is built beside its final place and renamed in one step, so a reader
    never sees half a split; an existing folder is taken as complete and left alone. The JSON's ``info``
    names the style unless it is ``shapes`` (whose files stay byte for byte those of before styles).
    """
    _check_style(style)
    folder = Path(folder).expanduser()
    if (folder / "annotations.json").is_file():
        return folder
    if size < 1:
        raise SettingError(f"a synthetic split needs at least one picture, got size={size}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / "images").mkdir()
        images, annotations = [], []
        for index in range(size):
            rgb, objects = generate_image(seed, split, index, style)
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
        info = {"description": "vcm_eval synthetic detection set"}
        if style != "shapes":
            info["style"] = style
        info.update({"generator_version": generator_version(style), "seed": int(seed), "split": split,
                     "size": int(size)})
        doc = {"info": info, "images": images, "annotations": annotations, "categories": coco_categories()}
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


#: The COCO document with masks, beside ``annotations.json`` (see the module docstring).
MASKS_FILE = "annotations_masks.json"


def write_masks(folder: str | Path, *, seed: int, split: str, style: str = "shapes") -> Path:
    """Write ``folder/annotations_masks.json`` (atomic; kept if present): ``folder/annotations.json`` with a
    ``segmentation`` RLE in every annotation, from the split's pictures generated again. Returns its path.

    Raises:
        ValueError: naming the annotation file when a regenerated picture's objects are not those it lists
            (a folder written by another generator version, or edited).
    """
    from vcm_eval.data.masks import encode_box_mask

    folder = Path(folder).expanduser()
    path = folder / MASKS_FILE
    if path.is_file():
        return path
    source = folder / "annotations.json"
    doc = json.loads(source.read_text(encoding="utf-8"))
    by_image: dict[int, list[dict]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    for im in doc["images"]:
        image_id = int(im["id"])
        _, objects = generate_image(seed, split, image_id - 1, style)
        anns = by_image.get(image_id, [])
        listed = [(a["category_id"], a["bbox"], a["area"]) for a in anns]
        made = [(o.class_index + 1, [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]], o.area)
                for o in objects]
        if listed != made:
            raise SettingError(f"{source}: the objects of image {image_id} are not those the generator (seed {seed}, "
                             f"split {split}, style {style}) makes; delete the folder {folder} to regenerate it")
        for ann, obj in zip(anns, objects):
            ann["segmentation"] = encode_box_mask(obj.mask, obj.box, int(im["height"]), int(im["width"]))
    doc["info"] = {**doc.get("info", {}), "masks": "COCO compressed RLE of each object's visible pixels"}
    fd, tmp = tempfile.mkstemp(prefix=f".{MASKS_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def default_root() -> Path:
    """``$VCM_EVAL_DATA/synthetic`` if set, else ``$XDG_CACHE_HOME`` (or ~/.cache) ``/vcm_eval/synthetic``."""
    env = os.environ.get("VCM_EVAL_DATA")
    if env:
        return Path(env).expanduser() / "synthetic"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vcm_eval" / "synthetic"


def split_folder(root: str | Path, *, seed: int, split: str, size: int, style: str = "shapes") -> Path:
    """Where a split lives under ``root``: one folder per (style, generator version, seed, split, size).

    ``shapes`` keeps its original ``v{version}-seed{seed}`` folders (old runs find their sets); other
    styles are ``{style}-v{version}-seed{seed}``.
    """
    prefix = "" if _check_style(style) == "shapes" else f"{style}-"
    return Path(root).expanduser() / f"{prefix}v{generator_version(style)}-seed{seed}" / f"{split}-{size}"


class SyntheticDataset(CocoDataset):
    """The bundled synthetic detection set as a COCO-format dataset, generated on first use.

    Args:
        split: ``"val"`` (held out; the evaluation set), ``"train"`` (the embedded model's) or ``"tune"``
            (for fitting and searching an entry's methods; seen by neither the model nor the CTC).
        num_images: evaluate only the first N pictures (id order); ``None`` = the whole split.
        root: cache folder; ``None`` = :func:`default_root`.
        seed: generator seed.
        size: pictures in the split; ``None`` = 200 for val and tune, 8000 for train.
        style: ``"shapes"`` (the original flat shapes) or ``"natural"`` (photographic; needs scikit-image).
        task: ``"detection"`` (boxes, ``annotations.json``) or ``"segmentation"`` (masks too:
            ``annotations_masks.json``, written on first use by :func:`write_masks`; scored by mask mAP).

    Example::

        >>> ds = SyntheticDataset(split="val", num_images=4, root="/tmp/syn")
        >>> [r.image_id for r in ds.records()]
        ['1', '2', '3', '4']
    """

    def __init__(self, split: str = "val", num_images: int | None = None, root: str | Path | None = None,
                 seed: int = 0, size: int | None = None, style: str = "shapes", task: str = "detection") -> None:
        if split not in SPLITS:
            raise SettingError(f"unknown synthetic split {split!r}; choose one of {sorted(SPLITS)}")
        _check_style(style)
        size = DEFAULT_SPLIT_SIZE[split] if size is None else int(size)
        if num_images is not None and num_images > size:
            raise SettingError(f"synthetic {split} split has {size} pictures but {num_images} were asked for; "
                             f"raise dataset.size to at least {num_images}")
        self.seed, self.split, self.size, self.style = int(seed), split, size, style
        folder = split_folder(root if root is not None else default_root(), seed=seed, split=split, size=size,
                              style=style)
        if not (folder / "annotations.json").is_file():
            log.info("generating synthetic %s split (%d pictures, seed %d, style %s) into %s", split, size, seed,
                     style, folder)
        write_split(folder, seed=seed, split=split, size=size, style=style)
        annotations = folder / "annotations.json"
        if check_task(task) == "segmentation":
            if not (folder / MASKS_FILE).is_file():
                log.info("writing the masks of the synthetic %s split into %s", split, folder / MASKS_FILE)
            annotations = write_masks(folder, seed=seed, split=split, style=style)
        super().__init__(annotations=annotations, images=folder, num_images=num_images,
                         name=f"synthetic-{split}", task=task)

    def fingerprint(self, record: ImageRecord) -> str:
        """sha256 of the decoded pixels (shape-prefixed): the same on every machine, unlike PNG bytes,
        which depend on the zlib that Pillow bundles. Content alone: pictures of different styles differ
        in their pixels, and equal pixels may share cached results whatever made them."""
        rgb = read_image(record.path)
        h = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x3:".encode())
        h.update(rgb.tobytes())
        return h.hexdigest()

    def identity(self) -> dict:
        """Name, annotation file, picture count, generator version, seed, split, size, and the style unless
        it is ``shapes`` (so results of the shapes set keep the identity they had before styles)."""
        ident = {**super().identity(), "generator_version": generator_version(self.style), "seed": self.seed,
                 "split": self.split, "size": self.size}
        if self.style != "shapes":
            ident["style"] = self.style
        return ident
