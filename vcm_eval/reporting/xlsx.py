"""The CTC spreadsheet of a run (openpyxl through pandas).

Sheets: ``BD`` (BD-rate/BD-mAP of every entry against every anchor, pchip and cubic, with the
reason of every NaN), ``RD`` (each anchor and each test entry side by side per QP, the layout of
the CTC templates), one sheet per entry (QP, bits, bpp, mAP, per-level bits, times), ``per_image``
and ``config`` (the resolved configuration and codec identity).

The cells keep the full-precision numbers of the CSVs; only their display is formatted for reading
(number formats by what a column holds, the header row frozen, columns as wide as their content).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vcm_eval.columns import LEVEL_PREFIXES, STAGE_COLUMNS

_ENTRY_COLUMNS = ["qp", "num_images", "num_bits", "avg_bpp"]


def _entry_sheet(summary: pd.DataFrame, entry: str, metric_columns: list[str]) -> pd.DataFrame:
    rows = summary[summary["entry"] == entry].sort_values("qp")
    extra = [c for c in rows.columns if c.startswith(LEVEL_PREFIXES)]
    times = [c for c in STAGE_COLUMNS if c in rows.columns]
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
        for worksheet in writer.book.worksheets:
            style_sheet(worksheet)
    return path


# --- display formats --------------------------------------------------------------------------------

#: BD-rate, stored as a percent number (-2.87 means -2.87 %): shown with its sign and a literal "%",
#: so the cell keeps the number the CSV holds (Excel's 0.00% would multiply it by 100).
BD_RATE_FORMAT = '+0.00" %";-0.00" %";0.00" %"'
#: BD-mAP, stored in mAP points (percent points of mAP).
BD_MAP_FORMAT = '+0.00" pt";-0.00" pt";0.00" pt"'
BPP_FORMAT = "0.0000"
MAP_FORMAT = "0.0000"  # mAP as a fraction (0.9671)
PERCENT_NUMBER_FORMAT = "0.00"  # mAP already in percent (96.71)
SHARE_FORMAT = "0.0%"  # a fraction shown as a percentage (0.85 -> 85.0%)
BITS_FORMAT = "#,##0"
SECONDS_FORMAT = "0.000"
PSNR_FORMAT = "0.00"
INTEGER_FORMAT = "0"

#: (pattern on the column header, format), first match wins.
_COLUMN_FORMATS: list[tuple[str, str]] = [
    (r"^bd_rate_", BD_RATE_FORMAT),
    (r"^bd_map_", BD_MAP_FORMAT),
    (r"^(overlap|from_cache_share)$", SHARE_FORMAT),
    (r"(^|\s)(avg_)?bpp$", BPP_FORMAT),
    (r"\(%\)$", PERCENT_NUMBER_FORMAT),
    (r"^map_", MAP_FORMAT),
    (r"^(num_bits|bits_.*|side_info_bits)$", BITS_FORMAT),
    (r"_s$", SECONDS_FORMAT),
    (r"(^|_)psnr(_|$)", PSNR_FORMAT),
    (r"(^|\s)(qp|qp_c\d|num_images|num_detections|width|height)$", INTEGER_FORMAT),
]

#: how each format displays a number, to size the columns (an approximation of Excel's rendering).
_DISPLAY: dict[str, Callable[[float], str]] = {
    BD_RATE_FORMAT: lambda v: f"{v:+.2f} %",
    BD_MAP_FORMAT: lambda v: f"{v:+.2f} pt",
    BPP_FORMAT: lambda v: f"{v:.4f}",
    PERCENT_NUMBER_FORMAT: lambda v: f"{v:.2f}",
    SHARE_FORMAT: lambda v: f"{v * 100:.1f}%",
    BITS_FORMAT: lambda v: f"{v:,.0f}",
    SECONDS_FORMAT: lambda v: f"{v:.3f}",
    INTEGER_FORMAT: lambda v: f"{v:.0f}",
}

MIN_WIDTH = 6
MAX_WIDTH = 60
#: Excel shows at most about 11 characters of a number in the General format.
_GENERAL_NUMBER_CHARS = 11


def column_format(header: str) -> str | None:
    """The number format of a column by what its header says it holds; None: Excel's General."""
    for pattern, number_format in _COLUMN_FORMATS:
        if re.search(pattern, header, flags=re.IGNORECASE):
            return number_format
    return None


def _display_width(value: object, number_format: str | None) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return len(str(value).upper())
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return 4
        if number_format in _DISPLAY:
            return len(_DISPLAY[number_format](value))
        if isinstance(value, int):
            return len(str(value))
        return min(len(repr(value)), _GENERAL_NUMBER_CHARS)
    return max((len(line) for line in str(value).splitlines()), default=0)


def style_sheet(ws, header_rows: int = 1) -> None:
    """Number formats by column, the header rows frozen, column widths fitted to header and content."""
    from openpyxl.utils import get_column_letter

    if ws.max_row < 1 or ws.max_column < 1:
        return
    ws.freeze_panes = ws.cell(row=header_rows + 1, column=1).coordinate
    for index, column in enumerate(ws.iter_cols(min_row=1, max_row=ws.max_row), start=1):
        header = " ".join(str(c.value) for c in column[:header_rows] if c.value is not None)
        number_format = column_format(header)
        width = max((len(line) for line in header.splitlines()), default=0)
        for cell in column[header_rows:]:
            value = cell.value
            if number_format and isinstance(value, (int, float)) and not isinstance(value, bool):
                cell.number_format = number_format
            width = max(width, _display_width(value, number_format))
        ws.column_dimensions[get_column_letter(index)].width = min(MAX_WIDTH, max(MIN_WIDTH, width + 2))


def _sheet_name(entry: str) -> str:
    # Excel limits sheet names to 31 characters and forbids a few.
    name = "".join("_" if c in "[]:*?/\\" else c for c in entry)
    return name[:31]
