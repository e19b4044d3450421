"""Figures of a run: the rate–accuracy curves and the per-level rate split."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vcm_eval.columns import LEVEL_BITS, SIDE_INFO_BITS, level_column  # noqa: E402

#: stacking order of the per-level bits: C-layer entries' levels, then P-layer entries' (each entry has one set)
_LEVEL_ORDER = ("c5", "c4", "c3", "c2", "p5", "p4", "p3", "p2")


def rate_accuracy_plot(path: Path, summary: pd.DataFrame, *, metric: str, metric_label: str, title: str) -> Path:
    """mAP against bpp for every entry (anchors dashed), with the uncompressed mAP as a horizontal line."""
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    coded = summary[summary["qp"].notna()]
    for entry, rows in coded.groupby("entry", sort=False):
        rows = rows.sort_values("avg_bpp")
        style = "--" if rows["role"].iloc[0] == "anchor" else "-"
        ax.plot(rows["avg_bpp"], rows[metric] * 100.0, style, marker="o", label=f"{entry} ({rows['role'].iloc[0]})")
        for _, row in rows.iterrows():
            ax.annotate(f"{int(row['qp'])}", (row["avg_bpp"], row[metric] * 100.0), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    reference = summary[summary["qp"].isna()]
    if len(reference):
        value = float(reference[metric].iloc[0]) * 100.0
        ax.axhline(value, color="gray", linestyle=":", label=f"uncompressed ({value:.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("rate (bits per pixel of the original picture)")
    ax.set_ylabel(f"{metric_label} (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def rate_split_plot(path: Path, summary: pd.DataFrame, *, title: str) -> Path | None:
    """Stacked bars of the mean bits per image of each level (and side information), per QP and entry."""
    level_cols = [c for c in (level_column(LEVEL_BITS, lv) for lv in _LEVEL_ORDER) if c in summary.columns]
    if not level_cols:
        return None
    coded = summary[summary["qp"].notna() & summary[level_cols].notna().any(axis=1)]
    if coded.empty:
        return None
    entries = list(dict.fromkeys(coded["entry"]))
    fig, axes = plt.subplots(1, len(entries), figsize=(4.2 * len(entries), 4.2), dpi=120, sharey=True, squeeze=False)
    columns = level_cols + ([SIDE_INFO_BITS] if SIDE_INFO_BITS in coded else [])
    colors = plt.get_cmap("viridis")([i / max(1, len(columns) - 1) for i in range(len(columns))])
    for ax, entry in zip(axes[0], entries):
        rows = coded[coded["entry"] == entry].sort_values("qp")
        bottom = [0.0] * len(rows)
        positions = list(range(len(rows)))
        for column, color in zip(columns, colors):
            values = (rows[column].fillna(0) / 1000.0).tolist()
            ax.bar(positions, values, bottom=bottom, color=color,
                   label=column.replace(LEVEL_BITS, "").replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(positions, [str(int(q)) for q in rows["qp"]])
        ax.set_title(entry)
        ax.set_xlabel("QP")
    axes[0][0].set_ylabel("mean kbit per image")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
