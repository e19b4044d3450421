"""What a run's results are, for comparing two versions: the result columns of its tables, and the CPU."""

from __future__ import annotations

import pandas as pd

from vcm_eval.machine import cpu_fingerprint

__all__ = ["NOT_RESULTS", "cpu_fingerprint", "result_columns"]

#: columns that are measured times, places or cache facts, not results
NOT_RESULTS = ("worker", "computed_now", "from_cache", "from_cache_share", "clayer_store_reads",
               "clayer_memory_hits")


def result_columns(table: pd.DataFrame) -> list[str]:
    """Every column of a summary, per-image or BD table except timings (``*_s``) and :data:`NOT_RESULTS`."""
    return [c for c in table.columns if not c.endswith("_s") and c not in NOT_RESULTS]
