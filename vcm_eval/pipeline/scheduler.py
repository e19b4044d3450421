"""Run a graph of pure tasks on an executor: skip what is stored, retry lost workers, fail fast or finish all,
show progress, delete transient outputs once done with, and stop cleanly on Ctrl-C or SIGTERM.

The scheduler knows nodes (:mod:`vcm_eval.pipeline.graph`) and an :class:`ObjectBook` (what is stored), not
pictures, entries or models, so it is tested with toy tasks. Bookkeeping is per event (a finished task looks
at its own dependents only), so the driver's work grows linearly with the graph.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vcm_eval.errors import UserError
from vcm_eval.executors.base import Executor
from vcm_eval.pipeline.graph import Node, Obj, TransientTracker, finished_nodes, stale_transients
from vcm_eval.store import UnusableObjectError

log = logging.getLogger("vcm_eval.pipeline")


class SweepError(UserError, RuntimeError):
    """Some tasks failed; finished work is in the store and a re-run resumes from it.

    Attributes:
        failures: ``(task, why)`` of each failed task.
        not_run: tasks that were not run because a task they depend on failed.
        unusable: store paths of the missing or damaged inputs that some of the failures met (set aside, so a
            new plan recomputes them); when every failure is one of these, the sweep plans again by itself.
    """

    def __init__(self, failures: list[tuple[str, str]], store_url: str, not_run: int = 0,
                 unusable: Sequence[str] = ()) -> None:
        self.failures = failures
        self.not_run = not_run
        self.unusable = list(unusable)
        lines = "\n".join(f"  - {what}: {why}" for what, why in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        skipped = f"\n  ({not_run} dependent task(s) not run because of the failures above)" if not_run else ""
        super().__init__(
            f"{len(failures)} task(s) of the sweep failed:\n{lines}{more}{skipped}\n"
            f"Everything that finished is kept in the store {store_url}; fix the cause and run the same "
            "command again to resume.")

    @property
    def healable(self) -> bool:
        """Every failure met a missing or damaged stored input (now set aside): planning again recomputes it."""
        return bool(self.failures) and len(self.unusable) == len(self.failures)


#: stops requested by a signal handler (:func:`request_stop`). A handler's exception can be swallowed: raised while
#: a destructor runs (a Dask future's ``__del__``), Python prints "Exception ignored in ..." and goes on; the
#: scheduler then sees the request here at its next step.
_STOP_REQUESTS: list[KeyboardInterrupt] = []


def request_stop(exc: KeyboardInterrupt) -> None:
    """Record a stop (Ctrl-C, SIGTERM) for the running sweep, whether or not ``exc`` reaches it."""
    _STOP_REQUESTS.append(exc)


def _raise_requested_stop() -> None:
    if _STOP_REQUESTS:
        raise _STOP_REQUESTS.pop()


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during the sweep, after the workers were stopped.

    Attributes:
        finished: tasks of the sweep whose outputs are in the store (counted there, after the workers stopped,
            so work that finished in a worker but was not yet reported to the driver counts too).
        total: tasks of the sweep.
        signum: the signal (SIGINT for Ctrl-C).
    """

    def __init__(self, finished: int, total: int, store_url: str, signum: int) -> None:
        super().__init__(f"{finished} of {total} tasks are finished and kept in the store {store_url}")
        self.finished, self.total, self.store_url, self.signum = finished, total, store_url, signum

    def __reduce__(self):
        return type(self), (self.finished, self.total, self.store_url, self.signum)


def unusable_cause(exc: BaseException) -> UnusableObjectError | None:
    """The missing or damaged stored object behind ``exc`` (it may be wrapped by an entry's own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UnusableObjectError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class ObjectBook(Protocol):
    """What the scheduler asks of the store: is an output there and usable, and deleting one."""

    url: str

    def usable(self, obj: Obj, checked: dict) -> bool:
        """Whether a stored output can be used as it is (an unusable one is set aside, so its task runs)."""

    def exists(self, obj: Obj) -> bool:
        """Whether the output is in the store (no checks: for counting)."""

    def delete(self, obj: Obj) -> int:
        """Delete the output; 1 when it was there."""


@dataclass
class Scheduler:
    """Runs the unfinished nodes of a graph on ``executor``, each as soon as its dependencies are done.

    Args:
        executor: where tasks run.
        book: the store, as the scheduler sees it.
        fail_fast: stop submitting new tasks after the first failure (default: finish all that can finish,
            then report every failure).
        progress: show a progress bar.
        max_worker_restarts: how often lost worker processes are replaced before the sweep gives up.
        window: with transient outputs, the most of them live at once (None: nothing is transient).
    """

    executor: Executor
    book: ObjectBook
    fail_fast: bool = False
    progress: bool = True
    max_worker_restarts: int = 3
    window: int | None = None

    def run(self, nodes: list[Node]) -> dict[str, dict]:
        """Run the nodes whose outputs are not stored yet; returns this invocation's task timings by node key
        (``queue_s, run_s, cpu_s, worker`` and what else the task's timing holds).

        Raises:
            SweepError: some tasks failed (after every task that could finish did, unless ``fail_fast``).
            SweepInterrupted: Ctrl-C or SIGTERM, after the workers were stopped.
        """
        checked: dict = {}
        started = time.perf_counter()
        done = finished_nodes(nodes, lambda obj: self.book.usable(obj, checked))
        log.debug("checked %d stored objects in %.1f s", len(checked), time.perf_counter() - started)
        todo = [n for n in nodes if n.key not in done]
        tracker = None
        if self.window is not None:
            todo_keys = {n.key for n in todo}
            self._delete(stale_transients(nodes, todo_keys), "left from an earlier run")
            tracker = TransientTracker(nodes, todo_keys, self.window)
        if not todo:
            log.info("all %d tasks are already in the store %s", len(nodes), self.book.url)
            return {}
        log.info("%d of %d tasks to run (%d found in the store) on %s", len(todo), len(nodes), len(done),
                 self.executor.describe())
        run = _Run(self, nodes, todo, done, tracker)
        try:
            run.start()
            while run.in_flight:
                _raise_requested_stop()
                run.step()
        except KeyboardInterrupt as exc:
            _STOP_REQUESTS.clear()
            run.bar.close()
            self.executor.terminate()  # before counting: what the workers finished meanwhile is in the store
            finished = finished_nodes(nodes, self.book.exists)
            raise SweepInterrupted(len(finished), len(nodes), self.book.url,
                                   getattr(exc, "signum", signal.SIGINT)) from exc
        return run.finish()

    def _delete(self, objects: Iterable[Obj], why: str = "") -> int:
        """Delete stored objects no task needs any more; returns how many were there. A failed deletion
        is logged, not raised: it costs disk, not results."""
        count = 0
        for obj in objects:
            try:
                count += self.book.delete(obj)
            except OSError as exc:
                log.warning("could not delete %s: %s", obj, exc)
        if count and why:
            log.info("keep_features=until_done: deleted %d C-layer file(s) %s", count, why)
        return count


class _Run:
    """The state of one :meth:`Scheduler.run`: what is in flight, held, failed and skipped."""

    def __init__(self, scheduler: Scheduler, nodes: list[Node], todo: list[Node], done: set[str],
                 tracker: TransientTracker | None) -> None:
        self.s, self.nodes, self.todo, self.done, self.tracker = scheduler, nodes, todo, done, tracker
        self.executor = scheduler.executor
        self.dependents: dict[str, list[Node]] = {}
        self.unmet: dict[str, int] = {}
        for node in todo:
            self.unmet[node.key] = sum(d not in done for d in node.deps)
            for dep in node.deps:
                self.dependents.setdefault(dep, []).append(node)
        self.bar = _progress(len(todo), scheduler.progress)
        self.in_flight: dict[Any, tuple[Node, float]] = {}
        self.held: list[Node] = []  # ready, but not submitted after a failure under fail_fast
        self.failures: list[tuple[str, str]] = []
        self.unusable: list[str] = []
        self.skipped: set[str] = set()
        self.timings: dict[str, dict] = {}
        self.restarts = 0
        self.deleted = 0

    def submit(self, node: Node) -> None:
        if self.s.fail_fast and self.failures:
            self.held.append(node)
        else:
            self.in_flight[self.executor.submit(node.fn, *node.args)] = (node, time.time())

    def ready(self, node: Node) -> None:
        """``node``'s dependencies are done: submit it, or queue it while too many transient outputs are live."""
        if not (self.tracker and self.tracker.defer(node)):
            self.submit(node)

    def start(self) -> None:
        for node in self.todo:
            if self.unmet[node.key] == 0:
                self.ready(node)
        self.admit()

    def admit(self) -> None:
        for node in self.tracker.admit() if self.tracker else ():
            self.submit(node)

    def skip_dependents(self, key: str) -> list[Node]:
        """Every node downstream of ``key`` not skipped before (a node with two paths to it, once)."""
        lost = []
        for node in self.dependents.get(key, []):
            if node.key not in self.skipped:
                self.skipped.add(node.key)
                lost += [node, *self.skip_dependents(node.key)]
        return lost

    def resolve(self, node: Node, ok: bool) -> None:
        """Delete what no unfinished task needs any more, and start the producers that may start now."""
        if self.tracker is None:
            return
        self.deleted += self.s._delete(self.tracker.resolve(node, ok))
        self.admit()

    def step(self) -> None:
        """Wait for the next task to end and act on it."""
        future = self.executor.next_done()
        if future not in self.in_flight:  # a stale future of a pool that was restarted
            return
        node, submitted = self.in_flight.pop(future)
        try:
            timing = self.executor.result(future)
        except Exception as exc:  # noqa: BLE001 - every task failure is reported, none is fatal here
            if self.executor.is_worker_loss(exc):
                self.restart(node, exc)
            else:
                self.failed(node, exc)
            return
        self.done.add(node.key)
        self.timings[node.key] = {"queue_s": max(0.0, timing["start"] - submitted),
                                  "run_s": timing["end"] - timing["start"], "cpu_s": timing["cpu_s"],
                                  "worker": timing["worker"],
                                  **{k: timing[k] for k in ("clayer_store_reads", "clayer_memory_hits")
                                     if k in timing}}
        self.bar.update(1)
        for dependent in self.dependents.get(node.key, []):
            self.unmet[dependent.key] -= 1
            if self.unmet[dependent.key] == 0:
                self.ready(dependent)
        self.resolve(node, ok=True)

    def restart(self, node: Node, exc: BaseException) -> None:
        self.restarts += 1
        if self.restarts > self.s.max_worker_restarts:
            raise RuntimeError(f"worker processes died {self.restarts} times; giving up. Finished tasks "
                               "are in the store; run again to resume.") from exc
        pending = [node] + [n for n, _ in self.in_flight.values()]
        log.warning("a worker process died; restarting the workers and resubmitting %d unfinished tasks",
                    len(pending))
        self.in_flight.clear()
        self.executor.restart()
        for again in pending:
            self.submit(again)

    def failed(self, node: Node, exc: BaseException) -> None:
        self.failures.append((node.describe, f"{type(exc).__name__}: {exc}"))
        cause = unusable_cause(exc)
        if cause is not None:
            self.unusable.append(cause.path)
        log.error("%s failed: %s", node.describe, exc)
        lost = self.skip_dependents(node.key)
        self.bar.update(1 + len(lost))
        self.bar.set_postfix(failed=len(self.failures))
        for gone in [node, *lost]:
            self.resolve(gone, ok=False)

    def finish(self) -> dict[str, dict]:
        self.bar.close()
        log_clayer_loads(self.timings)
        if self.deleted:
            log.info("keep_features=until_done: deleted the C-layers of %d finished picture(s)", self.deleted)
        waiting = list(self.tracker.waiting) if self.tracker else []  # producers never admitted (fail_fast)
        if waiting and not self.failures:
            raise RuntimeError(f"internal error: {len(waiting)} picture(s) were never started; run again to resume")
        if self.failures:
            not_run = (len(self.skipped) + len(self.held) + len(waiting)
                       + sum(len(self.dependents.get(n.key, [])) for n in [*self.held, *waiting]))
            raise SweepError(self.failures, self.s.book.url, not_run=not_run, unusable=self.unusable)
        return self.timings


def log_clayer_loads(timings: Mapping[str, dict]) -> None:
    """How the tasks of this invocation got their C-layers: store reads against worker memory."""
    reads = sum(t.get("clayer_store_reads", 0) for t in timings.values())
    hits = sum(t.get("clayer_memory_hits", 0) for t in timings.values())
    if reads + hits:
        pictures = len({key.split(":")[1] for key, t in timings.items()
                        if t.get("clayer_store_reads", 0) + t.get("clayer_memory_hits", 0)})
        log.info("C-layers: %d loads by tasks of %d picture(s), %d from the store (%.1f a picture), %d from "
                 "worker memory (store.feature_memory_mb)", reads + hits, pictures, reads, reads / pictures, hits)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tasks", unit="task", disable=not enabled, dynamic_ncols=True)

