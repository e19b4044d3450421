"""What a run's results are, for comparing two versions: the result columns of its tables, and the CPU."""

from __future__ import annotations

import platform

import pandas as pd

#: columns that are measured times, places or cache facts, not results
NOT_RESULTS = ("worker", "computed_now", "from_cache", "from_cache_share", "clayer_store_reads",
               "clayer_memory_hits")


def result_columns(table: pd.DataFrame) -> list[str]:
    """Every column of a summary, per-image or BD table except timings (``*_s``) and :data:`NOT_RESULTS`."""
    return [c for c in table.columns if not c.endswith("_s") and c not in NOT_RESULTS]


def cpu_fingerprint() -> dict[str, str]:
    """The CPU kind float results depend on: model name and the SIMD level torch dispatches to."""
    import torch

    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": model or platform.processor(),
            "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "torch": torch.__version__}
