"""A video CTC run (``ctc=embedded_video``, ``ctc=fcm_sfu``, ``ctc=fcm_tvd``): the sequence sweep, each coded
sequence scored (detection mAP over its frames, or the tracker's MOTA/IDF1/MOTP), rate in kbps, BD-rate per
sequence and per class, and the run folder's files. :func:`vcm_eval.api.run` hands sequence data sets here.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from vcm_eval.codecs.base import CodingCondition
from vcm_eval.data.sequences import SequenceDataset
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.coco import CocoEvaluator
from vcm_eval.evaluation.sequences import bd_by_sequence, summarize_sequences
from vcm_eval.pipeline.records import UNCOMPRESSED
from vcm_eval.pipeline.sequence_sweep import SequenceResults, SequenceSweep
from vcm_eval.types import Detections

log = logging.getLogger("vcm_eval")

#: the headline metric of each task on sequences
HEADLINES = {"detection": "map_50", "tracking": "mota"}


def coco_document(frames: Sequence[Any], class_names: Sequence[str], width: int, height: int) -> dict:
    """The ground truth of one sequence as a COCO document: frame ``i`` is image ``i + 1``, class ``k`` is
    category ``k + 1``, boxes ``[x, y, w, h]``."""
    images = [{"id": i + 1, "width": int(width), "height": int(height)} for i in range(len(frames))]
    annotations = []
    for i, frame in enumerate(frames):
        for box, label in zip(np.asarray(frame.boxes, np.float64).reshape(-1, 4), np.asarray(frame.labels)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": k + 1, "name": str(n)} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def in_dataset_classes(detections: Detections, model_classes: Sequence[str], dataset_classes: Sequence[str]
                       ) -> Detections:
    """The detections whose model class the data set has, with the data set's class indices."""
    index = {str(n): k for k, n in enumerate(dataset_classes)}
    labels = np.array([index.get(str(model_classes[int(c)]), -1) for c in detections.classes], np.int64)
    keep = labels >= 0
    return Detections(np.asarray(detections.boxes, np.float32)[keep], np.asarray(detections.scores, np.float32)[keep],
                      labels[keep])


class SequenceScorer:
    """Scores one coded sequence for the CTC's task, from its per-frame detections."""

    def __init__(self, dataset: Any, model_classes: Sequence[str], task: str, tracker: dict | None = None) -> None:
        if task not in HEADLINES:
            raise SettingError(f"ctc.task={task}: a video CTC scores {sorted(HEADLINES)}")
        self.dataset, self.model_classes, self.task = dataset, list(model_classes), task
        self.tracker = dict(tracker or {})
        self.records = {r.sequence_id: r for r in dataset.sequences()}
        self._truth = {sid: dataset.annotations(r) for sid, r in self.records.items()}

    @property
    def headline(self) -> str:
        return HEADLINES[self.task]

    @property
    def metric_columns(self) -> list[str]:
        detection = ["map_50", "map_50_95", "map_75"]
        return detection if self.task == "detection" else ["mota", "idf1", "motp", *detection]

    def __call__(self, detections: list[Detections], sequence_id: str) -> dict[str, float]:
        record, truth = self.records[sequence_id], self._truth[sequence_id]
        evaluator = CocoEvaluator(coco_document(truth, self.dataset.class_names, record.width, record.height),
                                  list(range(1, len(truth) + 1)), self.model_classes,
                                  source=f"sequence {sequence_id}")
        metrics = {k: v for k, v in evaluator.evaluate({str(i + 1): d for i, d in enumerate(detections)}).items()
                   if k in ("map_50", "map_50_95", "map_75", "num_detections")}
        if self.task == "tracking":
            from vcm_eval.evaluation.mot import mot_metrics
            from vcm_eval.tracking.sort import SortTracker

            tracker = SortTracker(**self.tracker)
            tracks = tracker.track_sequence([in_dataset_classes(d, self.model_classes, self.dataset.class_names)
                                             for d in detections])
            mot = mot_metrics(truth, tracks)
            metrics.update({"mota": mot["mota"], "idf1": mot["idf1"], "motp": mot["motp"],
                            "num_switches": mot.get("num_switches")})
        return metrics


def coding_condition(cfg: DictConfig) -> CodingCondition:
    """The CTC's coding condition (``ctc.condition``: ``mode``, ``intra_period``); the frame rate is each
    sequence's own."""
    node = OmegaConf.to_container(cfg.ctc.condition, resolve=True) if cfg.ctc.get("condition") else {}
    try:
        return CodingCondition(mode=str(node.get("mode", "AI")), intra_period=int(node.get("intra_period", 1)))
    except (TypeError, ValueError) as exc:
        raise SettingError(f"ctc.condition={node}: {exc}") from exc


def run_sequences(cfg: DictConfig, out_dir: Path, *, dataset: SequenceDataset, codec: Any, entries: list, store: Any,
                  settings: Any, started: float, started_ms: int) -> Any:
    """The sweep and the files of a video CTC; returns a :class:`vcm_eval.api.Results`."""
    from vcm_eval.api import Results, build, flatten, track
    from vcm_eval.executors.base import Executor

    condition = coding_condition(cfg)
    task = str(cfg.ctc.get("task") or "detection")
    if dataset.task != task:
        raise SettingError(f"ctc.task={task}, but the data set {dataset.name!r} is set up for {dataset.task} "
                           f"(dataset.task)")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    executor = build(cfg.executor, expect=Executor, what="executor")
    with executor:
        sweep = SequenceSweep(dataset=dataset, model_cfg=model_cfg, codec=codec, condition=condition, entries=entries,
                              store=store, executor=executor, fail_fast=bool(cfg.fail_fast),
                              progress=bool(cfg.progress), model_threads=int(cfg.model_threads),
                              store_settings=settings)
        model = sweep.model
        log.info("video CTC %s: %d sequences of %s, %s (intra period %d), model %s, codec %s, entries %s; store %s",
                 cfg.ctc.name, len(sweep.sequences), dataset.name, condition.mode, condition.intra_period, model.name,
                 codec.name, ", ".join(f"{s.entry.name} ({s.role})" for s in entries), store.url)
        results: SequenceResults = sweep.run()
    tracker = OmegaConf.to_container(cfg.ctc.tracker, resolve=True) if cfg.ctc.get("tracker") else {}
    scorer = SequenceScorer(dataset, model.class_names, task, tracker)
    rows = pd.DataFrame(results.rows)
    summary = summarize_sequences(rows, lambda entry, qp, seq: scorer(results.detections[(entry, qp, seq)], seq))
    summary = with_complexity(summary, dataset, model, {s.entry.name: s.entry for s in entries})
    anchors = [s.entry.name for s in entries if s.role == "anchor"]
    names = [s.entry.name for s in entries]
    bd = bd_by_sequence(summary, anchors, names, scorer.headline, min_points=int(cfg.bd.min_points),
                        min_overlap=float(cfg.bd.min_overlap),
                        saturation_tolerance=float(cfg.bd.get("saturation_tolerance", 0.0)))
    provenance = {"codec": sweep.runtime.coder.identity(), "model": model.identity(), "condition": condition.to_dict(),
                  "dataset": dataset.identity(), "executor": executor.describe(), "store": store.url,
                  "wall_s": time.perf_counter() - started,
                  "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    files = write_sequence_reports(out_dir, rows, summary, bd, scorer.headline, cfg)
    files["provenance"] = out_dir / "provenance.json"
    files["provenance"].write_text(json.dumps(provenance, indent=1, default=str))
    warnings, run_id = [], None
    if cfg.tracking.get("enabled", False):
        from vcm_eval.reporting.mlflow_sink import parent_run_name, run_tags

        config_flat = flatten(OmegaConf.to_container(cfg, resolve=True))
        tags = run_tags(provenance, codec=codec.name, model=model.name, dataset=dataset.name, ctc=str(cfg.ctc.name),
                        task=task)
        overall, overall_bd = mlflow_tables(summary, bd)
        finished_ms = started_ms + int(round(provenance["wall_s"] * 1000))
        run_id, warning = track(cfg, run_name=parent_run_name(names, str(cfg.ctc.name)), params=config_flat,
                                tags=tags, summary=overall, bd=overall_bd, metric_columns=scorer.metric_columns,
                                artifact_dir=out_dir, start_time_ms=started_ms, end_time_ms=finished_ms)
        if warning:
            warnings.append(warning)
    return Results(out_dir, summary, bd, rows, files, run_id, scorer.headline, warnings, None)


def with_complexity(summary: pd.DataFrame, dataset: SequenceDataset, model: Any,
                    entries: dict[str, Any]) -> pd.DataFrame:
    """``summary`` with the network parts' kMAC per pixel (:mod:`vcm_eval.evaluation.complexity`), counted once per
    frame size on the first frame of the first sequence of that size: the sender's part (``nn_part_1``) and the
    receiver's (``nn_part_2``) for feature entries and the uncompressed reference; for the image anchor the
    receiver runs the whole network and the sender none."""
    from vcm_eval.evaluation.complexity import network_complexity
    from vcm_eval.methods import ImageCodingMethod

    by_size: dict[tuple[int, int], dict[str, float]] = {}
    per_sequence = {}
    for record in dataset.sequences():
        size = (record.height, record.width)
        if size not in by_size:
            by_size[size] = network_complexity(model, dataset.frame(record, 0))
        per_sequence[record.sequence_id] = by_size[size]
    part_1, part_2 = [], []
    for row in summary.itertuples():
        counts = per_sequence[row.sequence]
        whole_model = isinstance(entries.get(row.entry), ImageCodingMethod)
        part_1.append(0.0 if whole_model else counts["nn_part_1_kmac_per_px"])
        part_2.append(counts["nn_part_2_kmac_per_px"] + (counts["nn_part_1_kmac_per_px"] if whole_model else 0.0))
    return summary.assign(nn_part_1_kmac_per_px=part_1, nn_part_2_kmac_per_px=part_2)


def mlflow_tables(summary: pd.DataFrame, bd: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What MLflow's runs show of a video CTC: per (entry, QP) the mean over sequences of the rate (``avg_bpp``,
    ``kbps``) and of the metrics, and the BD figures of each class (``test`` named ``<entry>/<class>``)."""
    numeric = [c for c in summary.columns if c not in ("entry", "role", "sequence", "seq_class", "qp")
               and pd.api.types.is_numeric_dtype(summary[c])]
    keyed = summary.assign(qp=summary["qp"].fillna(-1))
    overall = keyed.groupby(["entry", "role", "qp"], sort=False)[numeric].mean().reset_index()
    overall["qp"] = overall["qp"].where(overall["qp"] >= 0)
    if bd.empty:
        return overall, bd
    classes = bd[bd["scope"] == "class"].copy()
    classes["test"] = classes["test"] + "/" + classes["seq_class"].astype(str)  # a name MLflow accepts
    return overall, classes


def write_sequence_reports(out_dir: Path, rows: pd.DataFrame, summary: pd.DataFrame, bd: pd.DataFrame, metric: str,
                           cfg: DictConfig) -> dict[str, Path]:
    """``per_sequence.csv``, ``summary.csv`` (one row per sequence, entry and QP, rate in kbps), ``bd.csv`` (per
    sequence and per class), the spreadsheet (those three sheets and the resolved config) and R-P plots in kbps."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"per_image": out_dir / "per_sequence.csv", "summary": out_dir / "summary.csv", "bd": out_dir / "bd.csv"}
    rows.to_csv(files["per_image"], index=False)
    summary.to_csv(files["summary"], index=False)
    bd.to_csv(files["bd"], index=False)
    files["xlsx"] = out_dir / f"ctc_{cfg.ctc.name}.xlsx"
    from vcm_eval.api import flatten

    config = pd.DataFrame(sorted(flatten(OmegaConf.to_container(cfg, resolve=True)).items()), columns=["key", "value"])
    with pd.ExcelWriter(files["xlsx"], engine="openpyxl") as book:
        summary.to_excel(book, sheet_name="summary", index=False)
        bd.to_excel(book, sheet_name="bd", index=False)
        rows.to_excel(book, sheet_name="per_sequence", index=False)
        config.to_excel(book, sheet_name="config", index=False)
    files["rd_plot"] = rp_plot_kbps(out_dir / "rd_curves_kbps.png", summary, metric)
    (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return files


def rp_plot_kbps(path: Path, summary: pd.DataFrame, metric: str) -> Path:
    """One panel per sequence: the task metric against kbps (log axis) for every entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sequences = list(dict.fromkeys(summary["sequence"]))
    cols = min(4, len(sequences))
    rows = (len(sequences) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), dpi=110, squeeze=False)
    for ax, sequence in zip(axes.flat, sequences):
        part = summary[summary["sequence"] == sequence]
        for entry, curve in part[part["qp"].notna()].groupby("entry", sort=False):
            curve = curve.sort_values("kbps")
            ax.plot(curve["kbps"], curve[metric], marker="o", label=entry)
        reference = part[part["entry"] == UNCOMPRESSED]
        if len(reference):
            ax.axhline(float(reference[metric].iloc[0]), color="grey", linestyle="--", label=UNCOMPRESSED)
        ax.set_xscale("log")
        ax.set_title(str(sequence), fontsize=9)
        ax.set_xlabel("kbps")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(sequences):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

