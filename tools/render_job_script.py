#!/usr/bin/env python
"""Print the batch job script that executor=slurm (or any dask-jobqueue block) would submit.

    python tools/render_job_script.py                                  # conf/executor/slurm.yaml
    python tools/render_job_script.py executor.jobqueue.queue=long executor.jobqueue.memory=12GB

Arguments are Hydra overrides, as for ``python -m vcm_eval``; nothing is submitted.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.executors.dask import render_job_script


def main(argv: list[str]) -> int:
    overrides = argv if any(a.startswith("executor=") for a in argv) else ["executor=slurm", *argv]
    cfg = vcm_eval.compose(*overrides)
    jobqueue = OmegaConf.to_container(cfg.executor, resolve=True).get("jobqueue")
    if not jobqueue:
        print("render_job_script: this executor has no jobqueue block (use executor=slurm or set "
              "executor.jobqueue)", file=sys.stderr)
        return 1
    print(render_job_script(jobqueue))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
