"""The sweep's results as rows: one per (picture, entry, rate point) and one per uncoded picture.

Every row is built from the two records each chain ends in (``coded`` and ``detections``) through the
:class:`~vcm_eval.methods.CodedResult` contract, whatever kind of entry made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vcm_eval.codecs.cache import bitstream_provenance
from vcm_eval.evaluation.bitrate import bits_per_pixel
from vcm_eval.pipeline.chains import Chain
from vcm_eval.pipeline.records import UNCOMPRESSED
from vcm_eval.store import Store
from vcm_eval.types import Detections


@dataclass
class SweepResults:
    """What the sweep produced, as loaded from the store.

    Attributes:
        rows: one dict per (image, entry, QP) plus one per (image, uncompressed), see :func:`collect_rows`.
        detections: ``(entry, qp) -> {image_id: Detections}``; the uncompressed reference under
            ``(UNCOMPRESSED, None)``.
        timings: task key -> ``{queue_s, run_s, cpu_s, worker}`` (and the C-layer load counts) for the tasks
            run in this invocation.
        commands: entry -> the codec record and command line of one of its coded pictures (the first
            image at its first QP), so that a run says exactly what coded it.
    """

    rows: list[dict]
    detections: dict[tuple[str, int | None], dict[str, Detections]]
    timings: dict[str, dict]
    commands: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedChain:
    """One (picture, entry, rate point) as the collector needs it."""

    entry: str
    role: str
    qp: int
    chain: Chain
    coded_key: str
    detections_key: str
    task_keys: Sequence[str]


def collect_rows(store: Store, pictures: Sequence[tuple[str, str, str, Sequence[PlannedChain]]],
                 timings: dict[str, dict] | None = None) -> SweepResults:
    """Load every result of a sweep from the store into rows.

    ``pictures``: ``(image_id, uncompressed detections key, extract task key, chains)`` per picture, in order.

    Row columns: ``image_id, entry, role, qp, width, height, num_bits, bpp``, the coded result's
    :meth:`~vcm_eval.methods.CodedResult.rate_columns` (``bits_<level>, qp_<level>, side_info_bits,
    psnr_<level>`` for features), what the receiver measured (``topdown_psnr_<level>``), ``nn_part_1_s,
    encode_s, decode_s, nn_part_2_s, from_cache`` (no encoder ran: another entry or run had coded the same
    pictures), the coded result's :meth:`~vcm_eval.methods.CodedResult.quality_columns` (``psnr_y`` for
    pictures), ``queue_s, run_s, cpu_s, worker`` (this invocation's task timings: wall and CPU seconds, empty
    for reused results), ``num_detections, computed_now`` (False when the row was reused from the store).
    Stage times are those measured when the result was computed.
    """
    timings = timings or {}
    commands: dict[str, dict] = {}
    rows: list[dict] = []
    detections: dict[tuple[str, int | None], dict[str, Detections]] = {}
    for image_id, uncompressed_key, extract_key, chains in pictures:
        uncompressed = store.read_json("detections", uncompressed_key)
        original_size = tuple(uncompressed["original_size"])
        dets = Detections.from_dict(uncompressed["detections"])
        detections.setdefault((UNCOMPRESSED, None), {})[image_id] = dets
        rows.append({"image_id": image_id, "entry": UNCOMPRESSED, "role": "reference", "qp": None,
                     "width": original_size[1], "height": original_size[0], "num_bits": None, "bpp": None,
                     "nn_part_1_s": uncompressed["nn_part_1_s"], "nn_part_2_s": uncompressed["nn_part_2_s"],
                     "num_detections": len(dets), **_task_timing(timings, [extract_key]),
                     "computed_now": extract_key in timings})
        for planned in chains:
            det = store.read_json("detections", planned.detections_key)
            coded = planned.chain.coded_type.from_dict(store.read_json("coded", planned.coded_key))
            dets = Detections.from_dict(det["detections"])
            detections.setdefault((planned.entry, planned.qp), {})[image_id] = dets
            if planned.entry not in commands:
                commands[planned.entry] = bitstream_provenance(store, coded.bitstream_keys()[0])
            row: dict[str, Any] = {"image_id": image_id, "entry": planned.entry, "role": planned.role,
                                   "qp": planned.qp, "width": original_size[1], "height": original_size[0],
                                   "num_bits": coded.num_bits, "bpp": bits_per_pixel(coded.num_bits, original_size),
                                   **coded.rate_columns()}
            for name, values in det["receiver"].items():
                row.update({f"{name}_{level}": value for level, value in sorted(values.items())})
            row.update(nn_part_1_s=planned.chain.sender_network_s(uncompressed), encode_s=coded.encode_s,
                       decode_s=det["decode_s"], nn_part_2_s=det["nn_part_2_s"], from_cache=coded.from_cache,
                       **coded.quality_columns(), **_task_timing(timings, planned.task_keys))
            row["num_detections"] = len(dets)
            row["computed_now"] = row["run_s"] is not None
            rows.append(row)
    return SweepResults(rows, detections, timings, commands)


def _task_timing(timings: dict[str, dict], keys: Sequence[str]) -> dict:
    """The summed timings of a row's tasks (None where none of them ran in this invocation); the first worker."""
    ran = [timings[k] for k in keys if k in timings]
    if not ran:
        return {"queue_s": None, "run_s": None, "cpu_s": None, "worker": None}
    return {**{name: sum(t[name] for t in ran) for name in ("queue_s", "run_s", "cpu_s")},
            "worker": next((t["worker"] for t in ran if t["worker"]), None)}
