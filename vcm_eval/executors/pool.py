"""``executor=pool``: tasks in a pool of local worker processes (one task per core by default).

Workers are started with ``spawn`` (forking a process that has loaded torch can deadlock in
OpenMP) and each uses one intra-op thread, so N workers use N cores. A worker that dies (killed,
out of memory) breaks a ``ProcessPoolExecutor``; the sweep then asks for a fresh pool and submits
the unfinished tasks again, which is safe because tasks are idempotent.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
from collections.abc import Callable
from typing import Any

from vcm_eval.executors.base import Executor


def _init_worker(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


class PoolExecutor(Executor):
    """Local process pool.

    Args:
        workers: number of worker processes; ``None`` or 0 = the number of CPUs.
        threads_per_worker: torch intra-op threads in each worker.
    """

    name = "pool"

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1) -> None:
        self.workers = int(workers) if workers else (os.cpu_count() or 1)
        self.threads_per_worker = threads_per_worker
        self._pool = self._new_pool()
        self._done: queue.SimpleQueue = queue.SimpleQueue()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads_per_worker,),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._done.put)
        return future

    def next_done(self) -> cf.Future:
        return self._done.get()

    def is_worker_loss(self, exc: BaseException) -> bool:
        """True when ``exc`` means a worker died rather than that the task failed."""
        return isinstance(exc, cf.process.BrokenProcessPool)

    def restart(self) -> None:
        """Replace a broken pool with a fresh one; futures of the old pool are forgotten."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self._done = queue.SimpleQueue()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
