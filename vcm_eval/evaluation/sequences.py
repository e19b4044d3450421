"""From per-sequence results to the tables of a video CTC: rate in kbps, accuracy per sequence, BD-rate per
sequence and averaged per class (as MPEG FCM's CTC reports them, one row per sequence and one per class).

Rate of a coded sequence at its frame rate ``f`` (frames per second) over ``N`` frames::

    kbps = bits / (N / f) / 1000

and, for comparison with the still-picture CTC, ``bpp = bits / (N * W * H)`` of the original frames. BD-rate
is a ratio of rates at equal accuracy, so it is the same computed on kbps or on bpp of one sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from vcm_eval.evaluation.summary import bd_table

#: the columns that identify a row of the sequence summary
KEYS = ["entry", "role", "sequence", "seq_class", "qp"]


def kilobits_per_second(num_bits: float, num_frames: int, frame_rate: float) -> float:
    """``bits / (num_frames / frame_rate) / 1000``: the rate of a sequence played at its frame rate."""
    if num_frames <= 0 or frame_rate <= 0:
        raise ValueError(f"a sequence needs frames and a frame rate, got {num_frames} frames at {frame_rate} fps")
    return float(num_bits) * float(frame_rate) / float(num_frames) / 1000.0


def summarize_sequences(rows: pd.DataFrame, score: Callable[[str, int | None, str], dict[str, float]]
                        ) -> pd.DataFrame:
    """One row per (entry, sequence, QP), plus each sequence's uncompressed reference (QP empty).

    ``rows`` holds one row per coded sequence with ``entry, role, sequence, seq_class, qp, num_bits, num_frames,
    frame_rate, width, height`` and the stage times; ``score(entry, qp, sequence)`` gives the task's metrics of
    that coded sequence (detection mAP over its frames, or MOTA/IDF1 of the tracker on it).
    Columns: the keys, ``num_frames, frame_rate, num_bits, kbps, avg_bpp``, the metrics, the summed stage times.
    """
    out = []
    for _, row in rows.iterrows():
        qp = None if pd.isna(row["qp"]) else int(row["qp"])
        record = {k: row[k] for k in KEYS if k != "qp"}
        record["qp"] = qp
        record["num_frames"] = int(row["num_frames"])
        record["frame_rate"] = float(row["frame_rate"])
        bits = row.get("num_bits")
        coded = bits is not None and not pd.isna(bits)
        record["num_bits"] = float(bits) if coded else None
        record["kbps"] = kilobits_per_second(bits, record["num_frames"], record["frame_rate"]) if coded else None
        record["avg_bpp"] = (float(bits) / (record["num_frames"] * float(row["width"]) * float(row["height"]))
                             if coded else None)
        record.update(score(str(row["entry"]), qp, str(row["sequence"])))
        for column in rows.columns:
            if column.endswith("_s") and column not in record:
                record[column] = row[column]
        out.append(record)
    summary = pd.DataFrame(out)
    order = {"reference": 0, "anchor": 1, "proposal": 2}
    summary["_role"] = summary["role"].map(order)
    summary["_qp"] = summary["qp"].fillna(-1)
    return (summary.sort_values(["seq_class", "sequence", "_role", "entry", "_qp"], kind="stable")
            .drop(columns=["_role", "_qp"]).reset_index(drop=True))


def bd_by_sequence(summary: pd.DataFrame, anchors: Sequence[str], entries: Sequence[str], metric: str,
                   **checks: float) -> pd.DataFrame:
    """BD-rate and BD-metric of every entry against every anchor, per sequence, then per class.

    Per-sequence rows come from :func:`vcm_eval.evaluation.summary.bd_table` on that sequence's curves (the
    same validity checks, ``checks``). A class row (``scope = class``, ``sequence`` empty) averages the class's
    finite per-sequence figures; ``sequences`` says how many entered the mean of how many, so a class mean over
    fewer sequences than the class holds is visible, never silent.
    """
    per_sequence = []
    coded = summary[summary["qp"].notna()]
    for (seq_class, sequence), rows in coded.groupby(["seq_class", "sequence"], sort=True):
        table = bd_table(rows, anchors, entries, metric, **checks)
        table.insert(0, "sequence", sequence)
        table.insert(0, "seq_class", seq_class)
        table.insert(0, "scope", "sequence")
        per_sequence.append(table)
    if not per_sequence:
        return pd.DataFrame()
    table = pd.concat(per_sequence, ignore_index=True)
    classes = []
    values = [c for c in table.columns if c.startswith(("bd_rate_", "bd_map_"))]
    for (seq_class, anchor, test), rows in table.groupby(["seq_class", "anchor", "test"], sort=True):
        row = {"scope": "class", "seq_class": seq_class, "sequence": "", "anchor": anchor, "test": test,
               "metric": metric}
        for column in values:
            finite = [v for v in rows[column] if v is not None and not (isinstance(v, float) and math.isnan(v))]
            row[column] = float(np.mean(finite)) if finite else math.nan
        finite_rates = int(np.isfinite(rows["bd_rate_pchip"].astype(float)).sum())
        row["sequences"] = f"{finite_rates} of {len(rows)}"
        row["reason"] = "" if finite_rates == len(rows) else "; ".join(
            f"{s}: {r}" for s, r in zip(rows["sequence"], rows["reason"]) if r)
        classes.append(row)
    table["sequences"] = "1 of 1"
    return pd.concat([table, pd.DataFrame(classes)], ignore_index=True)
