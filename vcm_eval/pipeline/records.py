"""What the sweep stores, one schema per kind, and the keys it stores them under.

=============  ====================================================================================
kind           content
=============  ====================================================================================
``clayers``    one picture's C-layers (``.npz``): the maps, their geometry, the encoder-side time
``coded``      an entry's :class:`~vcm_eval.methods.CodedResult` of one picture at one rate point
``detections`` the receiver's result on one coded picture, or the detector's on uncoded C-layers
``bitstreams`` the codec's bytes and their record (:mod:`vcm_eval.codecs.cache`)
=============  ====================================================================================

Every key starts with :data:`SCHEMA`: when what a kind stores changes, the version goes up and the
keys with it, so a store written by another version is recomputed rather than misread, and no entry
has to keep an old identity by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcm_eval.methods import CodedResult
from vcm_eval.store import content_key
from vcm_eval.types import Detections, SplitFeatures, SplitMeta

#: version of the stored records; part of every key the sweep computes (see the module docstring)
SCHEMA = 2

#: pseudo-entry name of the detections on uncoded C-layers (the reference line of every plot).
UNCOMPRESSED = "uncompressed"

_GEOMETRY = ("original_size", "input_size", "padded_size")


def key(kind: str, *parts: Any) -> str:
    """The store key of an object of ``kind`` made from ``parts`` (with the record schema)."""
    return content_key(kind, SCHEMA, *parts)


def clayer_arrays(features: SplitFeatures, nn_part_1_s: float) -> dict[str, np.ndarray]:
    """What the store keeps of one picture's C-layers: the maps, their geometry, the encoder-side time."""
    geometry = {f"meta_{k}": np.asarray(getattr(features.meta, k), dtype=np.int64) for k in _GEOMETRY}
    return {**features.layers, **geometry, "nn_part_1_s": np.asarray(nn_part_1_s)}


def features_from_arrays(arrays: dict[str, np.ndarray]) -> tuple[SplitFeatures, float]:
    """The inverse of :func:`clayer_arrays`: C-layers with their geometry, and the encoder-side time."""
    meta = SplitMeta(**{k: tuple(int(v) for v in arrays.pop(f"meta_{k}")) for k in _GEOMETRY})
    nn_part_1_s = float(arrays.pop("nn_part_1_s"))
    return SplitFeatures(layers=arrays, meta=meta), nn_part_1_s


def uncompressed_record(image_id: str, features: SplitFeatures, detections: Detections, nn_part_1_s: float,
                        nn_part_2_s: float) -> dict:
    """The detector's result on uncoded C-layers (the extract task's)."""
    return {"image_id": image_id, "entry": UNCOMPRESSED, "detections": detections.to_dict(),
            "nn_part_1_s": nn_part_1_s, "nn_part_2_s": nn_part_2_s,
            "original_size": list(features.meta.original_size)}


def detection_record(image_id: str, coded: CodedResult, detections: Detections, decode_s: float,
                     nn_part_2_s: float, original_size: tuple[int, int],
                     receiver: dict[str, dict[str, float]] | None = None) -> dict:
    """The receiver's result on one coded picture, for any kind of entry.

    Args:
        decode_s: wall time of decoding the bitstreams into what the model reads.
        nn_part_2_s: the model's time on the reconstruction.
        receiver: figures measured at the receiver, by name (``topdown_psnr``: level -> dB).
    """
    return {"image_id": image_id, "entry": coded.entry, "qp": coded.rate_point,
            "detections": detections.to_dict(), "decode_s": decode_s, "nn_part_2_s": nn_part_2_s,
            "receiver": receiver or {}, "original_size": [int(original_size[0]), int(original_size[1])]}
