"""The split interface every task network in vcm_eval implements.

A split model is cut after the FPN lateral 1x1 convolutions:

* ``encode(image)`` runs preprocessing, the bottom-up backbone and the lateral convolutions and
  returns the C-layer maps ``c2..c5`` (before any top-down sum) plus :class:`SplitMeta`;
* ``decode(features)`` runs the FPN top-down pathway (``T5 = C5, Tk = Ck + up(T(k+1))``), the
  output convolutions, P6, the RPN and the ROI heads, and returns detections in original-image
  coordinates.

``detect(image)`` is unsplit inference and equals ``decode(encode(image))`` exactly.
Images are RGB uint8 arrays of shape (H, W, 3) everywhere in vcm_eval; a model that wants BGR
(Detectron2's checkpoints do) converts inside ``encode``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from vcm_eval.types import Detections, SplitFeatures


class WeightsError(RuntimeError):
    """Weights file missing, unreadable, or for another architecture; the message says what to fetch."""


class SplitModel(abc.ABC):
    """Contract of a model split at the C-layers (see the module docstring).

    Attributes:
        name: short identifier recorded with results.
        class_names: detector class index -> name.
        level_names: C-layer names in the order finest (stride 4) -> coarsest.
        level_strides: stride of each level in ``level_names``.
    """

    name: str = "model"
    class_names: Sequence[str] = ()
    level_names: tuple[str, ...] = ("c2", "c3", "c4", "c5")
    level_strides: tuple[int, ...] = (4, 8, 16, 32)

    @abc.abstractmethod
    def encode(self, image: np.ndarray) -> SplitFeatures:
        """RGB uint8 (H, W, 3) -> C-layers ``{c2..c5}: float32 (C, H/s, W/s)`` of the padded input."""

    @abc.abstractmethod
    def decode(self, features: SplitFeatures) -> Detections:
        """(Reconstructed) C-layers -> detections in original-image pixel coordinates."""

    def detect(self, image: np.ndarray) -> Detections:
        """Unsplit inference; by the split contract, ``decode(encode(image))``."""
        return self.decode(self.encode(image))

    @abc.abstractmethod
    def identity(self) -> dict:
        """What determines the outputs (architecture, weights sha256, input size): JSON-able, for cache keys."""


def check_image(image: np.ndarray, *, label: str = "image") -> np.ndarray:
    """Validate the RGB uint8 (H, W, 3) convention at the model boundary.

    Raises:
        ValueError: naming ``label`` and what is wrong, for a wrong dtype, shape or an image under 2 px.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{label}: models take RGB uint8 arrays of shape (H, W, 3), got {desc}; "
                         "read pictures with vcm_eval.data.images.read_image")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"{label}: picture of {image.shape[1]}x{image.shape[0]} px is too small to detect on")
    return image
