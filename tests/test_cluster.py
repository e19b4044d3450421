"""The Slurm job script that executor=slurm submits renders without Slurm, and docs/cluster.md shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> str:
    pytest.importorskip("dask_jobqueue")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "render_job_script.py"),
                          "executor.jobqueue.account=vcm", "executor.jobqueue.queue=batch",
                          "paths.output_root=/shared/vcm"], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_job_script_follows_the_config(script):
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -J vcm-eval", "#SBATCH -A vcm", "#SBATCH -p batch", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --mem=6G", "#SBATCH -t 24:00:00", "#SBATCH -o /shared/vcm/dask-logs/vcm-eval-%J.out"):
        assert line in script.splitlines(), line
    assert re.search(r"-m distributed\.cli\.dask_worker tcp://\S+ .*--nthreads 1", script)


def test_docs_show_the_rendered_script(script):
    docs = (REPO / "docs" / "cluster.md").read_text()
    rendered = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    documented = [ln.strip() for ln in docs.splitlines() if ln.strip().startswith("#SBATCH")]
    assert documented == rendered, "docs/cluster.md is out of date: paste tools/render_job_script.py's output"


def test_executor_without_jobqueue_is_refused():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "render_job_script.py"), "executor=dask"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "no jobqueue block" in out.stderr
