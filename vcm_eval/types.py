"""Plain data that crosses module boundaries: split features, detections, coded pictures.

Everything here is picklable and free of torch, so tasks can move it between processes
and machines (see ``vcm_eval.executors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: FPN C-layer names, finest (stride 4) to coarsest (stride 32), Detectron2's ``p{log2 stride}`` naming.
C_LEVELS: tuple[str, ...] = ("c2", "c3", "c4", "c5")


@dataclass(frozen=True)
class SplitMeta:
    """What the decoder side of a split model needs besides the C-layers.

    Attributes:
        original_size: (height, width) of the picture as read from disk; bpp divides by its area
            and detections come back in its coordinates.
        input_size: (height, width) of the resized picture fed to the backbone, before padding.
        padded_size: (height, width) of the padded input tensor (anchors are laid out on it).
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    padded_size: tuple[int, int]


@dataclass
class SplitFeatures:
    """C-layer maps of one image at the split point.

    Attributes:
        layers: level name (``c2``..``c5``) -> float32 array of shape (C, H, W).
        meta: geometry the decoder side needs.
    """

    layers: dict[str, np.ndarray]
    meta: SplitMeta

    def replace_layers(self, layers: dict[str, np.ndarray]) -> SplitFeatures:
        """A copy with other layer maps (e.g. reconstructions) and the same geometry."""
        return SplitFeatures(layers=dict(layers), meta=self.meta)


@dataclass
class Detections:
    """Detections of one image, in the original picture's pixel coordinates.

    Attributes:
        boxes: (N, 4) float32, ``x0, y0, x1, y1``.
        scores: (N,) float32.
        classes: (N,) int64 indices into the model's ``class_names``.
        masks: optional (N, H, W) bool instance masks in the picture's pixels (instance segmentation
            models such as Mask R-CNN); ``None`` for box detectors.
        rles: the same masks as COCO compressed RLEs (``{"size": [H, W], "counts": str}``, see
            :mod:`vcm_eval.data.masks`), as detections read back from the store carry them: a sweep holds
            every picture's detections of every entry and QP at once, and full masks would take gigabytes.
            ``None`` when there are no masks. :meth:`mask_rles` gives the RLEs of either form.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray | None = None
    rles: list[dict] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.classes)):
            raise ValueError(
                f"Detections need as many boxes, scores and classes; got "
                f"{len(self.boxes)}, {len(self.scores)}, {len(self.classes)}"
            )
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.ndim != 3 or len(self.masks) != len(self.scores):
                raise ValueError(f"Detections masks must be (N, H, W) with N = {len(self.scores)}, "
                                 f"got shape {self.masks.shape}")
        if self.rles is not None:
            self.rles = list(self.rles)
            if len(self.rles) != len(self.scores):
                raise ValueError(f"Detections need one mask RLE per detection; got {len(self.rles)} for "
                                 f"{len(self.scores)} detections")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    @property
    def has_masks(self) -> bool:
        """True when the detections carry instance masks (as arrays or as RLEs)."""
        return self.masks is not None or self.rles is not None

    def mask_rles(self) -> list[dict] | None:
        """The masks as COCO compressed RLEs (encoded from :attr:`masks` unless :attr:`rles` holds them);
        ``None`` for box detections."""
        if self.rles is not None:
            return self.rles
        if self.masks is None:
            return None
        from vcm_eval.data.masks import encode_masks

        return encode_masks(self.masks)

    def to_dict(self) -> dict:
        """Boxes, scores and classes as lists, and ``masks`` (COCO RLEs) only when there are masks, so that a
        box detector's records hold no empty mask field."""
        out = {
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "classes": self.classes.tolist(),
        }
        rles = self.mask_rles()
        if rles is not None:
            out["masks"] = rles
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Detections:
        """Inverse of :meth:`to_dict`; masks stay RLEs (:attr:`rles`)."""
        return cls(np.asarray(d["boxes"]), np.asarray(d["scores"]), np.asarray(d["classes"]), rles=d.get("masks"))


@dataclass(frozen=True)
class Frame:
    """One picture as a video codec sees it: planar samples at a bit depth.

    Attributes:
        planes: ``(Y,)`` for 4:0:0 or ``(Y, Cb, Cr)`` for 4:2:0 / 4:4:4; uint16 arrays of shape (H, W)
            (4:2:0 chroma (H/2, W/2) rounded up).
        bit_depth: bits per sample, values in ``[0, 2**bit_depth - 1]``.
        chroma_format: ``"400"``, ``"420"`` or ``"444"``.
    """

    planes: tuple[np.ndarray, ...]
    bit_depth: int = 10
    chroma_format: str = "400"

    def __post_init__(self) -> None:
        expected = {"400": 1, "420": 3, "444": 3}.get(self.chroma_format)
        if expected is None:
            raise ValueError(f"chroma_format must be '400', '420' or '444', got {self.chroma_format!r}")
        if len(self.planes) != expected:
            raise ValueError(f"a {self.chroma_format} frame has {expected} planes, got {len(self.planes)}")
        for plane in self.planes:
            if plane.dtype != np.uint16 or plane.ndim != 2:
                raise ValueError(f"planes must be 2-D uint16, got {plane.dtype} {plane.shape}")

    @classmethod
    def gray(cls, picture: np.ndarray, bit_depth: int = 10) -> Frame:
        return cls((np.ascontiguousarray(picture, dtype=np.uint16),), bit_depth, "400")

    @property
    def height(self) -> int:
        return int(self.planes[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.planes[0].shape[1])

    @property
    def luma(self) -> np.ndarray:
        return self.planes[0]


@dataclass
class CodedPicture:
    """A coded picture plus what a results table needs to say how it was made.

    Attributes:
        bitstream: the bytes a decoder receives (no container).
        codec: codec identity (name, version, options) as recorded with results.
        command: the encoder's command line, for external encoders.
        encode_s: wall time of the encode, seconds (0 when it came from the cache).
        from_cache: True when no encoder ran for this picture.
    """

    bitstream: bytes
    codec: dict = field(default_factory=dict)
    command: list[str] | None = None
    encode_s: float = 0.0
    from_cache: bool = False

    @property
    def num_bits(self) -> int:
        return 8 * len(self.bitstream)
