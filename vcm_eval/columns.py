"""The names of the result tables' columns that every stage shares: per-level rate and distortion, stage times.

The pipeline writes them (``vcm_eval.pipeline.results``, the coded results of ``vcm_eval.methods``), the
summary averages them and the reports lay them out; one definition keeps a new level or stage from reaching
one table and not the next.
"""

from __future__ import annotations

#: per-stage wall times, summed over images in the summary (the CTC result CSV's columns)
STAGE_COLUMNS = ("nn_part_1_s", "encode_s", "decode_s", "nn_part_2_s")

#: per-level column prefixes: the QP a level was coded at, its bits, its PSNR, its top-down map's PSNR
LEVEL_QP, LEVEL_BITS, LEVEL_PSNR, TOPDOWN_PSNR = "qp_", "bits_", "psnr_", "topdown_psnr_"
#: bits of side information per image (the quantiser ranges, the picture size, sample-method parameters)
SIDE_INFO_BITS = "side_info_bits"

#: columns that split an image's bits
RATE_PREFIXES = (LEVEL_BITS, SIDE_INFO_BITS)
#: columns of distortion figures
PSNR_PREFIXES = (LEVEL_PSNR, TOPDOWN_PSNR)
#: every per-level column, in the order the spreadsheet shows them
LEVEL_PREFIXES = (LEVEL_QP, *RATE_PREFIXES, *PSNR_PREFIXES)


def level_column(prefix: str, level: str) -> str:
    """``prefix + level``: ``level_column(LEVEL_BITS, "c2") == "bits_c2"``."""
    return f"{prefix}{level}"
