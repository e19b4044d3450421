"""The CTC spreadsheet of a run (openpyxl through pandas).

Sheets: ``BD`` (BD-rate/BD-mAP of every entry against every anchor, pchip and cubic, with the
reason of every NaN), ``RD`` (each anchor and each test entry side by side per QP, the layout of
the CTC templates), one sheet per entry (QP, bits, bpp, mAP, per-level bits, times), ``per_image``
and ``config`` (the resolved configuration and codec identity).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

_ENTRY_COLUMNS = ["qp", "num_images", "num_bits", "avg_bpp"]


def _entry_sheet(summary: pd.DataFrame, entry: str, metric_columns: list[str]) -> pd.DataFrame:
    rows = summary[summary["entry"] == entry].sort_values("qp")
    extra = [c for c in rows.columns if c.startswith(("bits_", "side_info_bits", "psnr_", "topdown_psnr_"))]
    times = [c for c in ("nn_part_1_s", "encode_s", "decode_s", "nn_part_2_s") if c in rows.columns]
    columns = [c for c in _ENTRY_COLUMNS + metric_columns + extra + times if c in rows.columns]
    return rows[columns].dropna(axis=1, how="all").reset_index(drop=True)


def side_by_side(summary: pd.DataFrame, anchors: list[str], tests: list[str], metric: str) -> pd.DataFrame:
    """Anchor and test blocks next to each other, one row per rank of QP (QPs of each entry ascending)."""
    blocks = []
    for entry in anchors + [t for t in tests if t not in anchors]:
        rows = summary[summary["entry"] == entry].sort_values("qp").reset_index(drop=True)
        block = pd.DataFrame({
            f"{entry} QP": rows["qp"].astype(int),
            f"{entry} bpp": rows["avg_bpp"],
            f"{entry} {metric} (%)": rows[metric] * 100.0,
        })
        blocks.append(block)
    return pd.concat(blocks, axis=1) if blocks else pd.DataFrame()


def write_workbook(path: Path, *, summary: pd.DataFrame, bd: pd.DataFrame, per_image: pd.DataFrame,
                   config: dict[str, str], anchors: list[str], tests: list[str], metric: str,
                   metric_columns: list[str]) -> Path:
    """Write the spreadsheet; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        bd.to_excel(writer, sheet_name="BD", index=False)
        rd = side_by_side(summary, anchors, tests, metric)
        rd.to_excel(writer, sheet_name="RD", index=False)
        reference = summary[summary["qp"].isna()]
        reference[["entry", "num_images"] + [c for c in metric_columns if c in reference]].to_excel(
            writer, sheet_name="uncompressed", index=False)
        for entry in anchors + [t for t in tests if t not in anchors]:
            _entry_sheet(summary, entry, metric_columns).to_excel(writer, sheet_name=_sheet_name(entry), index=False)
        per_image.to_excel(writer, sheet_name="per_image", index=False)
        pd.DataFrame(sorted(config.items()), columns=["key", "value"]).to_excel(writer, sheet_name="config",
                                                                                index=False)
    return path


def _sheet_name(entry: str) -> str:
    # Excel limits sheet names to 31 characters and forbids a few.
    name = "".join("_" if c in "[]:*?/\\" else c for c in entry)
    return name[:31]
