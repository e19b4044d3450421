"""The scheduler on toy graphs: no model, no codec, no store on disk (vcm_eval.pipeline.scheduler)."""

from __future__ import annotations

import time
from functools import partial

import pytest

from vcm_eval.executors.base import LocalExecutor
from vcm_eval.pipeline import Node, Scheduler, SweepError, SweepInterrupted
from vcm_eval.store import UnusableObjectError


class Book:
    """An in-memory store of objects, with a log of what was written and deleted."""

    url = "memory://toy"

    def __init__(self) -> None:
        self.objects: dict = {}
        self.writes: list = []
        self.deleted: list = []
        self.damaged: set = set()

    def usable(self, obj, checked) -> bool:
        if obj in self.damaged:
            self.objects.pop(obj, None)
            self.damaged.discard(obj)
            return False
        return obj in self.objects

    def exists(self, obj) -> bool:
        return obj in self.objects

    def delete(self, obj) -> int:
        self.deleted.append(obj)
        return int(self.objects.pop(obj, None) is not None)


def write(book: Book, *objs, reads=(), fail: str | None = None) -> dict:
    """A toy task: check its inputs are there, then write its outputs (or fail)."""
    start = time.time()
    for obj in reads:
        if obj not in book.objects:
            raise UnusableObjectError(f"{obj} missing", str(obj))
    if fail:
        raise ValueError(fail)
    for obj in objs:
        book.objects[obj] = True
        book.writes.append(obj)
    return {"start": start, "end": time.time(), "cpu_s": 0.0, "worker": "here"}


def obj(name: str) -> tuple[str, str, str]:
    return ("kind", name, ".json")


def chain(book: Book, n: int, *, fail_at: int | None = None, transient: bool = False) -> list[Node]:
    """``n`` producers, each with two readers of its (possibly transient) output; reader ``fail_at``.0 fails."""
    nodes = []
    for i in range(n):
        made, kept = obj(f"p{i}"), obj(f"u{i}")
        nodes.append(Node(f"p:{i}", f"producer {i}", write, (book, made, kept), [kept] if transient else [made, kept],
                          transient=[made] if transient else []))
        for j in range(2):
            fn = partial(write, reads=(made,), fail="boom" if (fail_at, j) == (i, 0) else None)
            out = obj(f"r{i}.{j}")
            nodes.append(Node(f"r:{i}:{j}", f"reader {i}.{j}", fn, (book, out), [out], deps=[f"p:{i}"], reads=[made]))
    return nodes


def test_runs_dependencies_first_and_skips_what_is_stored():
    book = Book()
    nodes = chain(book, 3)
    timings = Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert set(timings) == {n.key for n in nodes}
    order = [o[1] for o in book.writes]
    for i in range(3):
        assert order.index(f"p{i}") < order.index(f"r{i}.0") and order.index(f"p{i}") < order.index(f"r{i}.1")
    book.writes.clear()
    assert Scheduler(LocalExecutor(), book, progress=False).run(nodes) == {}
    assert book.writes == []


def test_a_damaged_output_is_recomputed_with_nothing_else():
    book = Book()
    nodes = chain(book, 2)
    Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    book.writes.clear()
    book.damaged.add(obj("r1.1"))
    timings = Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert list(timings) == ["r:1:1"] and book.writes == [obj("r1.1")]


def test_failures_are_collected_and_their_dependents_counted_not_run():
    book = Book()
    nodes = chain(book, 3, fail_at=1)
    nodes.append(Node("after", "after reader 1.0", write, (book, obj("a")), [obj("a")], deps=["r:1:0"]))
    with pytest.raises(SweepError) as info:
        Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert info.value.failures == [("reader 1.0", "ValueError: boom")] and info.value.not_run == 1
    assert not info.value.healable
    assert "1 task(s) of the sweep failed" in str(info.value) and "memory://toy" in str(info.value)
    assert obj("r2.1") in book.objects and obj("a") not in book.objects  # the rest finished


def test_fail_fast_submits_nothing_after_the_first_failure():
    book = Book()
    nodes = [Node("x", "x", partial(write, fail="boom"), (book, obj("x")), [obj("x")]),
             Node("y1", "y1", write, (book, obj("y1")), [obj("y1")]),
             Node("y2", "y2", write, (book, obj("y2")), [obj("y2")], deps=["y1"])]
    with pytest.raises(SweepError) as info:
        Scheduler(LocalExecutor(), book, fail_fast=True, progress=False).run(nodes)
    assert len(info.value.failures) == 1 and info.value.not_run == 1
    assert obj("y1") in book.objects and obj("y2") not in book.objects
    book.objects.clear()
    with pytest.raises(SweepError):  # without fail_fast every task that can finish does
        Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert obj("y2") in book.objects


def test_a_missing_input_makes_the_failure_healable():
    book = Book()
    nodes = chain(book, 1)
    nodes[1].fn = partial(write, reads=(obj("gone"),))
    with pytest.raises(SweepError) as info:
        Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert info.value.healable and info.value.unusable == [str(obj("gone"))]


class PeakDict(dict):
    """A dict that remembers the most producer outputs it held at once."""

    peak = 0

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.peak = max(self.peak, sum(1 for k in self if k[1].startswith("p")))


def test_transient_outputs_are_deleted_once_read_and_the_window_bounds_them():
    book = Book()
    book.objects = PeakDict()
    nodes = chain(book, 4, transient=True)
    Scheduler(LocalExecutor(), book, progress=False, window=2).run(nodes)
    assert book.objects.peak == 2 and len(book.writes) == 4 * 4
    assert not any(k[1].startswith("p") for k in book.objects)  # every transient output deleted
    assert sorted(o[1] for o in book.deleted) == [f"p{i}" for i in range(4)]
    # a finished graph whose transient outputs are gone is finished: nothing runs again
    assert Scheduler(LocalExecutor(), book, progress=False, window=2).run(nodes) == {}
    # one reader lost: its producer runs again first, and its output is deleted again after
    del book.objects[obj("r3.1")]
    assert set(Scheduler(LocalExecutor(), book, progress=False, window=2).run(nodes)) == {"p:3", "r:3:1"}
    assert obj("p3") not in book.objects


def test_ctrl_c_stops_and_counts_what_is_stored():
    book = Book()
    nodes = chain(book, 2)

    def interrupt(b, o):
        raise KeyboardInterrupt

    nodes[2].fn = interrupt  # the second reader of the first producer
    with pytest.raises(SweepInterrupted) as info:
        Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    assert info.value.total == len(nodes) and info.value.finished == len(
        [n for n in nodes if all(o in book.objects for o in n.outputs)])
    assert "kept in the store memory://toy" in str(info.value)


def test_a_stop_whose_exception_was_swallowed_still_stops_the_sweep_at_its_next_step():
    from vcm_eval.pipeline.scheduler import request_stop

    book = Book()
    nodes = chain(book, 4)
    original = nodes[1].fn

    def swallowed_sigterm(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            request_stop(KeyboardInterrupt())  # as if raised inside a destructor and ignored there

    nodes[1].fn = swallowed_sigterm
    with pytest.raises(SweepInterrupted) as info:
        Scheduler(LocalExecutor(), book, progress=False).run(nodes)
    finished = info.value.finished
    assert info.value.total == 12 and 2 <= finished < 12  # stopped early; the task that ran when it came is kept
    rest = Scheduler(LocalExecutor(), book, progress=False).run(nodes)  # nothing is pending any more
    assert len(rest) == 12 - finished
