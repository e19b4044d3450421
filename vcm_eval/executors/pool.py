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
import signal
import time
from collections.abc import Callable
from typing import Any

from vcm_eval.executors.base import Executor

#: how long :meth:`PoolExecutor.terminate` lets a worker end its task (killing its encoder) before SIGKILL
TERMINATE_GRACE_S = 5.0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # an exception, not the default sudden death: the running task unwinds, and an external encoder it
    # started in a session of its own is killed on the way (vcm_eval.codecs.external.run_logged)
    raise SystemExit(128 + signum)


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
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

    def terminate(self) -> None:
        """End every worker now: SIGTERM (the task unwinds and kills its encoder), SIGKILL after
        :data:`TERMINATE_GRACE_S` for one that does not end."""
        procs = list((getattr(self._pool, "_processes", None) or {}).values())  # shutdown() forgets them
        self._pool.shutdown(wait=False, cancel_futures=True)
        start = time.monotonic()
        signalled = 0
        while any(proc.is_alive() for proc in procs) and time.monotonic() - start < TERMINATE_GRACE_S:
            # the first SIGTERM ends the running task (its handler raises SystemExit there); the pool's worker
            # loop survives that, so a second one, a moment later, ends the idle worker
            if signalled < 2 and time.monotonic() - start >= signalled * 0.5:
                for proc in procs:
                    if proc.is_alive():
                        proc.terminate()
                signalled += 1
            time.sleep(0.05)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
