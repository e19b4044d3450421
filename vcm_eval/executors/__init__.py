"""Where the sweep's tasks run: ``local`` (this process), ``pool`` (local processes), ``dask`` (a cluster)."""

from vcm_eval.executors.base import Executor, LocalExecutor
from vcm_eval.executors.pool import PoolExecutor

__all__ = ["Executor", "LocalExecutor", "PoolExecutor"]
