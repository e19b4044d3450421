"""``python -m vcm_eval``: Hydra composes the configuration, :func:`vcm_eval.api.run` runs it; this module
prints the summary and warnings and turns errors and signals into exit codes (1 for a :class:`UserError`,
128 + the signal for Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vcm_eval.api import CONFIG_DIR, ReportWriteError, Results, build_entries, check_dataset_task, flatten
from vcm_eval.api import run as api_run
from vcm_eval.errors import UserError
from vcm_eval.evaluation.summary import format_bd
from vcm_eval.pipeline import SweepInterrupted
from vcm_eval.pipeline.scheduler import request_stop
from vcm_eval.reporting.report import METRIC_LABELS

__all__ = ["CONFIG_DIR", "USER_ERRORS", "ReportWriteError", "Results", "build_entries", "check_dataset_task",
           "flatten", "main", "print_report", "run"]

log = logging.getLogger("vcm_eval")

#: errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError,)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's cancel, ``kill``): handled as Ctrl-C is, with the exit status 128 + 15."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: object) -> None:
    stop = Terminated()
    request_stop(stop)  # seen by the scheduler even if a destructor running now swallows the exception
    raise stop


def run(cfg: DictConfig, out_dir: Path | None = None) -> Results:
    """:func:`vcm_eval.api.run`, then the summary and every warning printed, as ``python -m vcm_eval`` shows them."""
    outcome = api_run(cfg, out_dir)
    print_report(outcome, outcome.metric, cfg)
    for warning in outcome.warnings:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return outcome


def print_report(outcome: Results, metric: str, cfg: DictConfig) -> None:
    """The run summary on stdout: R-P table, BD table, where the files are."""
    summary, bd = outcome.summary, outcome.bd
    label = METRIC_LABELS.get(metric, metric)
    if "sequence" in summary.columns:
        lines = _sequence_lines(summary, bd, metric, label)
        summary, bd = summary.iloc[0:0], bd.iloc[0:0]
    else:
        lines = ["", f"=== results ({label}, bpp = bits / original pixels) ==="]
        lines += _entry_lines(summary, metric, label, lambda r: f"{r.avg_bpp:.4f} bpp", 14)
    if len(bd):
        lines.append("=== BD (pchip; cubic in brackets) ===")
        for r in bd.itertuples():
            text = (f"{r.test} vs {r.anchor}: BD-rate {format_bd(r.bd_rate_pchip, '%')} "
                    f"[{format_bd(r.bd_rate_cubic, '%')}], BD-{label} {format_bd(r.bd_map_pchip, ' pt')} "
                    f"[{format_bd(r.bd_map_cubic, ' pt')}]")
            if r.reason:
                text += f"  -- {r.reason}"
            lines.append(text)
    lines.append(f"files: {outcome.out_dir}")
    for name in ("xlsx", "summary", "per_image", "rd_plot", "rate_split"):
        if name in outcome.files:
            lines.append(f"  {name}: {outcome.files[name]}")
    if outcome.mlflow_run_id:
        lines.append(f"MLflow run {outcome.mlflow_run_id} in {cfg.tracking.tracking_uri} "
                     f"(open with: mlflow ui --backend-store-uri {cfg.tracking.tracking_uri})")
    print("\n".join(lines), flush=True)


def _entry_lines(summary, metric: str, label: str, rate: Callable[[Any], str], width: int) -> list[str]:
    """One line per entry: the reference's metric, or ``QP<n>: <rate> / <metric>`` for each rate point."""
    lines = []
    for entry, rows in summary.groupby("entry", sort=False):
        if rows["qp"].isna().all():
            lines.append(f"{entry:>{width}}: {label} {rows[metric].iloc[0] * 100:.2f}")
            continue
        cells = "  ".join(f"QP{int(r.qp)}: {rate(r)} / {getattr(r, metric) * 100:.2f}"
                          for r in rows.sort_values("qp").itertuples())
        lines.append(f"{entry:>{width}}: {cells}")
    return lines


def _sequence_lines(summary, bd, metric: str, label: str) -> list[str]:
    """A video CTC's summary: per sequence, each entry's kbps and metric by QP; BD-rate per class."""
    lines = ["", f"=== results per sequence ({label}, rate in kbps at the sequence's frame rate) ==="]
    for (seq_class, sequence), part in summary.groupby(["seq_class", "sequence"], sort=False):
        lines.append(f"{sequence} ({seq_class}):")
        lines += _entry_lines(part, metric, label, lambda r: f"{r.kbps:.1f} kbps", 16)
    if len(bd):
        lines.append("=== BD-rate per class (pchip; the mean of the class's sequences, bd.csv has each) ===")
        for r in bd[bd["scope"] == "class"].itertuples():
            lines.append(f"{r.seq_class}: {r.test} vs {r.anchor}: BD-rate {format_bd(r.bd_rate_pchip, '%')}, "
                         f"BD-{label} {format_bd(r.bd_map_pchip, ' pt')} ({r.sequences} sequences)")
    return lines


def _log_to_files_only(level: int, msg: str, *args: object) -> None:
    """Log through ``vcm_eval``'s logger to the file handlers alone (Hydra's ``<job>.log`` in the run folder),
    not to the console handler: the console gets the message once, from :func:`main`'s own print."""
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(log.name, level, __file__, 0, msg, args, None)
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run(cfg, out_dir)
    except USER_ERRORS as exc:
        _log_to_files_only(logging.ERROR, "%s", exc)
        print(f"\nvcm_eval: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        kept = (str(exc) if isinstance(exc, SweepInterrupted)
                else f"finished work is kept in the store {cfg.paths.store}")
        message = f"vcm_eval: {how}; {kept}; run the same command to resume"
        _log_to_files_only(logging.ERROR, "%s", message)
        print(f"\n{message}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
