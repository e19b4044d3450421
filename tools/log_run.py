#!/usr/bin/env python
"""Log a finished run folder to MLflow, as the run itself would have: after its tracking store failed, or into
another store (a shared tracking server).

    python tools/log_run.py outputs/runs/2026-12-07_14-02-11        # into the store the run was configured with
    python tools/log_run.py outputs/runs/2026-12-07_14-02-11 --tracking-uri http://mlflow.example:5000

Reads the run's per_image.csv, summary.csv and report_meta.json (checked as tools/rebuild_report.py checks them),
provenance.json and resolved_config.yaml; computes nothing. The parent run gets the sweep's own start and end
times, so MLflow shows when it ran, not when it was logged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import yaml

from vcm_eval.reporting.mlflow_sink import log_run, parent_run_name, run_tags
from vcm_eval.reporting.report import ReportFilesError, load_run_tables, metric_columns, run_bd


def _read(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ReportFilesError(path, f"cannot read the run's {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ReportFilesError(path, f"the run's {what} is not a mapping")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the run's tracking.tracking_uri)")
    parser.add_argument("--experiment", help="experiment name (default: the run's tracking.experiment)")
    args = parser.parse_args(argv)
    try:
        per_image, summary, meta = load_run_tables(args.run_dir)
        provenance = _read(args.run_dir / "provenance.json", "provenance")
        config = _read(args.run_dir / "resolved_config.yaml", "configuration")
    except ReportFilesError as exc:
        print(f"log_run: error: {exc}", file=sys.stderr)
        return 1
    tracking = config.get("tracking") or {}
    uri = args.tracking_uri or tracking.get("tracking_uri") or "sqlite:///mlflow.db"
    finished = datetime.datetime.fromisoformat(meta.finished).timestamp()
    wall_s = float(provenance.get("wall_s", 0.0))
    task = str((config.get("ctc") or {}).get("task") or "detection")
    experiment = args.experiment or str(tracking.get("experiment") or f"vcm_eval-{meta.ctc}")
    try:
        run_id = log_run(tracking_uri=uri, experiment=experiment,
                         run_name=parent_run_name(meta.entries, meta.ctc),
                         params=meta.config, tags=run_tags(provenance, codec=meta.codec, model=meta.model,
                                                           dataset=meta.dataset, ctc=meta.ctc, task=task),
                         summary=summary, bd=run_bd(summary, meta), metric_columns=metric_columns(summary),
                         artifact_dir=args.run_dir, artifact_location=tracking.get("artifact_location"),
                         start_time_ms=int((finished - wall_s) * 1000), end_time_ms=int(finished * 1000))
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and alembic raise their own types
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"log_run: error: MLflow store {uri}: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    print(f"MLflow run {run_id} in {uri} (open with: mlflow ui --backend-store-uri {uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
