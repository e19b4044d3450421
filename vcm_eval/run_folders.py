"""Run folders that belong to one run each: ``outputs/runs/<date>_<time>`` made with ``mkdir``, never reused.

Hydra names a run's folder after the second it started, so two runs started in the same second (two
terminals, a job array, a script looping over settings) would write into one folder and overwrite each other's
files. The ``vcm_eval.unique_dir`` resolver used by ``hydra.run.dir`` and ``hydra.sweep.dir`` in
``conf/config.yaml`` creates the folder itself, atomically (``os.mkdir`` fails if the name exists), and takes
the next free suffix (``_1``, ``_2``, ...) when another run was first. OmegaConf caches the value per config,
and Hydra hands that cache to every job of a multirun, so all of a run's jobs see the one folder.
"""

from __future__ import annotations

import os


def unique_dir(base: str) -> str:
    """Create and return ``base``, or ``base_<n>`` for the smallest n >= 1 free, atomically.

    Raises:
        OSError: the parent folder cannot be created or written (naming it).
    """
    parent = os.path.dirname(os.path.abspath(base))
    os.makedirs(parent, exist_ok=True)
    candidate, n = base, 0
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{base}_{n}"
