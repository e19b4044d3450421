"""The sweep of a video CTC: every (sequence, entry, QP) as tasks on the same store, scheduler and executors as
the still-picture sweep (:mod:`vcm_eval.pipeline.sweep`), under one coding condition (``AI``, ``LD``, ``RA``).

Keys hash what each output depends on, as for pictures: a frame's C-layers its sequence's fingerprint, its
index and the model's encoder side; a coded sequence its frames' C-layers, the entry, the codec, the condition
and the QP. So a resumed sweep redoes nothing, and the AI run's C-layers serve the LD and RA runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from vcm_eval.codecs.base import CodingCondition, VideoCodec
from vcm_eval.errors import SettingError
from vcm_eval.executors.base import Executor
from vcm_eval.methods import FeatureCodingMethod, ImageCodingMethod
from vcm_eval.pipeline import sequence_tasks as tasks
from vcm_eval.pipeline.chains import Identities
from vcm_eval.pipeline.graph import Node
from vcm_eval.pipeline.records import UNCOMPRESSED, key
from vcm_eval.pipeline.scheduler import Scheduler
from vcm_eval.pipeline.settings import StoreSettings
from vcm_eval.pipeline.sweep import EntrySpec, _StoreBook, run_healing
from vcm_eval.pipeline.worker import Runtime
from vcm_eval.sequence_methods import CodedFeatureSequence, CodedFrames, CodedVideo
from vcm_eval.store import Store
from vcm_eval.types import Detections

log = logging.getLogger("vcm_eval.pipeline")


def condition_dict(condition: CodingCondition) -> dict:
    """The coding condition as plain data (part of every coded key)."""
    return condition.to_dict()


@dataclass
class SequenceResults:
    """What a video sweep produced.

    Attributes:
        rows: one dict per (sequence, entry, QP) and one per (sequence, uncompressed).
        detections: ``(entry, qp, sequence) -> [Detections per frame]``.
        timings: task key -> timing of the tasks run in this invocation.
    """

    rows: list[dict]
    detections: dict[tuple[str, int | None, str], list[Detections]]
    timings: dict[str, dict]


class SequenceSweep:
    """Plans and runs every task of a video CTC on an executor (the arguments of :class:`~vcm_eval.pipeline.Sweep`
    plus the coding ``condition``)."""

    def __init__(self, *, dataset: Any, model_cfg: dict, codec: VideoCodec, condition: CodingCondition,
                 entries: Sequence[EntrySpec], store: Store, executor: Executor, fail_fast: bool = False,
                 progress: bool = True, model_threads: int = 1,
                 store_settings: StoreSettings | Mapping[str, Any] | None = None) -> None:
        self.dataset = dataset
        self.settings = StoreSettings.of(store_settings)
        self.runtime = Runtime(store.url, model_cfg, codec, int(model_threads), self.settings.feature_memory_mb)
        self.condition = condition
        self.entries = list(entries)
        self.store, self.executor, self.fail_fast, self.progress = store, executor, fail_fast, progress
        for spec in self.entries:
            entry = spec.entry
            if not isinstance(entry, (FeatureCodingMethod, ImageCodingMethod)):
                raise SettingError(f"entry {entry.name!r} is neither a feature nor an image entry; a video CTC codes "
                                   "only those")
            if isinstance(entry, ImageCodingMethod) and type(entry).code_sequence is ImageCodingMethod.code_sequence:
                entry.code_sequence([], 0, None, None)  # raises the entry's own one-line reason, before any work

    @property
    def model(self):
        return self.runtime.model

    @cached_property
    def identities(self) -> Identities:
        return Identities(self.runtime.model_identity(), self.runtime.encoder_identity(),
                          self.runtime.coder.identity())

    @cached_property
    def sequences(self) -> list[tasks.SequenceRef]:
        records = self.dataset.sequences()
        if not records:
            raise SettingError(f"dataset {self.dataset.name!r} selects no sequences")
        return [tasks.SequenceRef(r.sequence_id, self.dataset, r, self.dataset.fingerprint(r), int(r.num_frames))
                for r in records]

    def condition_of(self, seq: tasks.SequenceRef) -> CodingCondition:
        """The CTC's condition at the sequence's own frame rate."""
        return self.condition.with_frame_rate(float(seq.record.frame_rate))

    def keys(self, seq: tasks.SequenceRef) -> dict:
        ids, condition = self.identities, condition_dict(self.condition_of(seq))
        frames = [key("clayers", seq.fingerprint, index, ids.encoder) for index in range(seq.num_frames)]
        out: dict[Any, Any] = {"clayers": frames, UNCOMPRESSED: key("det-sequence", frames, ids.model)}
        for spec in self.entries:
            entry = spec.entry
            for qp in entry.rate_points:
                if isinstance(entry, ImageCodingMethod):
                    coded = key("coded-video", seq.fingerprint, entry.identity(), ids.codec, condition, qp)
                else:
                    coded = key("coded-sequence", frames, entry.identity(), ids.codec, condition, qp)
                out[(entry.name, qp)] = (coded, key("det-sequence", coded, ids.model))
        return out

    def plan(self) -> list[Node]:
        rt, nodes = self.runtime, []
        for seq in self.sequences:
            keys = self.keys(seq)
            clayers = [("clayers", k, ".npz") for k in keys["clayers"]]
            uncompressed = ("detections", keys[UNCOMPRESSED], ".json")
            transient = self.settings.retention.transient
            extract = Node(f"extract:{seq.sequence_id}", f"sequence {seq.sequence_id}: C-layers",
                           tasks.extract_sequence, (rt, seq, keys["clayers"], keys[UNCOMPRESSED]),
                           [uncompressed] if transient else [*clayers, uncompressed],
                           transient=clayers if transient else [])
            nodes.append(extract)
            for spec in self.entries:
                entry = spec.entry
                for qp in entry.rate_points:
                    coded, detections = keys[(entry.name, qp)]
                    what = f"sequence {seq.sequence_id} / {entry.name} / QP {qp}"
                    if isinstance(entry, ImageCodingMethod):
                        nodes.append(Node(f"video:{seq.sequence_id}:{entry.name}:{qp}", what, tasks.code_video,
                                          (rt, seq, entry, qp, self.condition_of(seq), coded, detections),
                                          [("coded", coded, ".json"), ("detections", detections, ".json")]))
                        continue
                    code = Node(f"code:{seq.sequence_id}:{entry.name}:{qp}", f"{what}: coding", tasks.code_sequence,
                                (rt, seq, keys["clayers"], entry, qp, self.condition_of(seq), coded),
                                [("coded", coded, ".json")], [extract.key], reads=clayers if transient else [])
                    detect = Node(f"detect:{seq.sequence_id}:{entry.name}:{qp}", f"{what}: detection",
                                  tasks.detect_sequence, (rt, seq, coded, _coded_type(entry), entry, detections),
                                  [("detections", detections, ".json")], [code.key])
                    nodes += [code, detect]
        return nodes

    def run(self) -> SequenceResults:
        import torch

        threads = torch.get_num_threads()
        retention = self.settings.retention
        # the window counts frames (pictures holding C-layers); it admits at least two sequences at a time
        window = (max(retention.window(self.executor.workers), 2 * max(s.num_frames for s in self.sequences))
                  if retention.transient else None)
        try:
            scheduler = Scheduler(self.executor, _StoreBook(self.store), fail_fast=self.fail_fast,
                                  progress=self.progress, window=window)
            return run_healing(scheduler, self.plan, self.collect)
        finally:
            torch.set_num_threads(threads)

    def collect(self, timings: dict[str, dict]) -> SequenceResults:
        rows, detections = [], {}
        store = self.store
        for seq in self.sequences:
            keys, record = self.keys(seq), seq.record
            base = {"sequence": seq.sequence_id, "seq_class": record.seq_class, "num_frames": seq.num_frames,
                    "frame_rate": float(record.frame_rate), "width": int(record.width), "height": int(record.height)}
            uncompressed = store.read_json("detections", keys[UNCOMPRESSED])
            detections[(UNCOMPRESSED, None, seq.sequence_id)] = [Detections.from_dict(d)
                                                                  for d in uncompressed["frames"]]
            rows.append({"entry": UNCOMPRESSED, "role": "reference", "qp": None, **base, "num_bits": None,
                         "nn_part_1_s": uncompressed["nn_part_1_s"], "nn_part_2_s": uncompressed["nn_part_2_s"],
                         "computed_now": f"extract:{seq.sequence_id}" in timings})
            for spec in self.entries:
                entry = spec.entry
                for qp in entry.rate_points:
                    coded_key, det_key = keys[(entry.name, qp)]
                    det = store.read_json("detections", det_key)
                    coded = _coded_type(entry).from_dict(store.read_json("coded", coded_key))
                    detections[(entry.name, qp, seq.sequence_id)] = [Detections.from_dict(d) for d in det["frames"]]
                    ran = [timings[k] for k in (f"code:{seq.sequence_id}:{entry.name}:{qp}",
                                                f"detect:{seq.sequence_id}:{entry.name}:{qp}",
                                                f"video:{seq.sequence_id}:{entry.name}:{qp}") if k in timings]
                    rows.append({"entry": entry.name, "role": spec.role, "qp": qp, **base, "num_bits": coded.num_bits,
                                 **coded.rate_columns(),
                                 "nn_part_1_s": uncompressed["nn_part_1_s"] if isinstance(entry, FeatureCodingMethod)
                                 else 0.0,
                                 "encode_s": coded.encode_s, "decode_s": det["decode_s"],
                                 "nn_part_2_s": det["nn_part_2_s"], "from_cache": coded.from_cache,
                                 "intra_only": bool(getattr(coded, "intra_only", False)),
                                 **coded.quality_columns(),
                                 "run_s": sum(t["run_s"] for t in ran) if ran else None,
                                 "cpu_s": sum(t["cpu_s"] for t in ran) if ran else None, "computed_now": bool(ran)})
        return SequenceResults(rows, detections, timings)


def _coded_type(entry) -> type:
    if isinstance(entry, ImageCodingMethod):
        return CodedVideo
    return CodedFeatureSequence if type(entry).encode_sequence is not FeatureCodingMethod.encode_sequence \
        else CodedFrames
