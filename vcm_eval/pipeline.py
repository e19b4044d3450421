"""The sweep: every (image, entry, QP) of a CTC definition as a graph of pure, idempotent tasks.

Data flow (DESIGN.md section 3)::

    image -> model.encode -> {c2..c5}                         extract task, once per image (+ uncompressed detections)
          -> model.to_split(entry.split) -> entry.encode(QP)   code task, one coding chain per (image, entry, QP)
             -> bitstreams + side info
          -> entry.decode -> model.decode -> detections        detect task, one per reconstruction
    image -> entry.code(QP) -> decoded picture -> model.detect image task, for image-coding entries

Each task reads its inputs from, and writes its outputs to, the content-addressed :class:`Store`
under keys that hash everything the output depends on. The driver (:class:`Sweep`) plans the whole
graph up front, skips every task whose outputs already exist, and hands the rest to an executor.
So an interrupted sweep resumes where it stopped, the anchor's results are reused by every later
proposal run at the same configuration, and the executor (in-process, process pool, Dask) is a
configuration choice that cannot change a number.
Only C-layers are stored: an entry coding another split point (``split = "p"``, the P-layers) gets them
carried there by the model in its coding task (``SplitModel.to_split``, a deterministic function of the
C-layers), and the model decodes from that split.

The C-layers are the bulk of the store (float32 maps of every picture). With
``store.keep_features=until_done`` (:class:`Retention`) the driver deletes a picture's C-layers as soon
as every task that reads them has finished, and lets only a bounded number of pictures hold C-layers at
once; a picture whose C-layers are gone while some of its work is not done gets its extract task
again. Every number is the same as with ``all``: the tasks that need the uncoded C-layers (per-level
PSNR in the coding task, top-down PSNR in the detection task) store what they measure in their outputs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from vcm_eval.codecs.base import VideoCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.data.base import DetectionDataset, ImageRecord
from vcm_eval.data.images import read_image
from vcm_eval.evaluation.bitrate import bits_per_pixel, psnr_db
from vcm_eval.executors.base import Executor
from vcm_eval.features.compensation import top_down_sums
from vcm_eval.methods import CodedFeatures, CodingEntry, FeatureCodingMethod, ImageCodingMethod
from vcm_eval.models.base import SplitModel
from vcm_eval.store import Ref, Store, UnusableObjectError, canonical_json, content_key
from vcm_eval.types import Detections, SplitFeatures, SplitMeta

log = logging.getLogger(__name__)

#: pseudo-entry name of the detections on uncoded C-layers (the reference line of every plot).
UNCOMPRESSED = "uncompressed"

#: A stored object, as the store names it: ``(kind, key, suffix)``.
Obj = tuple[str, str, str]


# --------------------------------------------------------------------------- worker-side helpers


@dataclass(frozen=True)
class Runtime:
    """What a task needs to rebuild its tools in any process; small and picklable.

    Attributes:
        store_url: root of the content-addressed store (a path every worker can reach, or an fsspec URL).
        model_cfg: the resolved model config (with ``_target_``); each process builds the model once.
        codec: the picture codec (a plain object).
        model_threads: torch intra-op threads for every model pass. Float results of a convolution
            depend on how it is split across threads, so the C-layers (and with them every bit and
            mAP) would otherwise depend on which executor ran the task; every task pins this count.
        feature_memory_mb: how much of the C-layers it has read or made a worker process keeps in
            memory for the next task of the same picture (:class:`FeatureMemory`); 0 reads every time.
    """

    store_url: str
    model_cfg: dict
    codec: VideoCodec | None = None
    model_threads: int = 1
    feature_memory_mb: float = 512.0

    @property
    def store(self) -> Store:
        return _store(self.store_url)

    @property
    def model(self) -> SplitModel:
        return build_model(canonical_json(self.model_cfg))

    def task_model(self) -> SplitModel:
        """The model, with this process's torch threads pinned to ``model_threads`` (tasks use this)."""
        _pin_threads(self.model_threads)
        return self.model

    def model_identity(self) -> dict:
        """The model's identity plus the thread count its numbers depend on (part of every cache key)."""
        return {**self.model.identity(), "torch_threads": self.model_threads}

    def encoder_identity(self) -> dict:
        """The identity of the model's encoder side plus the thread count (the C-layers' cache key)."""
        return {**self.model.encoder_identity(), "torch_threads": self.model_threads}

    @property
    def coder(self) -> CachedCodec:
        if self.codec is None:
            raise RuntimeError("this sweep has no codec configured")
        return CachedCodec(self.codec, self.store)


def _pin_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@lru_cache(maxsize=4)
def _store(url: str) -> Store:
    return Store(url)


@lru_cache(maxsize=2)
def build_model(model_cfg_json: str) -> SplitModel:
    """Build (once per process) the model of a resolved config given as canonical JSON."""
    import json

    from vcm_eval.build import build

    return build(json.loads(model_cfg_json), expect=SplitModel, what="model")


@dataclass(frozen=True)
class ImageRef:
    """A picture as tasks see it: id, file path and content fingerprint."""

    image_id: str
    path: str
    fingerprint: str


def _process_cpu_s() -> float:
    """CPU seconds of this process, all its threads (living or ended), and its children that were waited for."""
    children = os.times()  # clock ticks are fine for an encoder process that ran seconds
    return time.process_time() + children.children_user + children.children_system


def _clock() -> tuple[float, float]:
    """When a task starts: wall-clock time and the CPU time of the process running it."""
    return time.time(), _process_cpu_s()


def _timing(start: tuple[float, float], memory: FeatureMemory | None = None,
            reads_before: tuple[int, int] = (0, 0)) -> dict:
    """When a task ran, where, and the CPU time it used (``cpu_s``: against the wall time it shows how much
    of a task's time went to waiting for a core another process held); with ``memory``, how many C-layer
    loads it made from the store and from the worker's memory since ``reads_before``.

    ``cpu_s`` is the whole process's CPU time while the task ran, not the calling thread's: libx265 encodes
    in a thread of its own (even with ``pools=none``) and VTM in a child process, and a worker runs one task
    at a time. In a Dask worker it includes the worker's communication thread (heartbeats, transfers)."""
    timing = {"start": start[0], "end": time.time(), "cpu_s": _process_cpu_s() - start[1],
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if memory is not None:
        timing["clayer_store_reads"] = memory.store_reads - reads_before[0]
        timing["clayer_memory_hits"] = memory.memory_hits - reads_before[1]
    return timing


def _meta_arrays(meta: SplitMeta) -> dict[str, np.ndarray]:
    return {f"meta_{k}": np.asarray(getattr(meta, k), dtype=np.int64)
            for k in ("original_size", "input_size", "padded_size")}


def clayer_arrays(features: SplitFeatures, nn_part_1_s: float) -> dict[str, np.ndarray]:
    """What the store keeps of one picture's C-layers: the maps, their geometry, the encoder-side time."""
    return {**features.layers, **_meta_arrays(features.meta), "nn_part_1_s": np.asarray(nn_part_1_s)}


def uncompressed_record(image_id: str, features: SplitFeatures, detections: Detections, nn_part_1_s: float,
                        nn_part_2_s: float) -> dict:
    """The stored result of the detector on uncoded C-layers (written by :func:`extract_task`)."""
    return {"image_id": image_id, "entry": UNCOMPRESSED, "detections": detections.to_dict(),
            "nn_part_1_s": nn_part_1_s, "nn_part_2_s": nn_part_2_s,
            "original_size": list(features.meta.original_size)}


def detection_record(image_id: str, entry_name: str, coded: CodedFeatures, detections: Detections, decode_s: float,
                     nn_part_2_s: float, topdown_psnr_db: dict[str, float]) -> dict:
    """The stored result of the receiver on one coded picture (written by :func:`detect_task`)."""
    return {"image_id": image_id, "entry": entry_name, "qp": coded.rate_point,
            "detections": detections.to_dict(), "decode_s": decode_s, "nn_part_2_s": nn_part_2_s,
            "topdown_psnr_db": topdown_psnr_db, "original_size": list(coded.meta.original_size)}


def image_record(image_id: str, entry_name: str, qp: int, detections: Detections, nn_part_2_s: float, coding: dict,
                 picture_shape: Sequence[int]) -> dict:
    """The stored result of an image-coding entry on one picture (written by :func:`image_task`)."""
    return {"image_id": image_id, "entry": entry_name, "qp": qp, "detections": detections.to_dict(),
            "nn_part_2_s": nn_part_2_s, "coding": coding,
            "original_size": [int(picture_shape[0]), int(picture_shape[1])]}


class FeatureMemory:
    """The C-layers a worker process has read or made lately, for the next task of the same picture.

    A picture's C-layers are read by every ``code`` and ``detect`` task of it (20 for two feature entries at
    five QPs), and the driver submits those tasks together, so a worker runs several of them in a row. Keeping
    the most recently used pictures (least recently used out, bounded in bytes) turns those reads into about
    one per worker and picture: for the paper's 74 MB a picture on a cluster's shared file system that is most
    of the store's read traffic. It is safe because stored objects are content-addressed: a key's arrays
    never change, and a deleted and re-made file (``keep_features=until_done``) holds the same arrays.
    Tasks get copies, so an entry that writes into its input cannot change what the next task sees.
    Thread-safe (a Dask worker may run several tasks at once; then the per-task counts are approximate).
    """

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._bytes = 0
        self.store_reads = 0
        self.memory_hits = 0

    def load(self, store: Store, key: str) -> dict[str, np.ndarray]:
        """The stored C-layer arrays of ``key`` (a copy), from memory when this process has them."""
        with self._lock:
            arrays = self._arrays.pop((store.url, key), None)
            if arrays is not None:
                self._bytes -= _nbytes(arrays)
                self.memory_hits += 1
        if arrays is None:
            arrays = store.read_arrays("clayers", key)
            with self._lock:
                self.store_reads += 1
        self._keep(store, key, arrays)
        return {name: value.copy() for name, value in arrays.items()}

    def keep(self, store: Store, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Remember a copy of ``arrays`` (just written under ``key``) as the most recently used."""
        self._keep(store, key, {name: np.array(value) for name, value in arrays.items()})

    def _keep(self, store: Store, key: str, arrays: dict[str, np.ndarray]) -> None:
        size = _nbytes(arrays)
        with self._lock:
            if size > self.max_bytes:
                return
            old = self._arrays.pop((store.url, key), None)
            self._bytes += size - (_nbytes(old) if old is not None else 0)
            self._arrays[(store.url, key)] = arrays
            self._evict()

    def resize(self, max_bytes: int) -> None:
        """A new budget; what no longer fits is dropped, least recently used first."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def _evict(self) -> None:
        while self._arrays and self._bytes > self.max_bytes:  # dicts keep insertion order: first = least recent
            self._bytes -= _nbytes(self._arrays.pop(next(iter(self._arrays))))


def _nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays.values())


#: this process's :class:`FeatureMemory` (each worker process has its own; the budget comes with each task).
_FEATURE_MEMORY = FeatureMemory()
#: what to set when ``store.feature_memory_mb`` is not a size
FEATURE_MEMORY_FIX = "use a size in MB, or 0 to read the C-layers from the store for every task"


def _feature_memory(rt: Runtime) -> FeatureMemory:
    budget = int(rt.feature_memory_mb * 2**20)
    if budget != _FEATURE_MEMORY.max_bytes:
        _FEATURE_MEMORY.resize(budget)
    return _FEATURE_MEMORY


def features_from_arrays(arrays: dict[str, np.ndarray]) -> tuple[SplitFeatures, float]:
    """The inverse of :func:`clayer_arrays`: C-layers with their geometry, and the encoder-side time."""
    meta = SplitMeta(**{k: tuple(int(v) for v in arrays.pop(f"meta_{k}"))
                        for k in ("original_size", "input_size", "padded_size")})
    nn_part_1_s = float(arrays.pop("nn_part_1_s"))
    return SplitFeatures(layers=arrays, meta=meta), nn_part_1_s


def load_features(store: Store, key: str, memory: FeatureMemory | None = None) -> tuple[SplitFeatures, float]:
    """C-layers stored by :func:`extract_task`, and the encoder-side network time that made them; through
    ``memory`` when given (a worker's recently used C-layers)."""
    arrays = memory.load(store, key) if memory is not None else store.read_arrays("clayers", key)
    return features_from_arrays(arrays)


# --------------------------------------------------------------------------- the tasks


def extract_task(rt: Runtime, image: ImageRef, clayers_key: str, detections_key: str) -> dict:
    """C-layers of one image (model encoder side) and the detections on them uncoded."""
    start = _clock()
    store, model, memory = rt.store, rt.task_model(), _feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("clayers", clayers_key, ".npz"):
        picture = read_image(image.path)
        t0 = time.perf_counter()
        features = model.encode(picture)
        nn_part_1_s = time.perf_counter() - t0
        arrays = clayer_arrays(features, nn_part_1_s)
        store.write_arrays("clayers", clayers_key, arrays)
        memory.keep(store, clayers_key, arrays)
    else:
        features, nn_part_1_s = load_features(store, clayers_key, memory)
    if not store.exists("detections", detections_key, ".json"):
        t0 = time.perf_counter()
        detections = model.decode(features)
        store.write_json("detections", detections_key, uncompressed_record(
            image.image_id, features, detections, nn_part_1_s, time.perf_counter() - t0))
    return _timing(start, memory, counters)


def code_task(rt: Runtime, image_id: str, clayers_key: str, entry: FeatureCodingMethod, qp: int,
              coded_key: str) -> dict:
    """One coding chain: every level of one image, one entry, one QP (sequential inside, for compensation)."""
    start = _clock()
    store, memory = rt.store, _feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("coded", coded_key, ".json"):
        features, _ = load_features(store, clayers_key, memory)
        features = at_split(rt, features, entry.split)
        coder = rt.coder
        coded = entry.encode(features, qp, coder, label=f"image {image_id} [{entry.name}]")
        # the record names the bitstreams it was made with: if one goes, the record is made again
        store.write_json("coded", coded_key, coded.to_dict(), refs=_unique(coder.refs))
    return _timing(start, memory, counters)


def detect_task(rt: Runtime, image_id: str, clayers_key: str, coded_key: str, entry: FeatureCodingMethod,
                detections_key: str) -> dict:
    """The receiver: decode one image's bitstreams, run the model's decoder side, and measure where
    the error is (PSNR of each top-down map against the one computed from uncoded C-layers)."""
    start = _clock()
    store, memory = rt.store, _feature_memory(rt)
    counters = (memory.store_reads, memory.memory_hits)
    if not store.exists("detections", detections_key, ".json"):
        coded_dict, coded_sha = store.read_record("coded", coded_key)
        coded = CodedFeatures.from_dict(coded_dict)
        t0 = time.perf_counter()
        reconstruction = entry.decode(coded, rt.coder, label=f"image {image_id} [{entry.name}] QP {coded.rate_point}")
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        detections = rt.task_model().decode(reconstruction)
        nn_part_2_s = time.perf_counter() - t0
        # top-down maps exist only between the C-layers and the output convolutions: entries coding a later
        # split (P-layers) have none at the receiver, and their per-level PSNR (psnr_<level>) says it all
        psnr = topdown_psnr(load_features(store, clayers_key, memory)[0], reconstruction) if entry.split == "c" else {}
        store.write_json("detections", detections_key, detection_record(
            image_id, entry.name, coded, detections, decode_s, nn_part_2_s, psnr),
            refs=[("coded", coded_key, ".json", coded_sha)])
    return _timing(start, memory, counters)


def _unique(refs: Iterable[Ref]) -> list[Ref]:
    """``refs`` without repeats, in order (a bitstream two levels share is one reference)."""
    return list(dict.fromkeys(refs))


def at_split(rt: Runtime, features: SplitFeatures, split: str) -> SplitFeatures:
    """Stored C-layers carried on to an entry's split point by the model (``SplitModel.to_split``); the model
    is built only when the split differs, so C-layer entries code without one, as before."""
    if split == "c":
        return features
    return rt.task_model().to_split(features, split)


def image_task(rt: Runtime, image: ImageRef, entry: ImageCodingMethod, qp: int, detections_key: str) -> dict:
    """Image-coding entries: code the picture, decode it, run the whole (unsplit) model on it."""
    start = _clock()
    store = rt.store
    if not store.exists("detections", detections_key, ".json"):
        picture = read_image(image.path)
        coder = rt.coder
        decoded, record = entry.code(picture, qp, coder, label=f"image {image.image_id} [{entry.name}]")
        t0 = time.perf_counter()
        detections = rt.task_model().detect(decoded)
        store.write_json("detections", detections_key, image_record(
            image.image_id, entry.name, qp, detections, time.perf_counter() - t0, record, picture.shape),
            refs=_unique(coder.refs))
    return _timing(start)


def topdown_psnr(original: SplitFeatures, reconstruction: SplitFeatures) -> dict[str, float]:
    """PSNR of each reconstructed top-down map ``T^k`` against ``Tk`` of the uncoded C-layers, with peak
    = max - min of ``Tk``: where the coding error ends up after the FPN's sums."""
    order = tuple(sorted(original.layers, reverse=True))
    reference = top_down_sums(original.layers, order)
    decoded = top_down_sums(reconstruction.layers, order)
    return {level: psnr_db(reference[level], decoded[level], float(reference[level].max() - reference[level].min()))
            for level in order}


# --------------------------------------------------------------------------- the driver


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


#: ``store.keep_features`` values. There is no ``none``: the coding and detection tasks that read a
#: picture's C-layers are separate tasks (on other workers, possibly other machines), so the C-layers
#: must be stored once; ``until_done`` already deletes them as soon as the last of those tasks is done.
KEEP_FEATURES = ("all", "until_done")

#: ``until_done`` with ``pictures_in_flight`` null lets max(2 x workers, this) pictures hold C-layers at
#: once: enough ready tasks for every worker (each picture brings one coding chain per entry and QP), also
#: where the executor cannot tell how many workers will join (dask-jobqueue scales after the start).
MIN_PICTURES_IN_FLIGHT = 64


@dataclass(frozen=True)
class Retention:
    """What the sweep keeps of the C-layers (the config's ``store`` block).

    Attributes:
        keep_features: ``all`` keeps every picture's C-layers (a later run with another entry reuses
            them); ``until_done`` deletes a picture's C-layers once every coding and detection task
            reading them has finished successfully (bitstreams, coded records and detections stay).
        pictures_in_flight: under ``until_done``, how many pictures may hold C-layers at once, which
            bounds the store's peak; None = ``max(2 x executor workers, MIN_PICTURES_IN_FLIGHT)``.
    """

    keep_features: str = "all"
    pictures_in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.keep_features not in KEEP_FEATURES:
            hint = (" ('none' is what until_done does: C-layers are written once for the tasks that read "
                    "them, and deleted when the last of them finishes)") if self.keep_features == "none" else ""
            raise ValueError(f"store.keep_features={self.keep_features!r}: use one of {list(KEEP_FEATURES)}{hint}")
        if self.pictures_in_flight is not None and int(self.pictures_in_flight) < 1:
            raise ValueError(f"store.pictures_in_flight={self.pictures_in_flight}: use a positive number or null")

    @classmethod
    def of(cls, value: Retention | Mapping[str, Any] | None) -> Retention:
        """A :class:`Retention` from the config's ``store`` block (None = keep everything)."""
        if value is None or isinstance(value, Retention):
            return value or cls()
        known = {k: value[k] for k in ("keep_features", "pictures_in_flight") if value.get(k) is not None}
        return cls(**known)

    @property
    def transient(self) -> bool:
        """True when C-layers are deleted once done with."""
        return self.keep_features != "all"

    def window(self, workers: int) -> int:
        """How many pictures may hold C-layers at once on an executor of ``workers`` workers."""
        if self.pictures_in_flight is not None:
            return int(self.pictures_in_flight)
        return max(2 * int(workers), MIN_PICTURES_IN_FLIGHT)


def finished_nodes(nodes: Sequence[Node], exists: Callable[[Obj], bool]) -> set[str]:
    """Keys of the nodes whose work is in the store.

    A node is finished when all its outputs exist and each transient output either exists or has no
    unfinished reader: deleted C-layers of a picture that is done are no work to redo, but they are
    needed again as soon as one task reading them is not done (an interrupted sweep, a new entry).
    """
    finished = {n.key for n in nodes if all(exists(o) for o in n.outputs)}
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


@dataclass
class EntrySpec:
    """An entry and its role in the comparison (``anchor`` or ``proposal``)."""

    entry: CodingEntry
    role: str


class SweepError(RuntimeError):
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


#: how often a sweep plans itself again to recompute stored inputs it found missing or damaged while running
HEAL_PASSES = 3


def unusable_cause(exc: BaseException) -> UnusableObjectError | None:
    """The missing or damaged stored object behind ``exc`` (it may be wrapped by an entry's own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UnusableObjectError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass
class SweepResults:
    """What the sweep produced, as loaded from the store.

    Attributes:
        rows: one dict per (image, entry, QP) plus one per (image, uncompressed), see :meth:`Sweep.collect`.
        detections: ``(entry, qp) -> {image_id: Detections}``; the uncompressed reference under
            ``(UNCOMPRESSED, None)``.
        timings: task key -> ``{queue_s, run_s, cpu_s, worker}`` (and the C-layer load counts) for the tasks
            run in this invocation.
        commands: entry -> the codec record and command line of one of its coded pictures (the first
            image at its first QP), so that a run says exactly what coded it.
    """

    rows: list[dict]
    detections: dict[tuple[str, int | None], dict[str, Detections]]
    timings: dict[str, dict]
    commands: dict[str, dict] = field(default_factory=dict)


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
        retention: what to keep of the C-layers (:class:`Retention`, or the config's ``store`` block).
        feature_memory_mb: C-layers each worker process keeps in memory between tasks
            (:class:`FeatureMemory`; the config's ``store.feature_memory_mb``); 0 reads them every time.
    """

    def __init__(self, *, dataset: DetectionDataset, model_cfg: dict, codec: VideoCodec,
                 entries: Sequence[EntrySpec], store: Store, executor: Executor, fail_fast: bool = False,
                 progress: bool = True, max_worker_restarts: int = 3, model_threads: int = 1,
                 retention: Retention | Mapping[str, Any] | None = None, feature_memory_mb: float = 512.0) -> None:
        self.dataset = dataset
        from vcm_eval.build import non_negative_setting  # hydra: the driver's import, not the workers'

        memory_mb = non_negative_setting(feature_memory_mb, "store.feature_memory_mb", FEATURE_MEMORY_FIX)
        self.runtime = Runtime(store.url, model_cfg, codec, int(model_threads), memory_mb)
        self.entries = list(entries)
        self.store = store
        self.executor = executor
        self.fail_fast = fail_fast
        self.progress = progress
        self.max_worker_restarts = max_worker_restarts
        self.retention = Retention.of(retention)
        names = [spec.entry.name for spec in self.entries]
        if len(set(names)) != len(names) or UNCOMPRESSED in names:
            raise ValueError(f"entry names must be unique and not {UNCOMPRESSED!r}: {names}")
        self._images: list[ImageRef] | None = None

    # -- planning ------------------------------------------------------------------------------

    @property
    def model(self) -> SplitModel:
        return self.runtime.model

    @cached_property
    def _model_id(self) -> dict:
        return self.runtime.model_identity()

    @cached_property
    def _encoder_id(self) -> dict:
        return self.runtime.encoder_identity()

    @cached_property
    def _codec_id(self) -> dict:
        return self.runtime.coder.identity()

    def images(self) -> list[ImageRef]:
        """The dataset's pictures with content fingerprints; a missing file is an error naming it."""
        if self._images is None:
            records: list[ImageRecord] = self.dataset.records()
            if not records:
                raise ValueError(f"dataset {self.dataset.name!r} selects no images")
            refs = []
            for record in records:
                if not os.path.isfile(record.path):
                    raise FileNotFoundError(f"{record.path}: image {record.image_id} of dataset "
                                            f"{self.dataset.name!r} is missing; check the image folder setting")
                refs.append(ImageRef(record.image_id, str(record.path), self.dataset.fingerprint(record)))
            self._images = refs
        return self._images

    def keys(self, image: ImageRef) -> dict[str, Any]:
        """Store keys of every output of one image, by (entry, qp). The C-layers (and so every coded record)
        are keyed by the model's encoder side alone, every detection by the whole model: a model that differs
        only after the split (a mask branch) reuses another's C-layers and bitstreams and redoes detection."""
        model_id = self._model_id
        codec_id = self._codec_id
        clayers = content_key("clayers", image.fingerprint, self._encoder_id)
        # the C-layers' key names the whole model when the encoder side is all of it (as it always was)
        uncompressed = (content_key("det", clayers) if self._encoder_id == model_id
                        else content_key("det", clayers, model_id))
        out: dict[Any, Any] = {"clayers": clayers, (UNCOMPRESSED, None): uncompressed}
        for spec in self.entries:
            entry = spec.entry
            for qp in entry.rate_points:
                if entry.input == "image":
                    out[(entry.name, qp)] = content_key("image-det", image.fingerprint, entry.identity(),
                                                        codec_id, qp, model_id)
                else:
                    coded = content_key("coded", clayers, entry.identity(), codec_id, qp)
                    out[("coded", entry.name, qp)] = coded
                    out[(entry.name, qp)] = content_key("det", coded, model_id)
        return out

    def plan(self) -> list[Node]:
        """Every task of the sweep, dependencies first."""
        rt = self.runtime
        nodes: list[Node] = []
        transient = self.retention.transient
        for image in self.images():
            keys = self.keys(image)
            clayers: Obj = ("clayers", keys["clayers"], ".npz")
            uncompressed: Obj = ("detections", keys[(UNCOMPRESSED, None)], ".json")
            extract = Node(f"extract:{image.image_id}", f"image {image.image_id}: C-layers", extract_task,
                           (rt, image, keys["clayers"], keys[(UNCOMPRESSED, None)]),
                           [uncompressed] if transient else [clayers, uncompressed],
                           transient=[clayers] if transient else [])
            nodes.append(extract)
            for spec in self.entries:
                entry = spec.entry
                for qp in entry.rate_points:
                    what = f"image {image.image_id} / {entry.name} / QP {qp}"
                    det_key = keys[(entry.name, qp)]
                    if entry.input == "image":
                        nodes.append(Node(f"image:{image.image_id}:{entry.name}:{qp}", what, image_task,
                                          (rt, image, entry, qp, det_key), [("detections", det_key, ".json")]))
                        continue
                    coded_key = keys[("coded", entry.name, qp)]
                    code = Node(f"code:{image.image_id}:{entry.name}:{qp}", f"{what}: coding", code_task,
                                (rt, image.image_id, keys["clayers"], entry, qp, coded_key),
                                [("coded", coded_key, ".json")], [extract.key], reads=[clayers])
                    # the detection task reads the C-layers too (top-down PSNR): it waits for them
                    # even when its coded record is already stored
                    detect = Node(f"detect:{image.image_id}:{entry.name}:{qp}", f"{what}: detection", detect_task,
                                  (rt, image.image_id, keys["clayers"], coded_key, entry, det_key),
                                  [("detections", det_key, ".json")], [code.key, extract.key], reads=[clayers])
                    nodes += [code, detect]
        return nodes

    # -- running -------------------------------------------------------------------------------

    def run(self) -> SweepResults:
        """Run every unfinished task, then load all results. Raises :class:`SweepError` if any failed.

        Tasks run in this process (``executor=local``) pin torch's thread count; it is restored after.
        """
        import torch

        threads = torch.get_num_threads()
        timings: dict[str, dict] = {}
        try:
            for attempt in range(1, HEAL_PASSES + 1):
                try:
                    timings.update(self._execute(self.plan()))
                    return self.collect(timings)
                except (SweepError, UnusableObjectError) as exc:
                    healable = exc.healable if isinstance(exc, SweepError) else True
                    if not healable or attempt == HEAL_PASSES:
                        raise
                    what = list(dict.fromkeys(exc.unusable if isinstance(exc, SweepError) else [exc.path]))
                    log.warning("%d stored object(s) were missing or damaged (%s); planning the sweep again to "
                                "recompute them", len(what), ", ".join(what[:3]) + (" ..." if len(what) > 3 else ""))
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            torch.set_num_threads(threads)

    def usable(self, obj: Obj, checked: dict | None = None) -> bool:
        """Whether a stored output can be used as it is (:meth:`Store.check`); an unusable one is set aside, so
        that its task runs again, and named in the log."""
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

    def _execute(self, nodes: list[Node]) -> dict[str, dict]:
        """Run the nodes whose outputs are not stored yet, each as soon as its dependencies are done.

        Bookkeeping is per event (a finished task looks at its own dependents only), so the driver's
        work grows linearly with the sweep. Returns this invocation's task timings by node key.
        """
        checked: dict = {}
        started = time.perf_counter()
        done = finished_nodes(nodes, lambda obj: self.usable(obj, checked))
        log.debug("checked %d stored objects in %.1f s", len(checked), time.perf_counter() - started)
        todo = [n for n in nodes if n.key not in done]
        timings: dict[str, dict] = {}
        tracker = None
        if self.retention.transient:
            todo_keys = {n.key for n in todo}
            self._delete(stale_transients(nodes, todo_keys), "left from an earlier run")
            tracker = TransientTracker(nodes, todo_keys, self.retention.window(self.executor.workers))
        if not todo:
            log.info("all %d tasks are already in the store %s", len(nodes), self.store.url)
            return timings
        log.info("%d of %d tasks to run (%d found in the store) on %s", len(todo), len(nodes), len(done),
                 self.executor.describe())
        dependents: dict[str, list[Node]] = {}
        unmet: dict[str, int] = {}
        for node in todo:
            unmet[node.key] = sum(d not in done for d in node.deps)
            for dep in node.deps:
                dependents.setdefault(dep, []).append(node)
        bar = _progress(len(todo), self.progress)
        in_flight: dict[Any, tuple[Node, float]] = {}
        held: list[Node] = []  # ready, but not submitted after a failure under fail_fast
        failures: list[tuple[str, str]] = []
        unusable: list[str] = []
        skipped: set[str] = set()
        restarts = 0
        deleted = 0

        def submit(node: Node) -> None:
            if self.fail_fast and failures:
                held.append(node)
            else:
                in_flight[self.executor.submit(node.fn, *node.args)] = (node, time.time())

        def skip_dependents(key: str) -> list[Node]:
            """Every node downstream of ``key`` not skipped before (a node with two paths to it, once)."""
            lost = []
            for node in dependents.get(key, []):
                if node.key not in skipped:
                    skipped.add(node.key)
                    lost += [node, *skip_dependents(node.key)]
            return lost

        def resolve(node: Node, ok: bool) -> None:
            """Delete what no unfinished task needs any more, and start the producers that may start now."""
            nonlocal deleted
            if tracker is None:
                return
            deleted += self._delete(tracker.resolve(node, ok))
            for ready in tracker.admit():
                submit(ready)

        try:
            for node in todo:
                if unmet[node.key] == 0 and not (tracker and tracker.defer(node)):
                    submit(node)
            if tracker:
                for ready in tracker.admit():
                    submit(ready)
            while in_flight:
                future = self.executor.next_done()
                if future not in in_flight:  # a stale future of a pool that was restarted
                    continue
                node, submitted = in_flight.pop(future)
                try:
                    timing = self.executor.result(future)
                except Exception as exc:  # noqa: BLE001 - every task failure is reported, none is fatal here
                    if self.executor.is_worker_loss(exc):
                        restarts += 1
                        if restarts > self.max_worker_restarts:
                            raise RuntimeError(f"worker processes died {restarts} times; giving up. Finished tasks "
                                               "are in the store; run again to resume.") from exc
                        pending = [node] + [n for n, _ in in_flight.values()]
                        log.warning("a worker process died; restarting the workers and resubmitting %d unfinished "
                                    "tasks", len(pending))
                        in_flight.clear()
                        self.executor.restart()
                        for again in pending:
                            submit(again)
                        continue
                    failures.append((node.describe, f"{type(exc).__name__}: {exc}"))
                    cause = unusable_cause(exc)
                    if cause is not None:
                        unusable.append(cause.path)
                    log.error("%s failed: %s", node.describe, exc)
                    lost = skip_dependents(node.key)
                    bar.update(1 + len(lost))
                    bar.set_postfix(failed=len(failures))
                    for gone in [node, *lost]:
                        resolve(gone, ok=False)
                    continue
                done.add(node.key)
                timings[node.key] = {"queue_s": max(0.0, timing["start"] - submitted),
                                     "run_s": timing["end"] - timing["start"], "cpu_s": timing["cpu_s"],
                                     "worker": timing["worker"],
                                     **{k: timing[k] for k in ("clayer_store_reads", "clayer_memory_hits")
                                        if k in timing}}
                bar.update(1)
                for dependent in dependents.get(node.key, []):
                    unmet[dependent.key] -= 1
                    if unmet[dependent.key] == 0 and not (tracker and tracker.defer(dependent)):
                        submit(dependent)
                resolve(node, ok=True)
        except KeyboardInterrupt as exc:
            bar.close()
            self.executor.terminate()  # before counting: what the workers finished meanwhile is in the store
            finished = finished_nodes(nodes, lambda obj: self.store.exists(*obj))
            raise SweepInterrupted(len(finished), len(nodes), self.store.url,
                                   getattr(exc, "signum", signal.SIGINT)) from exc
        bar.close()
        _log_clayer_loads(timings)
        if deleted:
            log.info("keep_features=until_done: deleted the C-layers of %d finished picture(s)", deleted)
        waiting = len(tracker.waiting) if tracker else 0  # producers never admitted (fail_fast)
        if waiting and not failures:
            raise RuntimeError(f"internal error: {waiting} picture(s) were never started; run again to resume")
        if failures:
            not_run = (len(skipped) + len(held) + waiting
                       + sum(len(dependents.get(n.key, [])) for n in [*held, *(tracker.waiting if tracker else [])]))
            raise SweepError(failures, self.store.url, not_run=not_run, unusable=unusable)
        return timings

    def _delete(self, objects: Iterable[Obj], why: str = "") -> int:
        """Delete stored objects no task needs any more; returns how many were there. A failed deletion
        is logged, not raised: it costs disk, not results."""
        count = 0
        for obj in objects:
            try:
                count += self.store.delete(*obj)
            except OSError as exc:
                log.warning("could not delete %s: %s", self.store.path(*obj), exc)
        if count and why:
            log.info("keep_features=until_done: deleted %d C-layer file(s) %s", count, why)
        return count

    # -- loading results -----------------------------------------------------------------------

    def collect(self, timings: dict[str, dict] | None = None) -> SweepResults:
        """Load every result of the sweep from the store into per-(image, entry, QP) rows.

        Row columns: ``image_id, entry, role, qp, num_bits, bpp, bits_<level>, qp_<level>`` (the QP each
        level was coded at: ``qp`` plus the entry's offset for it), ``side_info_bits,
        psnr_<level>, topdown_psnr_<level>, nn_part_1_s, encode_s, decode_s, nn_part_2_s, worker,
        from_cache`` (no encoder ran when the bitstreams were made: another entry or run had coded the
        same pictures), ``queue_s, run_s, cpu_s`` (this invocation's task timings: wall and CPU seconds, empty
        for reused results),
        ``num_detections, computed_now`` (False when the row was reused from the store as it was).
        Stage times (``encode_s``, ...) are those measured when the result was computed.
        """
        timings = timings or {}
        commands: dict[str, dict] = {}
        rows: list[dict] = []
        detections: dict[tuple[str, int | None], dict[str, Detections]] = {}
        store = self.store
        for image in self.images():
            keys = self.keys(image)
            uncompressed = store.read_json("detections", keys[(UNCOMPRESSED, None)])
            original_size = tuple(uncompressed["original_size"])
            nn_part_1_s = uncompressed["nn_part_1_s"]
            dets = Detections.from_dict(uncompressed["detections"])
            detections.setdefault((UNCOMPRESSED, None), {})[image.image_id] = dets
            rows.append({"image_id": image.image_id, "entry": UNCOMPRESSED, "role": "reference", "qp": None,
                         "width": original_size[1], "height": original_size[0], "num_bits": None, "bpp": None,
                         "nn_part_1_s": nn_part_1_s, "nn_part_2_s": uncompressed["nn_part_2_s"],
                         "num_detections": len(dets),
                         **_task_timing(timings, f"extract:{image.image_id}"),
                         "computed_now": f"extract:{image.image_id}" in timings})
            for spec in self.entries:
                entry = spec.entry
                for qp in entry.rate_points:
                    det = store.read_json("detections", keys[(entry.name, qp)])
                    dets = Detections.from_dict(det["detections"])
                    detections.setdefault((entry.name, qp), {})[image.image_id] = dets
                    row = {"image_id": image.image_id, "entry": entry.name, "role": spec.role, "qp": qp,
                           "width": original_size[1], "height": original_size[0]}
                    if entry.input == "image":
                        coding = det["coding"]
                        if entry.name not in commands:
                            commands[entry.name] = self._bitstream_record(coding["bitstream"])
                        row.update(num_bits=coding["num_bits"], bpp=bits_per_pixel(coding["num_bits"], original_size),
                                   nn_part_1_s=0.0, encode_s=coding.get("encode_s", 0.0),
                                   decode_s=coding.get("decode_s", 0.0), nn_part_2_s=det["nn_part_2_s"],
                                   from_cache=coding.get("from_cache", False), psnr_y=coding.get("psnr_y"),
                                   **_task_timing(timings, f"image:{image.image_id}:{entry.name}:{qp}"))
                    else:
                        coded = CodedFeatures.from_dict(store.read_json("coded", keys[("coded", entry.name, qp)]))
                        if entry.name not in commands:
                            first = next(iter(coded.levels.values()))
                            commands[entry.name] = self._bitstream_record(first.bitstream)
                        row.update(num_bits=coded.num_bits, bpp=bits_per_pixel(coded.num_bits, original_size))
                        for level, record in sorted(coded.levels.items()):
                            row[f"bits_{level}"] = record.num_bits
                        for level, record in sorted(coded.levels.items()):
                            row[f"qp_{level}"] = qp if record.qp is None else record.qp
                        row["side_info_bits"] = coded.side_info_bits
                        for level, record in sorted(coded.levels.items()):
                            row[f"psnr_{level}"] = record.psnr_db
                        for level, value in sorted(det["topdown_psnr_db"].items()):
                            row[f"topdown_psnr_{level}"] = value
                        code_timing = _task_timing(timings, f"code:{image.image_id}:{entry.name}:{qp}")
                        det_timing = _task_timing(timings, f"detect:{image.image_id}:{entry.name}:{qp}")
                        row.update(
                            nn_part_1_s=nn_part_1_s,
                            encode_s=sum(r.encode_s for r in coded.levels.values()),
                            decode_s=det["decode_s"], nn_part_2_s=det["nn_part_2_s"],
                            from_cache=all(r.from_cache for r in coded.levels.values()),
                            queue_s=_sum_or_none(code_timing["queue_s"], det_timing["queue_s"]),
                            run_s=_sum_or_none(code_timing["run_s"], det_timing["run_s"]),
                            cpu_s=_sum_or_none(code_timing["cpu_s"], det_timing["cpu_s"]),
                            worker=code_timing["worker"] or det_timing["worker"],
                        )
                    row["num_detections"] = len(dets)
                    row["computed_now"] = row.get("run_s") is not None
                    rows.append(row)
        return SweepResults(rows, detections, timings, commands)

    def _bitstream_record(self, key: str) -> dict:
        from vcm_eval.codecs.cache import KIND

        record = self.store.read_json(KIND, key)
        return {"codec": record.get("codec"), "command": record.get("command"), "label": record.get("label"),
                "qp": record.get("qp")}


def _log_clayer_loads(timings: Mapping[str, dict]) -> None:
    """How the tasks of this invocation got their C-layers: store reads against worker memory."""
    reads = sum(t.get("clayer_store_reads", 0) for t in timings.values())
    hits = sum(t.get("clayer_memory_hits", 0) for t in timings.values())
    if reads + hits:
        pictures = len({key.split(":")[1] for key, t in timings.items()
                        if t.get("clayer_store_reads", 0) + t.get("clayer_memory_hits", 0)})
        log.info("C-layers: %d loads by tasks of %d picture(s), %d from the store (%.1f a picture), %d from "
                 "worker memory (store.feature_memory_mb)", reads + hits, pictures, reads, reads / pictures, hits)


def _task_timing(timings: dict[str, dict], key: str) -> dict:
    t = timings.get(key)
    return {"queue_s": t["queue_s"] if t else None, "run_s": t["run_s"] if t else None,
            "cpu_s": t["cpu_s"] if t else None, "worker": t["worker"] if t else None}


def _sum_or_none(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return None
    return (a or 0.0) + (b or 0.0)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tasks", unit="task", disable=not enabled, dynamic_ncols=True)
