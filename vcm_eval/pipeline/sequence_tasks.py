"""The task bodies of a video CTC, where a sequence, not a picture, is the unit of coding.

    frames -> model.encode per frame -> {c2..c5} per frame        extract, once per sequence (+ uncoded detections)
           -> entry.encode_sequence(QP, condition)               code, one per (sequence, entry, QP)
           -> entry.decode_sequence -> model.decode per frame      detect, one per (sequence, entry, QP)
    frames -> entry.code_sequence(QP, condition) -> model.detect   code_video, for the video (remote-inference) anchor

Each writes one record per sequence (its detections per frame); C-layers are stored per frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vcm_eval.methods import FeatureCodingMethod, ImageCodingMethod
from vcm_eval.pipeline.records import clayer_arrays
from vcm_eval.pipeline.tasks import at_split, unique
from vcm_eval.pipeline.worker import Runtime, feature_memory, load_features, task_clock, task_timing
from vcm_eval.types import Detections


@dataclass(frozen=True)
class SequenceRef:
    """A sequence as tasks see it: the data set (to read frames with), its record and fingerprint."""

    sequence_id: str
    dataset: object
    record: object
    fingerprint: str
    num_frames: int


def _detections_record(sequence_id: str, entry: str, qp: int | None, detections: list[Detections], **extra) -> dict:
    return {"sequence": sequence_id, "entry": entry, "qp": qp, "frames": [d.to_dict() for d in detections], **extra}


def extract_sequence(rt: Runtime, seq: SequenceRef, clayers_keys: list[str], detections_key: str) -> dict:
    """C-layers of every frame (model encoder side), and the detections on them uncoded."""
    start = task_clock()
    store, model = rt.store, rt.task_model()
    encode_s = decode_s = 0.0
    detections = []
    need_detections = not store.exists("detections", detections_key, ".json")
    for index, key in enumerate(clayers_keys):
        if store.exists("clayers", key, ".npz"):
            if not need_detections:
                continue
            features, nn_part_1_s = load_features(store, key)
        else:
            picture = seq.dataset.frame(seq.record, index)
            t0 = time.perf_counter()
            features = model.encode(picture)
            nn_part_1_s = time.perf_counter() - t0
            store.write_arrays("clayers", key, clayer_arrays(features, nn_part_1_s))
        encode_s += nn_part_1_s
        if need_detections:
            t0 = time.perf_counter()
            detections.append(model.decode(features))
            decode_s += time.perf_counter() - t0
    if need_detections:
        store.write_json("detections", detections_key, _detections_record(
            seq.sequence_id, "uncompressed", None, detections, nn_part_1_s=encode_s, nn_part_2_s=decode_s))
    return task_timing(start)


def code_sequence(rt: Runtime, seq: SequenceRef, clayers_keys: list[str], entry: FeatureCodingMethod, qp: int,
                  condition: object, coded_key: str) -> dict:
    """Every level of every frame of one sequence, one entry, one QP, under the CTC's coding condition."""
    start = task_clock()
    store, memory = rt.store, feature_memory(rt)
    if not store.exists("coded", coded_key, ".json"):
        frames = [at_split(rt, load_features(store, key, memory)[0], entry.split) for key in clayers_keys]
        coder = rt.coder
        coded = entry.encode_sequence(frames, qp, coder, condition, label=f"sequence {seq.sequence_id} [{entry.name}]")
        store.write_json("coded", coded_key, coded.to_dict(), refs=unique(coder.refs))
    return task_timing(start)


def detect_sequence(rt: Runtime, seq: SequenceRef, coded_key: str, coded_type: type, entry: FeatureCodingMethod,
                    detections_key: str) -> dict:
    """The receiver: decode one sequence's bitstreams, run the model's decoder side on every frame."""
    start = task_clock()
    store = rt.store
    if not store.exists("detections", detections_key, ".json"):
        coded_dict, coded_sha = store.read_record("coded", coded_key)
        coded = coded_type.from_dict(coded_dict)
        t0 = time.perf_counter()
        frames = entry.decode_sequence(coded, rt.coder, label=f"sequence {seq.sequence_id} [{entry.name}]")
        decode_s = time.perf_counter() - t0
        model = rt.task_model()
        t0 = time.perf_counter()
        detections = [model.decode(f) for f in frames]
        store.write_json("detections", detections_key, _detections_record(
            seq.sequence_id, entry.name, qp=coded.rate_point, detections=detections, decode_s=decode_s,
            nn_part_2_s=time.perf_counter() - t0), refs=[("coded", coded_key, ".json", coded_sha)])
    return task_timing(start)


def code_video(rt: Runtime, seq: SequenceRef, entry: ImageCodingMethod, qp: int, condition: object, coded_key: str,
               detections_key: str) -> dict:
    """The video anchor: code the frames as one video, decode it, run the whole model on every decoded frame."""
    start = task_clock()
    store = rt.store
    if not (store.exists("coded", coded_key, ".json") and store.exists("detections", detections_key, ".json")):
        frames = [seq.dataset.frame(seq.record, i) for i in range(seq.num_frames)]
        coder = rt.coder
        decoded, coded = entry.code_sequence(frames, qp, coder, condition,
                                             label=f"sequence {seq.sequence_id} [{entry.name}]")
        model = rt.task_model()
        t0 = time.perf_counter()
        detections = [model.detect(f) for f in decoded]
        coded_ref = store.put_record("coded", coded_key, coded.to_dict(), refs=unique(coder.refs))
        store.write_json("detections", detections_key, _detections_record(
            seq.sequence_id, entry.name, qp, detections, decode_s=coded.decode_s,
            nn_part_2_s=time.perf_counter() - t0), refs=[coded_ref])
    return task_timing(start)
