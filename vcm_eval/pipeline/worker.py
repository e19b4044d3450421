"""What a task needs in a worker process: the runtime (store, model, codec, threads), the C-layers the
worker keeps between tasks of a picture, and the task's timing.

Everything here lives once per process (``lru_cache``, one :class:`FeatureMemory`): a task is a pure
function of its arguments, and rebuilding a model or re-reading C-layers for each one would cost more than
many tasks do.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vcm_eval.codecs.base import VideoCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.models.base import SplitModel
from vcm_eval.pipeline.records import features_from_arrays
from vcm_eval.store import Store, canonical_json
from vcm_eval.types import SplitFeatures


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


def _process_cpu_s() -> float:
    """CPU seconds of this process, all its threads (living or ended), and its children that were waited for."""
    children = os.times()  # clock ticks are fine for an encoder process that ran seconds
    return time.process_time() + children.children_user + children.children_system


def task_clock() -> tuple[float, float]:
    """When a task starts: wall-clock time and the CPU time of the process running it."""
    return time.time(), _process_cpu_s()


def task_timing(start: tuple[float, float], memory: FeatureMemory | None = None,
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
def feature_memory(rt: Runtime) -> FeatureMemory:
    """This process's :class:`FeatureMemory`, with the budget of ``rt`` (each task brings it)."""
    budget = int(rt.feature_memory_mb * 2**20)
    if budget != _FEATURE_MEMORY.max_bytes:
        _FEATURE_MEMORY.resize(budget)
    return _FEATURE_MEMORY


def load_features(store: Store, key: str, memory: FeatureMemory | None = None) -> tuple[SplitFeatures, float]:
    """C-layers stored by the extract task, and the encoder-side network time that made them; through
    ``memory`` when given (a worker's recently used C-layers)."""
    arrays = memory.load(store, key) if memory is not None else store.read_arrays("clayers", key)
    return features_from_arrays(arrays)
