"""The sweep: every (image, entry, QP) of a CTC definition as a graph of pure, idempotent tasks.

Each task reads its inputs from, and writes its outputs to, the content-addressed :class:`Store` under
keys that hash everything the output depends on. :class:`Sweep` plans the whole graph up front (each entry
through the chain of its kind, :mod:`vcm_eval.pipeline.chains`), the scheduler skips every task whose
outputs already exist and hands the rest to an executor. So an interrupted sweep resumes where it stopped,
the anchor's results are reused by every later proposal run at the same configuration, and the executor
(in-process, process pool, Dask) is a configuration choice that cannot change a number.

The C-layers are the bulk of the store. With ``store.keep_features=until_done`` the scheduler deletes a
picture's C-layers as soon as every task that reads them has finished, and lets only a bounded number of
pictures hold C-layers at once; a picture whose C-layers are gone while some of its work is not done gets
its extract task again. Every number is the same as with ``all``: the tasks that need the uncoded C-layers
store what they measure in their outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from vcm_eval.codecs.base import VideoCodec
from vcm_eval.data.base import DetectionDataset, ImageRecord
from vcm_eval.errors import MissingInputError, SettingError
from vcm_eval.executors.base import Executor
from vcm_eval.methods import CodingEntry
from vcm_eval.models.base import SplitModel
from vcm_eval.pipeline import tasks
from vcm_eval.pipeline.chains import ChainKeys, Identities, chain_for
from vcm_eval.pipeline.graph import Node, Obj
from vcm_eval.pipeline.records import UNCOMPRESSED, key
from vcm_eval.pipeline.results import PlannedChain, SweepResults, collect_rows
from vcm_eval.pipeline.scheduler import Scheduler, SweepError
from vcm_eval.pipeline.settings import StoreSettings
from vcm_eval.pipeline.worker import Runtime
from vcm_eval.store import Store, UnusableObjectError

T = TypeVar("T")

log = logging.getLogger("vcm_eval.pipeline")

#: how often a sweep plans itself again to recompute stored inputs it found missing or damaged while running
HEAL_PASSES = 3


@dataclass
class EntrySpec:
    """An entry and its role in the comparison (``anchor`` or ``proposal``)."""

    entry: CodingEntry
    role: str


@dataclass(frozen=True)
class PictureKeys:
    """Store keys of one picture's outputs: its C-layers, their uncoded detections, each chain's records."""

    clayers: str
    uncompressed: str
    chains: dict[tuple[str, int], ChainKeys]


class Sweep:
    """Plans and runs every task of a CTC definition on an executor.

    Args:
        dataset: the image set.
        model_cfg: resolved model config (each worker builds the model from it).
        codec: picture codec of the CTC.
        entries: anchors and proposals with their roles.
        store: content-addressed store (shared by every worker).
        executor: where tasks run.
        fail_fast: stop submitting new tasks after the first failure (default: finish all that can
            finish, then report every failure).
        progress: show a progress bar.
        store_settings: the config's ``store`` block (:class:`StoreSettings`): what is kept of the C-layers
            and how much of them each worker keeps in memory.
    """

    def __init__(self, *, dataset: DetectionDataset, model_cfg: dict, codec: VideoCodec,
                 entries: Sequence[EntrySpec], store: Store, executor: Executor, fail_fast: bool = False,
                 progress: bool = True, max_worker_restarts: int = 3, model_threads: int = 1,
                 store_settings: StoreSettings | Mapping[str, Any] | None = None) -> None:
        self.dataset = dataset
        self.settings = StoreSettings.of(store_settings)
        self.retention = self.settings.retention
        self.runtime = Runtime(store.url, model_cfg, codec, int(model_threads), self.settings.feature_memory_mb)
        self.entries = list(entries)
        self.store = store
        self.executor = executor
        self.fail_fast = fail_fast
        self.progress = progress
        self.max_worker_restarts = max_worker_restarts
        names = [spec.entry.name for spec in self.entries]
        if len(set(names)) != len(names) or UNCOMPRESSED in names:
            raise SettingError(f"entry names must be unique and not {UNCOMPRESSED!r}: {names}")
        self.chains = {spec.entry.name: chain_for(spec.entry) for spec in self.entries}
        self._images: list[tasks.ImageRef] | None = None

    # -- planning ------------------------------------------------------------------------------

    @property
    def model(self) -> SplitModel:
        return self.runtime.model

    @cached_property
    def identities(self) -> Identities:
        """The model's, its encoder side's and the codec's identities (each with what numbers depend on)."""
        return Identities(self.runtime.model_identity(), self.runtime.encoder_identity(),
                          self.runtime.coder.identity())

    def images(self) -> list[tasks.ImageRef]:
        """The dataset's pictures with content fingerprints; a missing file is an error naming it."""
        if self._images is None:
            records: list[ImageRecord] = self.dataset.records()
            if not records:
                raise SettingError(f"dataset {self.dataset.name!r} selects no images")
            refs = []
            for record in records:
                if not os.path.isfile(record.path):
                    raise MissingInputError(f"{record.path}: image {record.image_id} of dataset "
                                            f"{self.dataset.name!r} is missing; check the image folder setting")
                refs.append(tasks.ImageRef(record.image_id, str(record.path), self.dataset.fingerprint(record)))
            self._images = refs
        return self._images

    def keys(self, image: tasks.ImageRef) -> PictureKeys:
        """Store keys of every output of one image. The C-layers (and so every coded record) are keyed by the
        model's encoder side alone, every detection by the whole model: a model that differs only after the
        split (a mask branch) reuses another's C-layers and bitstreams and redoes detection."""
        ids = self.identities
        clayers = key("clayers", image.fingerprint, ids.encoder)
        chains = {(spec.entry.name, qp): self.chains[spec.entry.name].keys(image, clayers, spec.entry, qp, ids)
                  for spec in self.entries for qp in spec.entry.rate_points}
        return PictureKeys(clayers, key("det", clayers, ids.model), chains)

    def plan(self) -> list[Node]:
        """Every task of the sweep, dependencies first."""
        rt = self.runtime
        nodes: list[Node] = []
        transient = self.retention.transient
        for image in self.images():
            keys = self.keys(image)
            clayers: Obj = ("clayers", keys.clayers, ".npz")
            uncompressed: Obj = ("detections", keys.uncompressed, ".json")
            extract = Node(f"extract:{image.image_id}", f"image {image.image_id}: C-layers", tasks.extract,
                           (rt, image, keys.clayers, keys.uncompressed),
                           [uncompressed] if transient else [clayers, uncompressed],
                           transient=[clayers] if transient else [])
            nodes.append(extract)
            for spec in self.entries:
                chain = self.chains[spec.entry.name]
                for qp in spec.entry.rate_points:
                    nodes += chain.nodes(rt, image, keys.clayers, spec.entry, qp, keys.chains[(spec.entry.name, qp)],
                                         extract, clayers)
        return nodes

    # -- running -------------------------------------------------------------------------------

    def run(self) -> SweepResults:
        """Run every unfinished task, then load all results. Raises :class:`SweepError` if any failed.

        A task that met a missing or damaged stored input fails, the input is set aside, and the sweep plans
        itself again (up to :data:`HEAL_PASSES` times) to recompute it. Tasks run in this process
        (``executor=local``) pin torch's thread count; it is restored after.
        """
        import torch

        threads = torch.get_num_threads()
        scheduler = Scheduler(self.executor, _StoreBook(self.store), fail_fast=self.fail_fast,
                              progress=self.progress, max_worker_restarts=self.max_worker_restarts,
                              window=self.retention.window(self.executor.workers) if self.retention.transient
                              else None)
        try:
            return run_healing(scheduler, self.plan, self.collect)
        finally:
            torch.set_num_threads(threads)

    def usable(self, obj: Obj, checked: dict | None = None) -> bool:
        """Whether a stored output can be used as it is (:meth:`Store.check`); see :class:`_StoreBook`."""
        return _StoreBook(self.store).usable(obj, checked if checked is not None else {})

    # -- loading results -----------------------------------------------------------------------

    def collect(self, timings: dict[str, dict] | None = None) -> SweepResults:
        """Every result of the sweep from the store, as rows (:func:`~vcm_eval.pipeline.results.collect_rows`)."""
        pictures = []
        for image in self.images():
            keys = self.keys(image)
            chains = []
            for spec in self.entries:
                entry, chain = spec.entry, self.chains[spec.entry.name]
                for qp in entry.rate_points:
                    chain_keys = keys.chains[(entry.name, qp)]
                    chains.append(PlannedChain(entry.name, spec.role, qp, chain, chain_keys.coded,
                                               chain_keys.detections, chain.task_keys(image.image_id, entry, qp)))
            pictures.append((image.image_id, keys.uncompressed, f"extract:{image.image_id}", chains))
        return collect_rows(self.store, pictures, timings)


def run_healing(scheduler: Scheduler, plan: Callable[[], list[Node]], collect: Callable[[dict[str, dict]], T]) -> T:
    """Run the planned tasks, then ``collect`` the results. A task that met a missing or damaged stored input
    fails, the input is set aside, and the graph is planned again (up to :data:`HEAL_PASSES` times) to
    recompute it."""
    timings: dict[str, dict] = {}
    for attempt in range(1, HEAL_PASSES + 1):
        try:
            timings.update(scheduler.run(plan()))
            return collect(timings)
        except (SweepError, UnusableObjectError) as exc:
            healable = exc.healable if isinstance(exc, SweepError) else True
            if not healable or attempt == HEAL_PASSES:
                raise
            what = list(dict.fromkeys(exc.unusable if isinstance(exc, SweepError) else [exc.path]))
            log.warning("%d stored object(s) were missing or damaged (%s); planning the sweep again to "
                        "recompute them", len(what), ", ".join(what[:3]) + (" ..." if len(what) > 3 else ""))
    raise AssertionError("unreachable")  # pragma: no cover


class _StoreBook:
    """The store as the scheduler sees it; an unusable output is set aside (so its task runs again) and named."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url

    def usable(self, obj: Obj, checked: dict) -> bool:
        problem = self.store.check(*obj, _checked=checked)
        if problem is None:
            return True
        if self.store.exists(*obj):
            where = self.store.set_aside(*obj)
            log.warning("store: %s; %s, recomputing it", problem,
                        f"moved to {where}" if where and not where.startswith("!") else "it stays where it is")
            if where and where.startswith("!"):
                raise UnusableObjectError(f"{problem}; it could not be moved aside ({where[1:]}): delete "
                                          f"{self.store.path(*obj)} and run again to recompute it",
                                          self.store.path(*obj))
        return False

    def exists(self, obj: Obj) -> bool:
        return self.store.exists(*obj)

    def delete(self, obj: Obj) -> int:
        return self.store.delete(*obj)
