"""Plan a video CTC before running it: the sequence sweep itself on the first frames of one sequence, timed, and
projected onto every sequence, entry and QP of the CTC (what ``tools/plan_sweep.py`` prints for ``ctc=fcm_sfu``,
``ctc=fcm_tvd`` or ``ctc=embedded_video``).

Costs scale with frame-megapixels (``frames x W x H / 1e6``) of each sequence: the sample's seconds per
frame-Mpixel of each kind of task (C-layer extraction, each entry's coding, its detection, the video anchor) times
the CTC's frame-Mpixels and each entry's number of rate points. The sample codes at one QP per entry (its middle
rate point); lower QPs code slower. A sequence's coding task runs on one worker, so the wall time on N workers is at
least the longest one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcm_eval.codecs.base import CodingCondition, VideoCodec
from vcm_eval.data.sequences import SequenceDataset, SequenceRecord
from vcm_eval.executors.base import LocalExecutor
from vcm_eval.pipeline.sequence_sweep import SequenceSweep
from vcm_eval.pipeline.sweep import EntrySpec
from vcm_eval.store import Store

KINDS = ("clayers", "bitstreams", "coded", "detections")


class FirstFrames(SequenceDataset):
    """The first ``frames`` frames of the first sequence of ``dataset``, as the sweep reads sequence sets."""

    def __init__(self, dataset: SequenceDataset, frames: int) -> None:
        self.dataset, self.name, self.task = dataset, dataset.name, dataset.task
        self.class_names = dataset.class_names
        first = dataset.sequences()[0]
        self.record = SequenceRecord(first.sequence_id, first.seq_class, min(frames, first.num_frames),
                                     first.frame_rate, first.width, first.height, first.source)

    def sequences(self) -> list[SequenceRecord]:
        return [self.record]

    def frame(self, record: SequenceRecord, index: int):
        return self.dataset.frame(record, index)

    def annotations(self, record: SequenceRecord):
        return self.dataset.annotations(record)[: record.num_frames]


@dataclass
class SequencePlan:
    """The sample's rates and the projection (``figures`` is what ``--json`` writes)."""

    sample_frames: int
    sample_mpixel: float
    seconds_per_frame_mpixel: dict[str, float]
    figures: dict[str, Any]


def plan_sequences(dataset: SequenceDataset, model_cfg: dict, codec: VideoCodec, condition: CodingCondition,
                   specs: list[EntrySpec], store: Store, *, sample_frames: int, workers: list[int]) -> SequencePlan:
    """Run the sweep on ``sample_frames`` frames of the first sequence (one QP per entry) and project it."""
    sample = FirstFrames(dataset, sample_frames)
    at_one_qp = []
    for spec in specs:
        entry = copy.copy(spec.entry)
        qps = sorted(spec.entry.rate_points)
        entry.rate_points = [qps[len(qps) // 2]]
        at_one_qp.append(EntrySpec(entry, spec.role))
    sweep = SequenceSweep(dataset=sample, model_cfg=model_cfg, codec=codec, condition=condition, entries=at_one_qp,
                          store=store, executor=LocalExecutor(), progress=False)
    results = sweep.run()
    record = sample.record
    frame_mpixel = record.num_frames * record.width * record.height / 1e6
    per_kind: dict[str, float] = {}
    for name, timing in results.timings.items():
        kind, *rest = name.split(":")
        label = kind if kind == "extract" else f"{kind}:{rest[1]}"
        per_kind[label] = per_kind.get(label, 0.0) + float(timing["cpu_s"]) / frame_mpixel
    root = Path(store.url)
    sizes = {kind: sum(p.stat().st_size for p in (root / kind).rglob("*") if p.is_file())
             if (root / kind).exists() else 0 for kind in KINDS}

    records = dataset.sequences()
    total_fmp = sum(r.num_frames * r.width * r.height / 1e6 for r in records)
    longest_fmp = max(r.num_frames * r.width * r.height / 1e6 for r in records)
    qps = {spec.entry.name: len(spec.entry.rate_points) for spec in specs}
    core_s = per_kind.get("extract", 0.0) * total_fmp
    longest_task_s = per_kind.get("extract", 0.0) * longest_fmp
    for label, rate in per_kind.items():
        if label == "extract":
            continue
        core_s += rate * total_fmp * qps[label.split(":")[1]]
        longest_task_s = max(longest_task_s, rate * longest_fmp)
    disk = {kind: size / frame_mpixel * total_fmp * (1 if kind == "clayers" else
                                                     sum(qps.values()) / max(1, len(qps)))
            for kind, size in sizes.items()}
    wall = {n: max(core_s / n, longest_task_s) for n in workers}
    figures = {"sequences": len(records), "frames": sum(r.num_frames for r in records), "frame_mpixel": total_fmp,
               "condition": condition.to_dict(), "core_hours": core_s / 3600,
               "longest_task_hours": longest_task_s / 3600,
               "wall_hours": {str(n): w / 3600 for n, w in wall.items()}, "disk_bytes": disk,
               "seconds_per_frame_mpixel": per_kind, "sample": {"sequence": record.sequence_id,
                                                                "frames": record.num_frames}}
    return SequencePlan(record.num_frames, frame_mpixel, per_kind, figures)


def describe(plan: SequencePlan, codec: str) -> str:
    """The plan as the tool prints it."""
    f = plan.figures
    lines = [f"sample: {plan.sample_frames} frames of {f['sample']['sequence']} ({plan.sample_mpixel:.2f} "
             f"frame-Mpixel) coded with {codec} under {f['condition']['mode']}, one QP per entry; "
             "CPU seconds per frame-Mpixel:"]
    lines += [f"  {label:<32} {rate:8.2f}" for label, rate in sorted(plan.seconds_per_frame_mpixel.items())]
    lines.append(f"CTC: {f['sequences']} sequences, {f['frames']} frames, {f['frame_mpixel']:.0f} frame-Mpixel")
    lines.append(f"projected: {f['core_hours']:.2f} core-hours; the longest single task "
                 f"{f['longest_task_hours']:.2f} h")
    lines += [f"  wall on {n:>5} workers: {h:8.2f} h" for n, h in f["wall_hours"].items()]
    lines.append("store: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in f["disk_bytes"].items())
                 + f" ({sum(f['disk_bytes'].values()) / 1e9:.2f} GB with every C-layer kept)")
    if math.isfinite(f["core_hours"]):
        lines.append("figures assume the sample's rate for every frame and QP (lower QPs code slower) and ideal "
                     "scaling across workers")
    return "\n".join(lines)
