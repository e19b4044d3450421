"""The task bodies: pure, idempotent functions of their arguments that read inputs from the store and write
their outputs there (a task whose outputs exist does nothing).

Data flow (DESIGN.md section 3)::

    image -> model.encode -> {c2..c5}                         extract, once per image (+ uncompressed detections)
          -> model.to_split(entry.split) -> entry.encode(QP)   code_features, one chain per (image, entry, QP)
          -> entry.decode -> model.decode -> detections        detect_features, one per reconstruction
    image -> entry.code(QP) -> decoded picture -> model.detect code_image, for image-coding entries

Only C-layers are stored: an entry coding another split point (``split = "p"``) gets them carried there by
the model in its coding task (``SplitModel.to_split``, a deterministic function of the C-layers).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from vcm_eval.data.images import read_image
from vcm_eval.evaluation.distortion import topdown_psnr
from vcm_eval.methods import CodedFeatures, FeatureCodingMethod, ImageCodingMethod
from vcm_eval.pipeline.records import clayer_arrays, detection_record, uncompressed_record
from vcm_eval.pipeline.worker import Runtime, feature_memory, load_features, task_clock, task_timing
from vcm_eval.store import Ref
from vcm_eval.types import SplitFeatures


@dataclass(frozen=True)
class ImageRef:
    """A picture as tasks see it: id, file path and content fingerprint."""

    image_id: str
    path: str
    fingerprint: str


def extract(rt: Runtime, image: ImageRef, clayers_key: str, detections_key: str) -> dict:
    """C-layers of one image (model encoder side) and the detections on them uncoded."""
    start = task_clock()
    store, model, memory = rt.store, rt.task_model(), feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("clayers", clayers_key, ".npz"):
        picture = read_image(image.path)
        t0 = time.perf_counter()
        features = model.encode(picture)
        nn_part_1_s = time.perf_counter() - t0
        arrays = clayer_arrays(features, nn_part_1_s)
        store.write_arrays("clayers", clayers_key, arrays)
        memory.keep(store, clayers_key, arrays)
    else:
        features, nn_part_1_s = load_features(store, clayers_key, memory)
    if not store.exists("detections", detections_key, ".json"):
        t0 = time.perf_counter()
        detections = model.decode(features)
        store.write_json("detections", detections_key, uncompressed_record(
            image.image_id, features, detections, nn_part_1_s, time.perf_counter() - t0))
    return task_timing(start, memory, counters)


def code_features(rt: Runtime, image_id: str, clayers_key: str, entry: FeatureCodingMethod, qp: int,
                  coded_key: str) -> dict:
    """One coding chain: every level of one image, one entry, one QP (sequential inside, for compensation)."""
    start = task_clock()
    store, memory = rt.store, feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("coded", coded_key, ".json"):
        features, _ = load_features(store, clayers_key, memory)
        features = at_split(rt, features, entry.split)
        coder = rt.coder
        coded = entry.encode(features, qp, coder, label=f"image {image_id} [{entry.name}]")
        # the record names the bitstreams it was made with: if one goes, the record is made again
        store.write_json("coded", coded_key, coded.to_dict(), refs=unique(coder.refs))
    return task_timing(start, memory, counters)


def detect_features(rt: Runtime, image_id: str, clayers_key: str, coded_key: str, entry: FeatureCodingMethod,
                    detections_key: str) -> dict:
    """The receiver: decode one image's bitstreams, run the model's decoder side, and measure where
    the error is (PSNR of each top-down map against the one computed from uncoded C-layers)."""
    start = task_clock()
    store, memory = rt.store, feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("detections", detections_key, ".json"):
        coded_dict, coded_sha = store.read_record("coded", coded_key)
        coded = CodedFeatures.from_dict(coded_dict)
        t0 = time.perf_counter()
        reconstruction = entry.decode(coded, rt.coder, label=f"image {image_id} [{entry.name}] QP {coded.rate_point}")
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        detections = rt.task_model().decode(reconstruction)
        nn_part_2_s = time.perf_counter() - t0
        # top-down maps exist only between the C-layers and the output convolutions: entries coding a later
        # split (P-layers) have none at the receiver, and their per-level PSNR (psnr_<level>) says it all
        receiver = ({"topdown_psnr": topdown_psnr(load_features(store, clayers_key, memory)[0], reconstruction)}
                    if entry.split == "c" else {})
        store.write_json("detections", detections_key, detection_record(
            image_id, coded, detections, decode_s, nn_part_2_s, coded.meta.original_size, receiver),
            refs=[("coded", coded_key, ".json", coded_sha)])
    return task_timing(start, memory, counters)


def code_image(rt: Runtime, image: ImageRef, entry: ImageCodingMethod, qp: int, coded_key: str,
               detections_key: str) -> dict:
    """Image-coding entries: code the picture, decode it, run the whole (unsplit) model on it. The decoded
    picture is not stored, so coding and detection are one task."""
    start = task_clock()
    store = rt.store
    if not (store.exists("coded", coded_key, ".json") and store.exists("detections", detections_key, ".json")):
        picture = read_image(image.path)
        coder = rt.coder
        decoded, coded = entry.code(picture, qp, coder, label=f"image {image.image_id} [{entry.name}]")
        t0 = time.perf_counter()
        detections = rt.task_model().detect(decoded)
        nn_part_2_s = time.perf_counter() - t0
        coded_ref = store.put_record("coded", coded_key, coded.to_dict(), refs=unique(coder.refs))
        store.write_json("detections", detections_key, detection_record(
            image.image_id, coded, detections, coded.decode_s, nn_part_2_s, picture.shape[:2]), refs=[coded_ref])
    return task_timing(start)


def unique(refs: Iterable[Ref]) -> list[Ref]:
    """``refs`` without repeats, in order (a bitstream two levels share is one reference)."""
    return list(dict.fromkeys(refs))


def at_split(rt: Runtime, features: SplitFeatures, split: str) -> SplitFeatures:
    """Stored C-layers carried on to an entry's split point by the model (``SplitModel.to_split``); the model
    is built only when the split differs, so C-layer entries code without one."""
    if split == "c":
        return features
    return rt.task_model().to_split(features, split)
