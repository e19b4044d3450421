"""MLflow logging of a run (the only module that imports mlflow).

One parent run per invocation (the sweep: flattened config as params, BD results and the
uncompressed mAP as metrics, every output file as an artifact) with one nested run per entry whose
metrics (``bpp``, ``map_50``, ...) are logged with ``step = QP``, so MLflow's charts draw them
against QP. Only the driver process logs; workers never touch the tracking store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: MLflow rejects longer parameter values; longer ones are cut and marked.
_MAX_PARAM_LEN = 500


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def log_run(*, tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, str],
            tags: Mapping[str, str], summary: pd.DataFrame, bd: pd.DataFrame, metric_columns: list[str],
            artifact_dir: Path, artifact_location: str | None = None) -> str:
    """Log one run, with every file of ``artifact_dir`` (the run folder) as artifacts; returns its run id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        except Exception:  # noqa: BLE001 - another driver created it in between; use theirs
            pass
        exp = mlflow.get_experiment_by_name(experiment)
    with mlflow.start_run(experiment_id=exp.experiment_id, run_name=run_name, tags=dict(tags)) as parent:
        clean = {k[:250]: (v if len(v) <= _MAX_PARAM_LEN else v[: _MAX_PARAM_LEN - 3] + "...")
                 for k, v in params.items()}
        keys = sorted(clean)
        for i in range(0, len(keys), 90):  # MLflow takes at most 100 params per batch
            mlflow.log_params({k: clean[k] for k in keys[i:i + 90]})
        reference = summary[summary["qp"].isna()]
        for column in metric_columns:
            if len(reference) and _finite(reference[column].iloc[0]):
                mlflow.log_metric(f"uncompressed_{column}", float(reference[column].iloc[0]))
        for _, row in bd.iterrows():
            for column in ("bd_rate_pchip", "bd_rate_cubic", "bd_map_pchip", "bd_map_cubic"):
                if _finite(row[column]):
                    mlflow.log_metric(f"{column}.{row['test']}.vs.{row['anchor']}", float(row[column]))
        coded = summary[summary["qp"].notna()]
        for entry, rows in coded.groupby("entry", sort=False):
            with mlflow.start_run(experiment_id=exp.experiment_id, run_name=str(entry), nested=True,
                                  tags={**tags, "entry": str(entry), "role": str(rows["role"].iloc[0])}):
                mlflow.log_param("qps", ",".join(str(int(q)) for q in sorted(rows["qp"])))
                for _, row in rows.iterrows():
                    step = int(row["qp"])
                    values = {"bpp": row["avg_bpp"], "num_bits": row["num_bits"],
                              **{c: row[c] for c in metric_columns},
                              **{c: row[c] for c in row.index if c.startswith(("bits_", "psnr_", "topdown_psnr_"))},
                              **{c: row[c] for c in ("encode_s", "decode_s", "nn_part_1_s", "nn_part_2_s")}}
                    mlflow.log_metrics({k: float(v) for k, v in values.items() if _finite(v)}, step=step)
        mlflow.log_artifacts(str(artifact_dir))
        return parent.info.run_id
