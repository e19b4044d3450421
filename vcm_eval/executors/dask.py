"""``executor=dask``: the sweep's tasks on Dask distributed — a local cluster, a running scheduler, or a
batch-system cluster (Slurm, PBS, SGE, LSF, ...) started through ``dask-jobqueue``.

Dask does the scheduling, retries a task whose worker died elsewhere, and shows the dashboard;
vcm_eval only submits pure, idempotent tasks whose inputs and outputs live in the shared store, so a
task that runs twice (two workers, or a retry) leaves one valid result. Only the driver writes
MLflow and the spreadsheets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vcm_eval.errors import SettingError
from vcm_eval.executors.base import Executor

log = logging.getLogger(__name__)

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - DaskExecutor says how to install it
    WorkerPlugin = object  # type: ignore[assignment,misc]


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("executor=dask needs Dask distributed: pip install -e '.[dask]'") from exc
    return distributed


class _WorkerSetup(WorkerPlugin):
    """Worker plugin: one intra-op torch thread per worker thread, like the process pool, and glibc's
    default allocation strategy back.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting that variable switches
    off glibc's dynamic mmap threshold, so every large tensor is mmap-ed and unmapped again, and the
    model ran 1.6-1.8x slower in a Dask worker than in a pool worker (measured). ``mallopt`` raises
    the mmap and trim thresholds again, on any node the worker runs on.
    """

    name = "vcm-eval-worker-setup"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, worker: Any) -> None:
        import ctypes
        import ctypes.util
        import os

        os.environ["OMP_NUM_THREADS"] = str(self.threads)
        try:
            import torch

            torch.set_num_threads(self.threads)
        except ImportError:
            pass
        libc_name = ctypes.util.find_library("c")
        if libc_name and "MALLOC_TRIM_THRESHOLD_" in os.environ:
            try:
                libc = ctypes.CDLL(libc_name)
                m_trim_threshold, m_mmap_threshold = -1, -3
                libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
                libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
            except (OSError, AttributeError):  # not glibc: nothing to undo
                pass


#: Housekeeping intervals for a local cluster. With Dask's defaults (event-loop tick 20 ms, system monitor
#: 500 ms, worker memory monitor 100 ms) an idle LocalCluster of 2 workers used 2.8 CPU-seconds in 30 s
#: (4.6 % of a 2-core machine, taken from the tasks); with these, 0.4 s (0.7 %), measured 2026-12-04. The
#: cost: the dashboard's CPU and memory plots update every 2 s, a blocked event loop is noticed after 1 s,
#: and a worker's memory limit is checked every 500 ms.
QUIET_MONITORS = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.tick.limit": "5s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


class DaskExecutor(Executor):
    """Run tasks on a Dask cluster.

    Exactly one of these decides the cluster:

    * ``address``: connect to a running scheduler (``tcp://host:8786``);
    * ``jobqueue``: start a dask-jobqueue cluster, e.g.
      ``{"kind": "SLURMCluster", "jobs": 10, "cores": 4, "memory": "16GB", "walltime": "04:00:00", ...}``
      (every key but ``kind`` and ``jobs`` goes to the cluster class);
    * neither: a ``LocalCluster`` of ``workers`` processes.

    Args:
        address: scheduler address.
        workers: processes of the local cluster (``None`` = number of CPUs).
        threads_per_worker: task threads per worker process (1: codecs and the model are single-threaded).
        jobqueue: dask-jobqueue cluster settings.
        dashboard_address: where a local cluster serves its dashboard (``":0"`` picks a free port).
        worker_profile: keep Dask's statistical profiler in local workers (the dashboard's "Profile" page).
            It samples every worker thread's stack every 10 ms; off by default, because on a small machine
            that is CPU the tasks need.
        quiet_monitors: run a local cluster's periodic housekeeping less often (:data:`QUIET_MONITORS`).
            Dask's defaults suit a cluster whose scheduler has cores of its own; on a workstation the
            scheduler, nannies and workers share the cores with the tasks.
    """

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 jobqueue: dict | None = None, dashboard_address: str | None = ":0",
                 worker_profile: bool = False, quiet_monitors: bool = True) -> None:
        distributed = _require_distributed()
        self._cluster = None
        if address and jobqueue:
            raise SettingError("executor=dask: give either executor.address or executor.jobqueue, not both")
        if address:
            self.client = distributed.Client(address)
        elif jobqueue:
            self._cluster = make_jobqueue_cluster(jobqueue)
            self.client = distributed.Client(self._cluster)
        else:
            import os

            import dask

            n = int(workers) if workers else (os.cpu_count() or 1)
            # the nannies hand this configuration to the worker processes they start
            settings = {"distributed.worker.profile.enabled": bool(worker_profile),
                        **(QUIET_MONITORS if quiet_monitors else {})}
            with dask.config.set(settings):
                self._cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                                         processes=True, dashboard_address=dashboard_address)
            self.client = distributed.Client(self._cluster)
        self.client.register_plugin(_WorkerSetup(1))
        self._completed = distributed.as_completed()
        self.dashboard = self.client.dashboard_link
        self.workers = max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))
        log.info("Dask dashboard: %s (%d worker threads)", self.dashboard, self.workers)
        print(f"Dask dashboard: {self.dashboard}", flush=True)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        # pure=False: the same task submitted again (after a driver restart) must run, not be deduplicated
        # against a stale future; the store makes the repeat cheap.
        future = self.client.submit(fn, *args, pure=False)
        self._completed.add(future)
        return future

    def next_done(self) -> Any:
        return next(self._completed)

    def result(self, future: Any) -> Any:
        return future.result()

    def describe(self) -> str:
        return f"dask ({self.workers} worker threads, dashboard {self.dashboard})"

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_jobqueue_cluster(settings: dict) -> Any:
    """A dask-jobqueue cluster from ``{"kind": "SLURMCluster", "jobs": N, **cluster_kwargs}``, scaled to N jobs."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ImportError("executor.jobqueue needs dask-jobqueue: pip install -e '.[dask]'") from exc
    settings = dict(settings)
    kind = settings.pop("kind", "SLURMCluster")
    jobs = int(settings.pop("jobs", 1))
    cluster_cls = getattr(dask_jobqueue, kind, None)
    if cluster_cls is None:
        known = sorted(n for n in dir(dask_jobqueue) if n.endswith("Cluster"))
        raise SettingError(f"executor.jobqueue.kind={kind!r} is not a dask-jobqueue cluster; use one of {known}")
    settings = {k: v for k, v in settings.items() if v is not None}  # null in YAML = the class default
    cluster = cluster_cls(**settings)
    if jobs:
        cluster.scale(jobs=jobs)
    return cluster


def render_job_script(settings: dict) -> str:
    """The batch script dask-jobqueue would submit for ``settings`` (no batch system needed to render it).

    The scheduler that the script's workers would join is started on loopback and closed again.
    """
    settings = {k: v for k, v in dict(settings).items() if v is not None}
    settings["jobs"] = 0
    settings.setdefault("scheduler_options", {"host": "127.0.0.1"})
    cluster = make_jobqueue_cluster(settings)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
