"""MLflow logging of a run (the only module that imports mlflow).

One parent run per invocation (the sweep: flattened config as params, BD results and the
uncompressed mAP as metrics, every output file as an artifact) with one nested run per entry whose
metrics (``bpp``, ``map_50``, ...) are logged with ``step = QP``, so MLflow's charts draw them
against QP. Only the driver process logs; workers never touch the tracking store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vcm_eval.columns import LEVEL_BITS, LEVEL_QP, PSNR_PREFIXES, STAGE_COLUMNS

log = logging.getLogger(__name__)

#: MLflow rejects longer parameter values; longer ones are cut and marked.
_MAX_PARAM_LEN = 500


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _run_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``tags`` plus the ones ``mlflow.start_run`` adds by itself (user, source, git commit), which
    ``MlflowClient.create_run`` does not."""
    try:
        from mlflow.tracking.context import registry
    except ImportError:  # pragma: no cover - an MLflow without the context registry
        return dict(tags)
    return dict(registry.resolve_tags(dict(tags)))


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def run_tags(provenance: Mapping[str, Any], *, codec: str, model: str, dataset: str, ctc: str,
             task: str) -> dict[str, str]:
    """The tags of a run's parent MLflow run: what ran it (names, git commit, weights and codec version)."""
    return {"git_sha": str(provenance.get("git", "unknown")), "codec": codec, "model": model, "dataset": dataset,
            "ctc": ctc, "task": task,
            "weights_sha256": str((provenance.get("model") or {}).get("weights_sha256", "")),
            "codec_version": str((provenance.get("codec") or {}).get("version", ""))}


def parent_run_name(entries: list[str], ctc: str) -> str:
    """``c_layer+image+compensation@embedded``: the entries compared, and the CTC."""
    return "+".join(entries) + f"@{ctc}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix):].split("?", 1)[0]).expanduser()


@contextlib.contextmanager
def tracking_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` while this process writes into a SQLite tracking store.

    MLflow creates a new SQLite store's tables with alembic migrations on first use; two drivers doing that at
    once collide (``table _alembic_tmp_tags already exists``) and leave the database half-migrated, failing
    every later run. SQLite also serialises writers by itself only within its busy timeout. One lock around
    the whole logging of a run makes the first driver create the store and the others wait their turn (logging
    takes seconds). Other stores (an MLflow server, a file store) serialise writers themselves.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def log_run(*, tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, str],
            tags: Mapping[str, str], summary: pd.DataFrame, bd: pd.DataFrame, metric_columns: list[str],
            artifact_dir: Path, artifact_location: str | None = None, start_time_ms: int | None = None,
            end_time_ms: int | None = None) -> str:
    """Log one run, with every file of ``artifact_dir`` (the run folder) as artifacts; returns its run id.

    ``start_time_ms`` and ``end_time_ms`` (wall clock, milliseconds since the epoch) are the span of the
    sweep, given to the parent run and every nested run, so MLflow shows how long the sweep took rather
    than how long logging took; each defaults to the time of logging.
    """
    with tracking_lock(tracking_uri):
        return _log_run(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name, params=params,
                        tags=tags, summary=summary, bd=bd, metric_columns=metric_columns, artifact_dir=artifact_dir,
                        artifact_location=artifact_location, start_time_ms=start_time_ms, end_time_ms=end_time_ms)


def _log_run(*, tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, str],
             tags: Mapping[str, str], summary: pd.DataFrame, bd: pd.DataFrame, metric_columns: list[str],
             artifact_dir: Path, artifact_location: str | None, start_time_ms: int | None,
             end_time_ms: int | None) -> str:
    import mlflow
    from mlflow.entities import Metric, Param, RunStatus

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            client.create_experiment(experiment, artifact_location=artifact_location)
        except Exception:  # noqa: BLE001 - another driver created it in between; use theirs
            pass
        exp = client.get_experiment_by_name(experiment)
    now_ms = int(time.time() * 1000)
    start_ms = int(start_time_ms) if start_time_ms is not None else now_ms
    end_ms = int(end_time_ms) if end_time_ms is not None else max(now_ms, start_ms)
    base_tags = _run_tags(tags)

    def metric(key: str, value: float, step: int = 0) -> Metric:
        return Metric(key=key, value=float(value), timestamp=end_ms, step=step)

    parent = client.create_run(exp.experiment_id, start_time=start_ms, tags=base_tags, run_name=run_name)
    run_ids = [parent.info.run_id]
    try:
        clean = {k[:250]: (v if len(v) <= _MAX_PARAM_LEN else v[: _MAX_PARAM_LEN - 3] + "...")
                 for k, v in params.items()}
        for keys in _batches(sorted(clean), 90):  # MLflow takes at most 100 params per batch
            client.log_batch(parent.info.run_id, params=[Param(k, clean[k]) for k in keys])
        metrics = []
        reference = summary[summary["qp"].isna()]
        for column in metric_columns:
            if len(reference) and _finite(reference[column].iloc[0]):
                metrics.append(metric(f"uncompressed_{column}", reference[column].iloc[0]))
        for _, row in bd.iterrows():
            for column in ("bd_rate_pchip", "bd_rate_cubic", "bd_map_pchip", "bd_map_cubic"):
                if _finite(row[column]):
                    metrics.append(metric(f"{column}.{row['test']}.vs.{row['anchor']}", row[column]))
        for chunk in _batches(metrics, 900):  # at most 1000 metrics per batch
            client.log_batch(parent.info.run_id, metrics=chunk)
        coded = summary[summary["qp"].notna()]
        for entry, rows in coded.groupby("entry", sort=False):
            child_tags = {**base_tags, "entry": str(entry), "role": str(rows["role"].iloc[0]),
                          "mlflow.parentRunId": parent.info.run_id}
            child = client.create_run(exp.experiment_id, start_time=start_ms, tags=child_tags, run_name=str(entry))
            run_ids.append(child.info.run_id)
            ordered = rows.sort_values("qp")
            level_qps = [Param(f"qps_{c[3:]}", ",".join(str(int(q)) for q in ordered[c]))  # actual QP per level
                         for c in ordered.columns if c.startswith(LEVEL_QP) and ordered[c].notna().all()]
            client.log_batch(child.info.run_id,
                             params=[Param("qps", ",".join(str(int(q)) for q in ordered["qp"])), *level_qps])
            metrics = []
            for _, row in rows.iterrows():
                step = int(row["qp"])
                values = {"bpp": row["avg_bpp"], "num_bits": row["num_bits"],
                          **{c: row[c] for c in metric_columns},
                          **{c: row[c] for c in row.index if c.startswith((LEVEL_BITS, *PSNR_PREFIXES))},
                          **{c: row[c] for c in STAGE_COLUMNS}}
                metrics += [metric(k, v, step) for k, v in values.items() if _finite(v)]
            for chunk in _batches(metrics, 900):
                client.log_batch(child.info.run_id, metrics=chunk)
            client.set_terminated(child.info.run_id, status=RunStatus.to_string(RunStatus.FINISHED), end_time=end_ms)
            run_ids.pop()
        client.log_artifacts(parent.info.run_id, str(artifact_dir))
    except BaseException:
        for run_id in reversed(run_ids):  # as mlflow.start_run's context manager does: mark them failed
            try:
                client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
            except Exception:  # noqa: BLE001 - keep the original error
                log.warning("could not mark MLflow run %s as failed", run_id)
        raise
    client.set_terminated(parent.info.run_id, status=RunStatus.to_string(RunStatus.FINISHED), end_time=end_ms)
    return parent.info.run_id
