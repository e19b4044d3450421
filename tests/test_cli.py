"""``python -m vcm_eval`` as a user runs it (a subprocess): how a user error reaches the console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_user_error_is_printed_once_and_kept_in_the_log_file(tmp_path):
    # a missing VTM build: a user error found before any data set is generated or picture coded
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VTM_", "MLFLOW_"))}
    run_dir = tmp_path / "run"
    missing = tmp_path / "no-vtm-here"
    proc = subprocess.run(
        [sys.executable, "-m", "vcm_eval", "codec=vtm", f"codec.vtm_dir={missing}", "codec.encoder_path=null",
         "codec.decoder_path=null", "tracking=none", "progress=false", f"paths.output_root={tmp_path}/out",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    console = proc.stdout + proc.stderr
    assert console.count(str(missing)) == 1, console
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vcm_eval: error: vtm:") and str(missing) in lines[0], proc.stderr
    assert "Traceback" not in console
    # the run's log file keeps it too, once
    logs = list(run_dir.glob("*.log"))
    assert logs and sum(log.read_text().count(str(missing)) for log in logs) == 1
    assert not (tmp_path / "out" / "data").exists()  # failed before generating the data set
