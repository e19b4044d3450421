"""Executors run the sweep's tasks: in this process, in a local process pool, or on a Dask cluster.

They share one small contract so that the sweep's scheduling logic (:mod:`vcm_eval.pipeline`) is
written once: ``submit`` a picklable function with picklable arguments, then take finished futures
one at a time with ``next_done`` (constant work per finished task, so sweeps of many thousands of
tasks do not slow the driver down). Tasks are idempotent (their outputs are content-addressed
files), so an executor may run a task again after a worker died without changing any result.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
from collections import deque
from collections.abc import Callable
from typing import Any


class Executor(abc.ABC):
    """Contract: ``submit(fn, *args)`` returns a future; ``next_done()`` blocks until one submitted
    future not yet returned by it has finished, and returns it; ``result(future)`` returns its value or
    raises the task's exception. ``close()`` releases workers. ``workers`` is the number of tasks that
    can run at once (used for progress and benchmarks).
    """

    name: str = "executor"
    workers: int = 1

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    @abc.abstractmethod
    def next_done(self) -> Any: ...

    def result(self, future: Any) -> Any:
        return future.result()

    def is_worker_loss(self, exc: BaseException) -> bool:
        """True when ``exc`` says a worker died (the task itself may be fine and is resubmitted)."""
        return False

    def restart(self) -> None:
        """Recover after a worker loss (executors that recover by themselves need nothing here)."""

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def terminate(self) -> None:
        """Stop now: end running tasks and their workers (an interrupted sweep), rather than waiting for them as
        :meth:`close` does. Finished tasks' outputs are in the store, and a killed task leaves at most a temporary
        file there. Executors without workers of their own only need :meth:`close`."""
        self.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.terminate()  # Ctrl-C or SIGTERM: waiting for running tasks would keep their workers for minutes
        else:
            self.close()


class LocalExecutor(Executor):
    """Runs each task in this process, one at a time, in submission order, when ``next_done`` asks.

    Deferring the call to ``next_done`` (rather than running inside ``submit``) gives the same control
    flow as the parallel executors: a failing task surfaces as a failed future, never from ``submit``.
    """

    name = "local"
    workers = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[cf.Future, Callable[..., Any], tuple]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        self._queue.append((future, fn, args))
        return future

    def next_done(self) -> cf.Future:
        if not self._queue:
            raise RuntimeError("next_done() with no task submitted")
        future, fn, args = self._queue.popleft()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller via the future
                if isinstance(exc, KeyboardInterrupt):
                    raise
                future.set_exception(exc)
        return future
