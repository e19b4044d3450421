"""The library API: compose a configuration, run it, get the results, as ``python -m vcm_eval`` does.

    import vcm_eval

    cfg = vcm_eval.compose("proposal=compensation", "ctc.num_images=10")
    results = vcm_eval.run(cfg)                  # the sweep, then the run folder's files
    results.summary, results.bd, results.out_dir

No numerics here: the sweep is :mod:`vcm_eval.pipeline`, scoring is :mod:`vcm_eval.evaluation`, the files
are :mod:`vcm_eval.reporting`. Nothing is printed: :mod:`vcm_eval.cli` prints and sets exit codes.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

import vcm_eval
from vcm_eval.build import build
from vcm_eval.codecs.base import VideoCodec
from vcm_eval.config_checks import check_config, check_rate_points
from vcm_eval.data.base import DetectionDataset, check_task
from vcm_eval.data.sequences import SequenceDataset
from vcm_eval.errors import SettingError, UserError
from vcm_eval.evaluation.summary import summarize
from vcm_eval.executors.base import Executor
from vcm_eval.methods import CodingEntry
from vcm_eval.pipeline import EntrySpec, Sweep, SweepResults
from vcm_eval.pipeline.settings import StoreSettings
from vcm_eval.reporting.report import ReportMeta, metric_columns, write_reports
from vcm_eval.resolvers import register_resolvers
from vcm_eval.run_folders import unique_dir
from vcm_eval.store import Store

log = logging.getLogger("vcm_eval")

register_resolvers()  # conf/ names run folders with ${vcm_eval.unique_dir:...}, derived QPs with shifted_qps

#: conf/ at the top of the checkout (an absolute path: Hydra would read a relative one as a package path).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class ReportWriteError(UserError, OSError):
    """A result file of the run could not be written (a full disk, a read-only folder); names the path."""


@dataclass
class Results:
    """What one run produced.

    Attributes:
        out_dir: the run folder (spreadsheet, CSVs, plots, provenance).
        summary: one row per (entry, QP): mean bpp, the task's metrics, stage times.
        bd: BD-rate and BD-metric of every entry against every anchor.
        per_image: one row per (picture, entry, QP).
        files: the run folder's files by name (``xlsx``, ``summary``, ``per_image``, ...).
        mlflow_run_id: the MLflow parent run, when tracking is on and worked.
        metric: the headline metric's column (``map50`` for detection).
        warnings: one line each, for what the run did but a user should know (a codec of another version, a
            tracking store that failed).
        sweep: the rows, detections and task timings as the sweep loaded them.
    """

    out_dir: Path
    summary: pd.DataFrame
    bd: pd.DataFrame
    per_image: pd.DataFrame
    files: dict[str, Path]
    mlflow_run_id: str | None
    metric: str = "map50"
    warnings: list[str] = field(default_factory=list)
    sweep: SweepResults | None = None


def compose(*overrides: str, config_dir: str | Path = CONFIG_DIR) -> DictConfig:
    """The configuration ``python -m vcm_eval <overrides>`` would run (Hydra's compose API, without a run folder).

    Args:
        overrides: Hydra overrides, as on the command line (``"proposal=compensation"``, ``"ctc.num_images=10"``).
        config_dir: the primary config's folder (the checkout's ``conf/``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def new_run_folder(cfg: DictConfig) -> Path:
    """A new run folder ``<paths.output_root>/runs/<date>_<time>[_n]``, as the CLI names them."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(unique_dir(str(Path(cfg.paths.output_root) / "runs" / stamp)))


def build_entries(cfg: DictConfig) -> list[EntrySpec]:
    """Instantiate every anchor and proposal of the config (each group option nests its body under its name)."""
    specs = []
    for role, group in (("anchor", cfg.get("anchor")), ("proposal", cfg.get("proposal"))):
        for key, node in (group or {}).items():
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            if target is None:
                raise SettingError(f"{role} option {key!r} has no _target_; nest its settings under its name "
                                 f"(see conf/{role}/)")
            entry = build(node, expect=CodingEntry, what=f"{role} {key!r} (subclass FeatureCodingMethod or "
                                                        "ImageCodingMethod from vcm_eval.methods)")
            specs.append(EntrySpec(entry, role))
    if not any(spec.role == "anchor" for spec in specs):
        raise SettingError("no anchor selected; BD-rate needs one (e.g. anchor=c_layer)")
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
        raise SettingError(f"ctc.task={task}, but the data set {dataset.name!r} ({type(dataset).__name__}) scores "
                         f"{dataset.task}; segmentation is scored on COCO-format sets (dataset=synthetic or coco, "
                         "whose task follows ctc.task)")
    return task


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> Results:
    """One sweep of the configured CTC, then every result file; returns what was produced.

    Args:
        cfg: a composed configuration (:func:`compose`).
        out_dir: the run folder; None makes a new one under ``paths.output_root/runs/`` as the CLI does.

    Raises:
        UserError: a setting, file, codec or store problem, in one line naming it and the fix
            (:class:`SweepError` when tasks failed; finished work stays in the store).
        KeyboardInterrupt: :class:`SweepInterrupted` on Ctrl-C (or SIGTERM where the caller maps it so).
    """
    started = time.perf_counter()
    started_ms = int(time.time() * 1000)  # wall clock, for the MLflow run's start
    check_config(cfg)
    out_dir = Path(out_dir) if out_dir is not None else new_run_folder(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.paths.store)
    settings = StoreSettings.of(cfg.get("store"))
    codec = build(cfg.codec, expect=VideoCodec, what="codec")
    codec.check_available()  # before the data set, which may generate pictures: a missing codec stops at once
    entries = build_entries(cfg)
    check_rate_points([spec.entry for spec in entries], codec)
    dataset = build(cfg.dataset, expect=(DetectionDataset, SequenceDataset), what="dataset")
    if isinstance(dataset, SequenceDataset):  # a video CTC: sequences are the unit of coding
        from vcm_eval.api_sequences import run_sequences

        return run_sequences(cfg, out_dir, dataset=dataset, codec=codec, entries=entries, store=store,
                             settings=settings, started=started, started_ms=started_ms)
    task = check_dataset_task(cfg, dataset)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    sweep_started = time.perf_counter()
    executor = build(cfg.executor, expect=Executor, what="executor")
    with executor:
        sweep = Sweep(dataset=dataset, model_cfg=model_cfg, codec=codec, entries=entries, store=store,
                      executor=executor, fail_fast=bool(cfg.fail_fast), progress=bool(cfg.progress),
                      model_threads=int(cfg.model_threads), store_settings=settings)
        model = sweep.model
        images = sweep.images()
        log.info("CTC %s: %d images of %s, model %s, codec %s, entries %s, QPs %s; store %s",
                 cfg.ctc.name, len(images), dataset.name, model.name, codec.name,
                 ", ".join(f"{s.entry.name} ({s.role})" for s in entries),
                 {s.entry.name: s.entry.rate_points for s in entries}, store.url)
        results = sweep.run()
    sweep_s = time.perf_counter() - sweep_started
    if settings.stale_temporaries_s is not None:
        try:
            files, size = store.remove_stale_temporaries(settings.stale_temporaries_s)
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

    warnings = []
    codec_warning = sweep.runtime.coder.identity().get("version_warning")
    if codec_warning:
        warnings.append(f"{codec_warning} (recorded in provenance.json and the config sheet)")
    run_id = None
    if cfg.tracking.get("enabled", False):
        from vcm_eval.reporting.mlflow_sink import parent_run_name, run_tags

        tags = run_tags(provenance, codec=codec.name, model=model.name, dataset=dataset.name, ctc=str(cfg.ctc.name),
                        task=task)
        run_id, tracking_warning = track(cfg, run_name=parent_run_name(meta.entries, meta.ctc), params=config_flat,
                                         tags=tags, summary=summary, bd=bd, metric_columns=columns,
                                         artifact_dir=out_dir, start_time_ms=started_ms, end_time_ms=finished_ms)
        if tracking_warning:
            warnings.append(tracking_warning)
    return Results(out_dir, summary, bd, per_image, files, run_id, metric, warnings, results)


def track(cfg: DictConfig, **run: Any) -> tuple[str | None, str | None]:
    """Log the run to the configured MLflow store; returns its id, or None and a one-line warning when the
    tracking store fails: the run's files are written by then and stay the result of record."""
    from vcm_eval.reporting.mlflow_sink import log_run

    uri = str(cfg.tracking.tracking_uri)
    try:
        return log_run(tracking_uri=uri, experiment=str(cfg.tracking.experiment),
                       artifact_location=cfg.tracking.get("artifact_location"), **run), None
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and alembic raise their own types
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        message = (f"MLflow tracking failed for {uri} ({type(exc).__name__}: {first}); the run's files in "
                   f"{run['artifact_dir']} are complete. Log them later with `python tools/log_run.py "
                   f"{run['artifact_dir']}`, or run with tracking=none")
        log.warning("%s", message)
        return None, message


