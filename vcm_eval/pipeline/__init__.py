"""The sweep, as a package of one-job modules.

=================  ======================================================================================
module             job
=================  ======================================================================================
``sweep``          :class:`Sweep`: plan every task of a CTC definition, run it, heal, load the results
``chains``         how each kind of entry becomes tasks and store keys (features, pictures)
``tasks``          the task bodies: extract, code and detect features, code a picture
``records``        what is stored, one schema per kind, and the versioned store keys
``worker``         a worker process's runtime, C-layer memory and task timing
``graph``          nodes, finished and transient bookkeeping (C-layer retention)
``scheduler``      run any graph on an executor: retries, fail-fast, progress, deletion, interrupts
``results``        the rows of a sweep, through the coded-result contract
``settings``       the config's ``store`` block, validated once
=================  ======================================================================================
"""

from vcm_eval.pipeline.graph import Node, Obj, TransientTracker, finished_nodes, stale_transients
from vcm_eval.pipeline.records import SCHEMA, UNCOMPRESSED
from vcm_eval.pipeline.results import SweepResults
from vcm_eval.pipeline.scheduler import Scheduler, SweepError, SweepInterrupted, unusable_cause
from vcm_eval.pipeline.settings import KEEP_FEATURES, MIN_PICTURES_IN_FLIGHT, Retention, StoreSettings
from vcm_eval.pipeline.sweep import HEAL_PASSES, EntrySpec, Sweep
from vcm_eval.pipeline.worker import FeatureMemory, Runtime, build_model

__all__ = [
    "HEAL_PASSES", "KEEP_FEATURES", "MIN_PICTURES_IN_FLIGHT", "SCHEMA", "UNCOMPRESSED", "EntrySpec",
    "FeatureMemory", "Node", "Obj", "Retention", "Runtime", "Scheduler", "StoreSettings", "Sweep", "SweepError",
    "SweepInterrupted", "SweepResults", "TransientTracker", "build_model", "finished_nodes", "stale_transients",
    "unusable_cause",
]
