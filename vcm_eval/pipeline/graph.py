"""The sweep as a graph: nodes (pure tasks with the store objects they write and read), which are finished,
and the book of *transient* outputs (C-layers under ``store.keep_features=until_done``) that may be
deleted once every reader is done.

Nothing here knows what a task computes: a node names a function, its arguments and its objects, so the
scheduler (:mod:`vcm_eval.pipeline.scheduler`) runs any graph, toy ones in tests included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

#: A stored object, as the store names it: ``(kind, key, suffix)``.
Obj = tuple[str, str, str]


@dataclass
class Node:
    """One task of the sweep graph.

    Attributes:
        outputs: what the task writes and a finished task leaves in the store.
        deps: keys of the nodes that must finish first.
        transient: what the task writes that is needed only until every node that ``reads`` it has
            finished (C-layers under ``until_done``): the driver deletes it then, and a missing transient
            output makes the task unfinished again only while a reader of it is unfinished.
        reads: transient outputs of other nodes this task reads.
    """

    key: str
    describe: str
    fn: Callable[..., dict]
    args: tuple
    outputs: list[Obj]
    deps: list[str] = field(default_factory=list)
    transient: list[Obj] = field(default_factory=list)
    reads: list[Obj] = field(default_factory=list)


def finished_nodes(nodes: Sequence[Node], exists: Callable[[Obj], bool]) -> set[str]:
    """Keys of the nodes whose work is in the store.

    A node is finished when all its outputs exist and each transient output either exists or has no
    unfinished reader: deleted C-layers of a picture that is done are no work to redo, but they are
    needed again as soon as one task reading them is not done (an interrupted sweep, a new entry).
    """
    # every output is looked at (no short cut): an unusable one is set aside by ``exists``, so that a task with
    # two outputs whose first is gone does not keep a second that refers to it
    finished = {n.key for n in nodes if all([exists(o) for o in n.outputs])}
    wanted = {o for n in nodes if n.key not in finished for o in n.reads}
    return {n.key for n in nodes
            if n.key in finished and all(o not in wanted or exists(o) for o in n.transient)}


class TransientTracker:
    """The driver's book of transient outputs (C-layers under ``until_done``) during one sweep.

    An object is *live* from the submission of its producer (from the start, if the producer is already
    done) until its producer and every unfinished reader have finished or failed. It may be deleted then
    if none of them failed (a failed picture keeps its C-layers for the re-run). Producers wait in plan
    order until fewer than ``window`` objects are live, so at most ``window`` pictures hold C-layers at
    once (more only when the store already holds them at the start).

    Args:
        nodes: every node of the sweep.
        todo_keys: the keys of the unfinished ones.
        window: the most live objects admitted at once.
    """

    def __init__(self, nodes: Sequence[Node], todo_keys: set[str], window: int) -> None:
        self.window = window
        transient = {o for n in nodes for o in n.transient}
        producing = [o for n in nodes if n.key in todo_keys for o in n.transient]
        reading = [o for n in nodes if n.key in todo_keys for o in n.reads if o in transient]
        self.outstanding: dict[Obj, int] = {}
        for obj in producing + reading:
            self.outstanding[obj] = self.outstanding.get(obj, 0) + 1
        self.failed: set[Obj] = set()
        self.waiting: deque[Node] = deque()
        # objects whose producer is done but a reader is not are in the store already: live from the start
        self.live = len(set(self.outstanding) - set(producing))

    def defer(self, node: Node) -> bool:
        """Queue a producer of transient outputs for :meth:`admit`; False for any other node."""
        if not node.transient:
            return False
        self.waiting.append(node)
        return True

    def admit(self) -> list[Node]:
        """The waiting producers that may start now."""
        ready = []
        while self.waiting and self.live < self.window:
            ready.append(self.waiting.popleft())
            self.live += 1
        return ready

    def resolve(self, node: Node, ok: bool) -> list[Obj]:
        """Note that ``node`` finished (``ok``) or failed or will not run; returns the objects that no
        unfinished node needs any more and that may be deleted."""
        released = []
        for obj in (*node.transient, *node.reads):
            if obj not in self.outstanding:
                continue  # a read of an object this sweep keeps (keep_features=all)
            if not ok:
                self.failed.add(obj)
            self.outstanding[obj] -= 1
            if self.outstanding[obj] == 0:
                self.live -= 1
                if obj not in self.failed:
                    released.append(obj)
        return released


def stale_transients(nodes: Iterable[Node], todo_keys: set[str]) -> list[Obj]:
    """Transient outputs of finished producers that no unfinished node reads (C-layers left behind by a
    driver killed between a picture's last task and their deletion, or by a run with ``all``)."""
    nodes = list(nodes)
    wanted = {o for n in nodes if n.key in todo_keys for o in n.reads}
    return [o for n in nodes if n.key not in todo_keys for o in n.transient if o not in wanted]
