"""CSV result files of a run: per image, per (entry, QP), BD comparisons, and the CTC result CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: columns of CompressAI-Vision's CTTC result CSV (after its unnamed index column), which MPEG's
#: result templates are filled from.
CTC_COLUMNS = ["Dataset", "qp", "avg_bpp", "end_accuracy", "nn_part_1", "encode", "decode", "nn_part_2"]


def ctc_result_frame(summary: pd.DataFrame, entry: str, dataset: str, metric: str) -> pd.DataFrame:
    """The CTC result rows of one entry: ascending QP, accuracy in percent, per-stage wall time in
    seconds summed over the images."""
    rows = summary[summary["entry"] == entry].copy()
    rows = rows.sort_values("qp")
    frame = pd.DataFrame({
        "Dataset": dataset,
        "qp": rows["qp"].astype(int).to_numpy(),
        "avg_bpp": rows["avg_bpp"].to_numpy(),
        "end_accuracy": (rows[metric] * 100.0).to_numpy(),
        "nn_part_1": rows["nn_part_1_s"].to_numpy(),
        "encode": rows["encode_s"].to_numpy(),
        "decode": rows["decode_s"].to_numpy(),
        "nn_part_2": rows["nn_part_2_s"].to_numpy(),
    }, columns=CTC_COLUMNS)
    return frame.reset_index(drop=True)


def write_run_tables(out_dir: Path, per_image: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Path]:
    """Write ``per_image.csv`` and ``summary.csv``, the tables every other report file is computed from.

    Written on their own, before anything computed from them, so that a failure later in the report (a full
    disk while the spreadsheet is written) still leaves what ``tools/rebuild_report.py`` needs.
    Returns the written paths by short name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"per_image": out_dir / "per_image.csv", "summary": out_dir / "summary.csv"}
    per_image.to_csv(paths["per_image"], index=False)
    summary.to_csv(paths["summary"], index=False)
    return paths


def write_result_tables(out_dir: Path, summary: pd.DataFrame, bd: pd.DataFrame, *, dataset: str,
                        metric: str) -> dict[str, Path]:
    """Write ``bd.csv`` and ``ctc/<entry>/final_<dataset>.csv``, the CSVs computed from ``summary``.

    Returns the written paths by short name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"bd": out_dir / "bd.csv"}
    bd.to_csv(paths["bd"], index=False)
    for entry in summary.loc[summary["qp"].notna(), "entry"].unique():
        path = out_dir / "ctc" / entry / f"final_{dataset}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        ctc_result_frame(summary, entry, dataset, metric).to_csv(path)
        paths[f"ctc_{entry}"] = path
    return paths
