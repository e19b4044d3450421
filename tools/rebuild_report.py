#!/usr/bin/env python
"""Rebuild a run's spreadsheet, CSVs and plots from its folder or from its MLflow run, computing nothing.

    python tools/rebuild_report.py outputs/runs/2026-11-26_08-21-18            # in place
    python tools/rebuild_report.py outputs/runs/2026-11-26_08-21-18 --out /tmp/report
    python tools/rebuild_report.py --mlflow-run 3ebd89d3... --out /tmp/report [--tracking-uri sqlite:///mlflow.db]

Uses the run's per_image.csv, summary.csv and report_meta.json (all logged to MLflow as artifacts), after
checking them (vcm_eval.reporting.report.load_run_tables): a damaged or incomplete file is one line naming it
and what to do, with exit status 1, never a report with results missing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from vcm_eval.reporting.report import RERUN_FIX, ReportFilesError, load_run_tables, write_reports

NEEDED = ("per_image.csv", "summary.csv", "report_meta.json")


def fetch_mlflow_run(run_id: str, tracking_uri: str | None, into: Path) -> Path:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    for name in NEEDED:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=str(into))
        if Path(local) != into / name:
            shutil.copy(local, into / name)
    return into


def main(argv: list[str] | None = None) -> int:
    """Rebuild the report files; 0 when written, 1 with a one-line error (the file and what to do) otherwise."""
    logging.basicConfig(format="rebuild_report: %(levelname)s: %(message)s")  # warnings: an older run folder's, say
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a finished run folder")
    parser.add_argument("--mlflow-run", help="an MLflow run id of vcm_eval (the parent run of a sweep)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's, i.e. sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, help="where to write (default: the run folder itself)")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.mlflow_run is None):
        parser.error("give a run folder or --mlflow-run, not both")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = args.run_dir or fetch_mlflow_run(args.mlflow_run, args.tracking_uri, Path(tmp))
            out = args.out or args.run_dir
            if out is None:
                parser.error("--out is needed with --mlflow-run")
            per_image, summary, meta = load_run_tables(source)
            out.mkdir(parents=True, exist_ok=True)
            files, _ = write_reports(out, per_image, summary, meta)
    except ReportFilesError as exc:
        if args.mlflow_run:  # the files were downloaded to a temporary folder: name the MLflow run instead
            exc = ReportFilesError(str(exc.path).replace(str(source), f"MLflow run {args.mlflow_run}"), exc.problem,
                                   RERUN_FIX)
        print(f"rebuild_report: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"rebuild_report: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own exception types for unknown runs
        if type(exc).__module__.startswith("mlflow"):
            print(f"rebuild_report: error: MLflow: {exc}", file=sys.stderr)
            return 1
        raise
    for name, path in sorted(files.items()):
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
