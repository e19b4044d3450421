"""``python -m vcm_eval``: compose the configuration, run the sweep, write and log the results.

No numerics here: the sweep is :mod:`vcm_eval.pipeline`, scoring is :mod:`vcm_eval.evaluation`,
the files are :mod:`vcm_eval.reporting`.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import vcm_eval
from vcm_eval.build import build, non_negative_setting
from vcm_eval.codecs.base import CodecError, VideoCodec
from vcm_eval.config_checks import check_config, check_rate_points
from vcm_eval.data.base import DetectionDataset, check_task
from vcm_eval.data.images import ImageReadError
from vcm_eval.evaluation.summary import format_bd, summarize
from vcm_eval.executors.base import Executor
from vcm_eval.methods import CodingEntry
from vcm_eval.models.base import WeightsError
from vcm_eval.pipeline import EntrySpec, Sweep, SweepError, SweepInterrupted
from vcm_eval.reporting.report import METRIC_LABELS, ReportMeta, metric_columns, write_reports
from vcm_eval.run_folders import register_resolvers
from vcm_eval.store import Store, StoreError

log = logging.getLogger("vcm_eval")

register_resolvers()  # conf/config.yaml names run folders with ${vcm_eval.unique_dir:...}

#: conf/ at the top of the checkout (an absolute path: `python -m` would make Hydra read a relative one
#: as a package path).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

#: errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (SweepError, CodecError, WeightsError, ImageReadError, StoreError, FileNotFoundError, ValueError,
               TypeError)


class ReportWriteError(OSError):
    """A result file of the run could not be written (a full disk, a read-only folder); names the path."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's cancel, ``kill``): handled as Ctrl-C is, with the exit status 128 + 15."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@dataclass
class RunOutcome:
    """What one invocation produced."""

    out_dir: Path
    summary: pd.DataFrame
    bd: pd.DataFrame
    per_image: pd.DataFrame
    files: dict[str, Path]
    mlflow_run_id: str | None


def build_entries(cfg: DictConfig) -> list[EntrySpec]:
    """Instantiate every anchor and proposal of the config (each group option nests its body under its name)."""
    specs = []
    for role, group in (("anchor", cfg.get("anchor")), ("proposal", cfg.get("proposal"))):
        for key, node in (group or {}).items():
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            if target is None:
                raise ValueError(f"{role} option {key!r} has no _target_; nest its settings under its name "
                                 f"(see conf/{role}/)")
            entry = build(node, expect=CodingEntry, what=f"{role} {key!r} (subclass FeatureCodingMethod or "
                                                        "ImageCodingMethod from vcm_eval.methods)")
            specs.append(EntrySpec(entry, role))
    if not any(spec.role == "anchor" for spec in specs):
        raise ValueError("no anchor selected; BD-rate needs one (e.g. anchor=c_layer)")
    return specs


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists as JSON), for MLflow params and the config sheet."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = json.dumps(d) if isinstance(d, list) else str(d)
    return out


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_dataset_task(cfg: DictConfig, dataset: DetectionDataset) -> str:
    """The CTC's task (``ctc.task``, default detection), after checking the data set scores it.

    Raises:
        ValueError: an unknown task, or a data set that scores another one (segmentation is scored on COCO-format
            sets, the synthetic one included; Open Images segmentation is not implemented).
    """
    task = check_task(str(cfg.ctc.get("task") or "detection"))
    if dataset.task != task:
        raise ValueError(f"ctc.task={task}, but the data set {dataset.name!r} ({type(dataset).__name__}) scores "
                         f"{dataset.task}; segmentation is scored on COCO-format sets (dataset=synthetic or coco, "
                         "whose task follows ctc.task)")
    return task


def stale_temporaries_age(cfg: DictConfig) -> float | None:
    """``store.stale_temporaries_s`` as seconds (None: keep temporaries); a bad value is a one-line error."""
    value = cfg.store.get("stale_temporaries_s")
    if value is None:
        return None
    return non_negative_setting(value, "store.stale_temporaries_s",
                                "use an age in seconds (3600 is safe while other runs write into the same store), "
                                "or null to leave unfinished writes' files alone")


def run(cfg: DictConfig, out_dir: Path) -> RunOutcome:
    """One sweep of the configured CTC, then every result file; returns what was produced."""
    started = time.perf_counter()
    started_ms = int(time.time() * 1000)  # wall clock, for the MLflow run's start
    check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.paths.store)
    stale_age = stale_temporaries_age(cfg)
    codec = build(cfg.codec, expect=VideoCodec, what="codec")
    codec.check_available()  # before the data set, which may generate pictures: a missing codec stops at once
    entries = build_entries(cfg)
    check_rate_points([spec.entry for spec in entries], codec)
    dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
    task = check_dataset_task(cfg, dataset)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    sweep_started = time.perf_counter()
    executor = build(cfg.executor, expect=Executor, what="executor")
    with executor:
        sweep = Sweep(dataset=dataset, model_cfg=model_cfg, codec=codec, entries=entries, store=store,
                      executor=executor, fail_fast=bool(cfg.fail_fast), progress=bool(cfg.progress),
                      model_threads=int(cfg.model_threads),
                      retention=cfg.get("store"),
                      feature_memory_mb=cfg.store.feature_memory_mb)
        model = sweep.model
        images = sweep.images()
        log.info("CTC %s: %d images of %s, model %s, codec %s, entries %s, QPs %s; store %s",
                 cfg.ctc.name, len(images), dataset.name, model.name, codec.name,
                 ", ".join(f"{s.entry.name} ({s.role})" for s in entries),
                 {s.entry.name: s.entry.rate_points for s in entries}, store.url)
        results = sweep.run()
    sweep_s = time.perf_counter() - sweep_started
    if stale_age is not None:
        try:
            files, size = store.remove_stale_temporaries(stale_age)
        except OSError as exc:  # housekeeping: never worth losing the finished sweep's report over
            log.warning("store: could not look for temporaries of unfinished writes (%s); results are unaffected", exc)
        else:
            if files:
                log.info("store: removed %d temporary file(s) of writes that never finished (%.1f MB)", files,
                         size / 1e6)
    per_image = pd.DataFrame(results.rows)
    evaluator = dataset.make_evaluator(model.class_names)
    summary = summarize(per_image, results.detections, evaluator)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    provenance = {
        "vcm_eval": vcm_eval.__version__, "git": _git_sha(), "python": platform.python_version(),
        "host": platform.node(), "codec": sweep.runtime.coder.identity(), "model": model.identity(),
        "dataset": dataset.identity(), "executor": executor.describe(), "store": store.url,
        "codec_commands": results.commands,
        "sweep_s": sweep_s,  # executor start-up, every task, loading the results
        "wall_s": time.perf_counter() - started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    finished_ms = started_ms + int(round(provenance["wall_s"] * 1000))
    config_flat = flatten(resolved)
    config_flat.update({f"provenance.{k}": json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                        for k, v in provenance.items()})
    anchors = [s.entry.name for s in entries if s.role == "anchor"]
    meta = ReportMeta(ctc=str(cfg.ctc.name), dataset=dataset.name, model=model.name, codec=codec.name,
                      metric=evaluator.headline, anchors=anchors, entries=[s.entry.name for s in entries],
                      bd_min_points=int(cfg.bd.min_points), bd_min_overlap=float(cfg.bd.min_overlap),
                      bd_saturation_tolerance=float(cfg.bd.get("saturation_tolerance", 0.0)),
                      finished=provenance["finished"], config=config_flat)
    try:
        (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        files, bd = write_reports(out_dir, per_image, summary, meta)
        files["provenance"] = out_dir / "provenance.json"
        files["provenance"].write_text(json.dumps(provenance, indent=1, default=str))
    except OSError as exc:
        where = exc.filename or out_dir
        raise ReportWriteError(
            f"{where}: cannot write the run's result files ({exc.strerror or exc}); the sweep's results are "
            f"complete in the store {store.url}: free space (or choose paths.output_root elsewhere) and run the same "
            "command again, which recomputes nothing, or rebuild this folder with "
            f"`python tools/rebuild_report.py {out_dir}` once its CSVs are written") from exc
    files["resolved_config"] = out_dir / "resolved_config.yaml"
    metric = evaluator.headline
    columns = metric_columns(summary)

    run_id = None
    if cfg.tracking.get("enabled", False):
        from vcm_eval.reporting.mlflow_sink import parent_run_name, run_tags

        tags = run_tags(provenance, codec=codec.name, model=model.name, dataset=dataset.name, ctc=str(cfg.ctc.name),
                        task=task)
        run_id = track(cfg, run_name=parent_run_name(meta.entries, meta.ctc), params=config_flat, tags=tags,
                       summary=summary, bd=bd, metric_columns=columns, artifact_dir=out_dir,
                       start_time_ms=started_ms, end_time_ms=finished_ms)
    outcome = RunOutcome(out_dir, summary, bd, per_image, files, run_id)
    print_report(outcome, metric, cfg)
    warning = sweep.runtime.coder.identity().get("version_warning")
    if warning:
        print(f"WARNING: {warning} (recorded in provenance.json and the config sheet)", flush=True)
    return outcome


def track(cfg: DictConfig, **run: Any) -> str | None:
    """Log the run to the configured MLflow store; returns its id, or None (with a one-line warning) when the
    tracking store fails: the run's files are written by then and stay the result of record."""
    from vcm_eval.reporting.mlflow_sink import log_run

    uri = str(cfg.tracking.tracking_uri)
    try:
        return log_run(tracking_uri=uri, experiment=str(cfg.tracking.experiment),
                       artifact_location=cfg.tracking.get("artifact_location"), **run)
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and alembic raise their own types
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        message = (f"MLflow tracking failed for {uri} ({type(exc).__name__}: {first}); the run's files in "
                   f"{run['artifact_dir']} are complete. Log them later with `python tools/log_run.py "
                   f"{run['artifact_dir']}`, or run with tracking=none")
        log.warning("%s", message)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
        return None


def print_report(outcome: RunOutcome, metric: str, cfg: DictConfig) -> None:
    """The run summary on stdout: R-P table, BD table, where the files are."""
    summary, bd = outcome.summary, outcome.bd
    label = METRIC_LABELS.get(metric, metric)
    lines = ["", f"=== results ({label}, bpp = bits / original pixels) ==="]
    for entry, rows in summary.groupby("entry", sort=False):
        if rows["qp"].isna().all():
            lines.append(f"{entry:>14}: {label} {rows[metric].iloc[0] * 100:.2f}")
            continue
        cells = "  ".join(f"QP{int(r.qp)}: {r.avg_bpp:.4f} bpp / {getattr(r, metric) * 100:.2f}"
                          for r in rows.sort_values("qp").itertuples())
        lines.append(f"{entry:>14}: {cells}")
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
    except USER_ERRORS + (ReportWriteError,) as exc:
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
