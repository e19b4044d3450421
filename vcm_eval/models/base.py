"""The split interface every task network in vcm_eval implements.

A split model has two split points of one FPN, named by the prefix of their level names:

* ``"c"``, the C-layers: after the FPN lateral 1x1 convolutions, ``c2..c5`` before any top-down sum
  (the paper's anchor);
* ``"p"``, the P-layers: after the FPN output 3x3 convolutions, ``p2..p5``
  (``Pk = output_k(Tk)``, ``T5 = C5, Tk = Ck + up2(T(k+1))``; MPEG FCM's feature anchor).
  The FPN's extra level P6 (``max_pool(P5, kernel 1, stride 2)``, a subsampling of P5) is not part of
  the split: the receiver derives it from the decoded P5 with the network's own top block, as
  CompressAI-Vision (the FCM CTC's software) does, so no bit is spent on samples the receiver can compute.

* ``encode(image)`` runs preprocessing, the bottom-up backbone and the lateral convolutions and
  returns the C-layers plus :class:`SplitMeta`;
* ``to_split(features, split)`` carries C-layers on to another split point (``"p"``: the top-down sums and
  output convolutions), deterministically, so that a store of C-layers serves every split;
* ``decode(features)`` runs the rest of the network from whichever split ``features`` are at (told by
  their level names, :func:`split_of`): from C-layers the top-down pathway, the output convolutions, then
  P6, the RPN and the ROI heads; from P-layers P6, the RPN and the ROI heads. It returns detections in
  original-image coordinates.

``detect(image)`` is unsplit inference and equals ``decode(encode(image))`` and
``decode(to_split(encode(image), "p"))`` exactly.
Images are RGB uint8 arrays of shape (H, W, 3) everywhere in vcm_eval; a model that wants BGR
(Detectron2's checkpoints do) converts inside ``encode``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from vcm_eval.errors import SettingError, UserError
from vcm_eval.types import Detections, SplitFeatures

#: split point -> the levels a split model gives there, finest (stride 4) to coarsest (stride 32)
SPLIT_LEVELS: dict[str, tuple[str, ...]] = {"c": ("c2", "c3", "c4", "c5"), "p": ("p2", "p3", "p4", "p5")}


def split_of(features: SplitFeatures) -> str:
    """The split point ``features`` are at: ``"c"`` when every level is named ``c*``, ``"p"`` for ``p*``.

    Raises:
        ValueError: no levels, levels of two split points, or names of no known split point.
    """
    prefixes = {str(name)[:1] for name in features.layers}
    if len(prefixes) != 1 or next(iter(prefixes)) not in SPLIT_LEVELS:
        raise ValueError(f"split features must all be C-layers (c2..c5) or all P-layers (p2..p5); got levels "
                         f"{sorted(features.layers)}")
    return prefixes.pop()


def check_split(split: str) -> str:
    """``split`` if it is a known split point.

    Raises:
        ValueError: naming the known ones.
    """
    if split not in SPLIT_LEVELS:
        raise SettingError(f"unknown split point {split!r}; a split model has {sorted(SPLIT_LEVELS)} "
                         "(c: after the FPN laterals, p: after the FPN output convolutions)")
    return split


class WeightsError(UserError, RuntimeError):
    """Weights file missing, unreadable, or for another architecture; the message says what to fetch."""


class SplitModel(abc.ABC):
    """Contract of a model split at the C-layers or the P-layers (see the module docstring).

    Attributes:
        name: short identifier recorded with results.
        class_names: detector class index -> name.
        level_names: C-layer names in the order finest (stride 4) -> coarsest.
        level_strides: stride of each level in ``level_names`` (the P-layer of the same index has the same).
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
        """(Reconstructed) C-layers or P-layers (:func:`split_of`) -> detections in original-image pixels."""

    def to_split(self, features: SplitFeatures, split: str) -> SplitFeatures:
        """``features`` carried on to split point ``split``: themselves when they are there already, and from
        C-layers to P-layers :meth:`c_to_p` (``Pk = output_k(Tk)``). No split point leads back to the C-layers.

        Raises:
            ValueError: an unknown split, or a split that lies before the one ``features`` are at.
        """
        have = split_of(features)
        if check_split(split) == have:
            return features
        if (have, split) == ("c", "p"):
            return self.c_to_p(features)
        raise ValueError(f"{self.name}: features at split {have!r} cannot be carried back to split {split!r}")

    def c_to_p(self, features: SplitFeatures) -> SplitFeatures:
        """C-layers -> P-layers ``p2..p5`` (float32 (C, H/s, W/s), same geometry); models that have the
        P-layer split point override this.

        Raises:
            NotImplementedError: naming the backend, for models without it.
        """
        raise NotImplementedError(f"the {type(self).__name__} backend ({self.name}) has no P-layer split point; "
                                  "use an entry that codes C-layers (split 'c')")

    def detect(self, image: np.ndarray) -> Detections:
        """Unsplit inference; by the split contract, ``decode(encode(image))``."""
        return self.decode(self.encode(image))

    @abc.abstractmethod
    def identity(self) -> dict:
        """What determines the outputs (architecture, weights sha256, input size): JSON-able, for cache keys."""

    def encoder_identity(self) -> dict:
        """What determines the C-layers (:meth:`encode`), for their cache keys: :meth:`identity` unless a model
        differs from another only after the split (a mask branch on a shared detector), so that both share
        C-layers and everything coded from them."""
        return self.identity()


def check_image(image: np.ndarray, *, label: str = "image") -> np.ndarray:
    """Validate the RGB uint8 (H, W, 3) convention at the model boundary.

    Raises:
        ValueError: naming ``label`` and what is wrong, for a wrong dtype, shape or an image under 2 px.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise SettingError(f"{label}: models take RGB uint8 arrays of shape (H, W, 3), got {desc}; "
                         "read pictures with vcm_eval.data.images.read_image")
    if min(image.shape[:2]) < 2:
        raise SettingError(f"{label}: picture of {image.shape[1]}x{image.shape[0]} px is too small to detect on")
    return image
