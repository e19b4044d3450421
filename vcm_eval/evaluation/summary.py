"""From per-image results to the tables a CTC report needs: per (entry, QP) rows and BD comparisons."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vcm_eval.columns import LEVEL_QP, PSNR_PREFIXES, RATE_PREFIXES, STAGE_COLUMNS
from vcm_eval.data.base import DetectionEvaluator
from vcm_eval.evaluation.bd_rate import Curve, bd_accuracy, bd_rate
from vcm_eval.types import Detections


def summarize(per_image: pd.DataFrame, detections: Mapping[tuple[str, int | None], Mapping[str, Detections]],
              evaluator: DetectionEvaluator) -> pd.DataFrame:
    """One row per (entry, QP), plus the uncompressed reference (QP empty).

    Columns: ``entry, role, qp, num_images, num_bits`` (mean per image), ``avg_bpp`` (mean of the
    per-image bpp), the evaluator's metrics (``map_50``, ...), per-level QPs, mean bits and PSNR, and the
    per-stage wall times summed over images.
    """
    rows = []
    for (entry, qp), group in per_image.groupby(["entry", per_image["qp"].fillna(-1)], sort=False):
        qp_value = None if qp == -1 else int(qp)
        metrics = evaluator.evaluate(detections[(entry, qp_value)])
        row = {"entry": entry, "role": group["role"].iloc[0], "qp": qp_value, "num_images": len(group),
               "num_bits": _mean(group.get("num_bits")), "avg_bpp": _mean(group.get("bpp"))}
        row.update({k: v for k, v in metrics.items() if np.isscalar(v)})
        for column in sorted(group.columns):
            if column.startswith(LEVEL_QP) and group[column].notna().any():
                row[column] = int(group[column].dropna().iloc[0])  # one QP per level and rate point
        for column in sorted(group.columns):
            if column.startswith(RATE_PREFIXES):
                row[column] = _mean(group[column])
        for column in sorted(group.columns):
            if column.startswith(PSNR_PREFIXES):
                row[column] = _mean(group[column])
        for column in STAGE_COLUMNS:
            row[column] = float(group[column].fillna(0).sum()) if column in group else 0.0
        row["from_cache_share"] = _mean(group["from_cache"].astype(float)) if "from_cache" in group else None
        rows.append(row)
    summary = pd.DataFrame(rows)
    order = {"reference": 0, "anchor": 1, "proposal": 2}
    summary["_role"] = summary["role"].map(order)
    summary["_qp"] = summary["qp"].fillna(-1)
    return summary.sort_values(["_role", "entry", "_qp"], kind="stable").drop(columns=["_role", "_qp"]) \
        .reset_index(drop=True)


def _mean(series: pd.Series | None) -> float | None:
    if series is None:
        return None
    values = pd.to_numeric(series, errors="coerce")
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def curve_of(summary: pd.DataFrame, entry: str, metric: str) -> Curve:
    rows = summary[summary["entry"] == entry]
    return Curve.of(rows["qp"].astype(int).tolist(), rows["avg_bpp"].astype(float).tolist(),
                    rows[metric].astype(float).tolist())


def bd_table(summary: pd.DataFrame, anchors: Sequence[str], entries: Sequence[str], metric: str, *,
             min_points: int = 4, min_overlap: float = 0.1, saturation_tolerance: float = 0.0) -> pd.DataFrame:
    """BD-rate and BD-mAP of every entry against every anchor (an anchor is not compared with itself).

    Columns: ``anchor, test, metric, bd_rate_pchip, bd_rate_cubic`` (percent), ``bd_map_pchip,
    bd_map_cubic`` (mAP points), ``overlap`` (share of the joint mAP range both curves cover) and
    ``reason`` (why a cell is NaN, or which saturated points a figure left out; empty otherwise).
    """
    rows = []
    for anchor in anchors:
        anchor_curve = curve_of(summary, anchor, metric)
        for test in entries:
            if test == anchor:
                continue
            test_curve = curve_of(summary, test, metric)
            row: dict = {"anchor": anchor, "test": test, "metric": metric}
            reasons = []
            for method in ("pchip", "cubic"):
                rate = bd_rate(anchor_curve, test_curve, method=method, min_points=min_points, min_overlap=min_overlap,
                               saturation_tolerance=saturation_tolerance)
                acc = bd_accuracy(anchor_curve, test_curve, method=method, min_points=min_points,
                                  min_overlap=min_overlap, saturation_tolerance=saturation_tolerance)
                row[f"bd_rate_{method}"] = rate.value
                row[f"bd_map_{method}"] = acc.value
                if method == "pchip":
                    row["overlap"] = rate.overlap
                    reasons += [f"BD-rate: {rate.reason}"] if rate.reason else []
                    reasons += [f"BD-mAP: {acc.reason}"] if acc.reason else []
            row["reason"] = "; ".join(reasons)
            rows.append(row)
    columns = ["anchor", "test", "metric", "bd_rate_pchip", "bd_rate_cubic", "bd_map_pchip", "bd_map_cubic",
               "overlap", "reason"]
    return pd.DataFrame(rows, columns=columns)


def format_bd(value: float, unit: str) -> str:
    return "NaN" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f}{unit}"
