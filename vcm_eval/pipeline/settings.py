"""The config's ``store`` block, checked once: what the sweep keeps of the C-layers, and what it caches.

Every reader of the block (the driver, the CLI's housekeeping, ``tools/plan_sweep.py``, the config check
before any work) goes through :class:`StoreSettings`, so a wrong value is the same one line wherever it
is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vcm_eval.errors import SettingError, non_negative_setting

#: ``store.keep_features`` values. There is no ``none``: the coding and detection tasks that read a
#: picture's C-layers are separate tasks (on other workers, possibly other machines), so the C-layers
#: must be stored once; ``until_done`` already deletes them as soon as the last of those tasks is done.
KEEP_FEATURES = ("all", "until_done")

#: ``until_done`` with ``pictures_in_flight`` null lets max(2 x workers, this) pictures hold C-layers at
#: once: enough ready tasks for every worker (each picture brings one coding chain per entry and QP), also
#: where the executor cannot tell how many workers will join (dask-jobqueue scales after the start).
MIN_PICTURES_IN_FLIGHT = 64

#: what to set when ``store.feature_memory_mb`` is not a size
FEATURE_MEMORY_FIX = "use a size in MB, or 0 to read the C-layers from the store for every task"
#: what to set when ``store.stale_temporaries_s`` is not an age
STALE_TEMPORARIES_FIX = ("use an age in seconds (3600 is safe while other runs write into the same store), "
                         "or null to leave unfinished writes' files alone")


@dataclass(frozen=True)
class Retention:
    """What the sweep keeps of the C-layers.

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
            raise SettingError(f"store.keep_features={self.keep_features!r}: use one of {list(KEEP_FEATURES)}{hint}")
        value = self.pictures_in_flight
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SettingError(f"store.pictures_in_flight={value!r}: use a whole number of pictures >= 1, or null")

    @classmethod
    def of(cls, value: Retention | Mapping[str, Any] | None) -> Retention:
        """A :class:`Retention` from the config's ``store`` block (None = keep everything)."""
        if value is None or isinstance(value, Retention):
            return value or cls()
        return StoreSettings.of(value).retention

    @property
    def transient(self) -> bool:
        """True when C-layers are deleted once done with."""
        return self.keep_features != "all"

    def window(self, workers: int) -> int:
        """How many pictures may hold C-layers at once on an executor of ``workers`` workers."""
        if self.pictures_in_flight is not None:
            return int(self.pictures_in_flight)
        return max(2 * int(workers), MIN_PICTURES_IN_FLIGHT)


@dataclass(frozen=True)
class StoreSettings:
    """The config's ``store`` block, validated.

    Attributes:
        retention: what is kept of the C-layers (``keep_features``, ``pictures_in_flight``).
        feature_memory_mb: C-layers each worker process keeps in memory between tasks; 0 reads them every time.
        stale_temporaries_s: age after which the temporaries of writes that never finished are removed after a
            sweep; None leaves them.
    """

    retention: Retention = Retention()
    feature_memory_mb: float = 512.0
    stale_temporaries_s: float | None = 3600.0

    @classmethod
    def of(cls, block: StoreSettings | Mapping[str, Any] | None) -> StoreSettings:
        """Settings from the config's ``store`` block (missing keys take their defaults).

        Raises:
            SettingError: one line naming the key, its value and what to set instead.
        """
        if isinstance(block, StoreSettings):
            return block
        block = block or {}
        keep = block.get("keep_features")
        retention = Retention("all" if keep is None else str(keep), block.get("pictures_in_flight"))
        memory = block.get("feature_memory_mb")
        stale = block.get("stale_temporaries_s", cls.stale_temporaries_s)
        return cls(
            retention=retention,
            feature_memory_mb=(cls.feature_memory_mb if memory is None
                               else non_negative_setting(memory, "store.feature_memory_mb", FEATURE_MEMORY_FIX)),
            stale_temporaries_s=(None if stale is None
                                 else non_negative_setting(stale, "store.stale_temporaries_s", STALE_TEMPORARIES_FIX)))

    @property
    def feature_memory_bytes(self) -> int:
        return int(self.feature_memory_mb * 2**20)
