"""The report files of a run, without a sweep: the spreadsheet's display formats (over full-precision cells)
and its byte-identical rebuild, and the MLflow run's start and end times (the sweep's, not logging's)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vcm_eval.reporting.report import ReportMeta, load_run_tables, write_reports

QPS = [35, 38, 41, 44]
LEVELS = ("c2", "c3", "c4", "c5")


def fake_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A per-image table and its summary as a sweep writes them: an uncompressed reference and two entries
    over four QPs, with numbers carrying all their digits."""
    rng = np.random.default_rng(7)
    per_image, summary = [], []
    summary.append({"entry": "uncompressed", "role": "reference", "qp": None, "num_images": 2,
                    "map_50": 0.9671234567891234, "map_50_95": 0.7591234567891234, "nn_part_1_s": 1.23456789,
                    "encode_s": 0.0, "decode_s": 0.0, "nn_part_2_s": 2.3456789})
    for image in ("img0", "img1"):
        per_image.append({"image_id": image, "entry": "uncompressed", "role": "reference", "qp": None,
                          "width": 640, "height": 480, "num_bits": None, "bpp": None,
                          "nn_part_1_s": 0.61728394, "nn_part_2_s": 1.17283945, "computed_now": True})
    for entry, role, scale in (("c_layer", "anchor", 1.0), ("compensation", "proposal", 0.97)):
        for i, qp in enumerate(QPS):
            bits = {f"bits_{level}": float(rng.integers(10_000, 900_000)) * scale / (i + 1) for level in LEVELS}
            num_bits = sum(bits.values()) + 96.0
            bpp = num_bits / (640 * 480)
            row = {"entry": entry, "role": role, "qp": qp, "num_images": 2, "num_bits": num_bits, "avg_bpp": bpp,
                   "map_50": 0.95 - 0.05 * i - (0.01 if role == "proposal" else 0.0) + 1e-13 * rng.random(),
                   "map_50_95": 0.7 - 0.04 * i + 1e-13 * rng.random(), **bits, "side_info_bits": 96.0,
                   **{f"psnr_{level}": 45.0 - 2.0 * i + rng.random() for level in LEVELS},
                   **{f"topdown_psnr_{level}": 44.0 - 2.0 * i + rng.random() for level in LEVELS},
                   "nn_part_1_s": 0.0, "encode_s": 3.0 + rng.random(), "decode_s": 0.1 + rng.random(),
                   "nn_part_2_s": 2.0 + rng.random(), "from_cache_share": 0.5}
            summary.append(row)
            for image in ("img0", "img1"):
                per_image.append({"image_id": image, "entry": entry, "role": role, "qp": qp, "width": 640,
                                  "height": 480, "num_bits": num_bits, "bpp": bpp, **bits, "side_info_bits": 96.0,
                                  "encode_s": row["encode_s"] / 2, "decode_s": row["decode_s"] / 2,
                                  "nn_part_1_s": 0.0, "nn_part_2_s": row["nn_part_2_s"] / 2, "computed_now": True})
    return pd.DataFrame(per_image), pd.DataFrame(summary)


META = ReportMeta(ctc="embedded", dataset="synthetic-val", model="embedded", codec="x265", metric="map_50",
                  anchors=["c_layer"], entries=["c_layer", "compensation"], bd_min_points=2,
                  finished="2026-11-26T08:21:18", config={"ctc.name": "embedded", "codec.preset": "medium"})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    per_image, summary = fake_tables()
    files, bd = write_reports(out, per_image, summary, META)
    return out, files, bd


def _full(value: float) -> float:
    """What a workbook cell holds of a float: openpyxl writes 16 significant digits (Excel shows 15)."""
    return float(f"{value:.16g}")


def _column(ws, header: str) -> int:
    headers = [c.value for c in ws[1]]
    assert header in headers, (header, headers)
    return headers.index(header) + 1


def test_workbook_is_formatted_for_reading_over_full_precision_numbers(report):
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    out, files, bd = report
    wb = load_workbook(files["xlsx"])
    for ws in wb.worksheets:  # the header row stays in view on every sheet
        assert ws.freeze_panes == "A2", ws.title

    ws = wb["BD"]
    col = _column(ws, "bd_rate_pchip")
    cell = ws.cell(row=2, column=col)
    expected = bd.loc[0, "bd_rate_pchip"]
    assert math.isfinite(expected)
    # a number (the percent number itself, as in bd.csv), shown with two decimals and a % sign
    assert isinstance(cell.value, float) and cell.value == _full(expected)
    assert "0.00" in cell.number_format and "0.000" not in cell.number_format and '" %"' in cell.number_format
    assert "0.00" in ws.cell(row=2, column=_column(ws, "bd_map_pchip")).number_format

    ws = wb["c_layer"]
    _, summary, _ = load_run_tables(out)
    anchor = summary[summary["entry"] == "c_layer"].sort_values("qp").reset_index(drop=True)
    bpp = ws.cell(row=2, column=_column(ws, "avg_bpp"))
    assert bpp.number_format == "0.0000" and bpp.value == _full(anchor.loc[0, "avg_bpp"])
    assert len(repr(bpp.value)) > 10  # every digit kept, only the display is rounded
    assert ws.cell(row=2, column=_column(ws, "map_50")).number_format == "0.0000"
    assert ws.cell(row=2, column=_column(ws, "map_50")).value == _full(anchor.loc[0, "map_50"])
    assert ws.cell(row=2, column=_column(ws, "num_bits")).number_format == "#,##0"
    assert ws.cell(row=2, column=_column(ws, "bits_c2")).number_format == "#,##0"
    assert ws.cell(row=2, column=_column(ws, "encode_s")).number_format == "0.000"
    assert ws.cell(row=2, column=_column(ws, "psnr_c2")).number_format == "0.00"
    long_header = _column(ws, "topdown_psnr_c2")
    width = ws.column_dimensions[get_column_letter(long_header)].width
    assert width >= len("topdown_psnr_c2") and width > 8.43  # wider than Excel's default column
    for index in range(1, ws.max_column + 1):  # every column sized, within the cap
        assert 0 < ws.column_dimensions[get_column_letter(index)].width <= 60

    ws = wb["RD"]
    assert ws.cell(row=2, column=_column(ws, "c_layer bpp")).number_format == "0.0000"
    assert ws.cell(row=2, column=_column(ws, "c_layer map_50 (%)")).number_format == "0.00"
    assert ws.cell(row=2, column=_column(ws, "c_layer QP")).value == QPS[0]

    ws = wb["config"]
    assert ws.cell(row=2, column=1).value == "codec.preset"


def test_workbook_rebuilds_byte_for_byte_from_the_run_folder(report, tmp_path):
    out, files, _ = report
    per_image, summary, meta = load_run_tables(out)
    rebuilt, _ = write_reports(tmp_path, per_image, summary, meta)
    assert rebuilt["xlsx"].read_bytes() == files["xlsx"].read_bytes()
    for name in ("summary", "per_image", "bd"):
        assert rebuilt[name].read_bytes() == files[name].read_bytes(), name


def test_mlflow_runs_span_the_sweep_not_the_logging(report, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from vcm_eval.reporting.mlflow_sink import log_run

    out, _, bd = report
    _, summary, _ = load_run_tables(out)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    start_ms = 1_764_000_000_000
    end_ms = start_ms + 284_123  # a 284 s sweep, logged long after it started
    run_id = log_run(tracking_uri=uri, experiment="reporting-test", run_name="c_layer+compensation@embedded",
                     params={"ctc.name": "embedded"}, tags={"codec": "x265"}, summary=summary, bd=bd,
                     metric_columns=["map_50", "map_50_95"], artifact_dir=out,
                     artifact_location=f"file://{tmp_path}/mlartifacts", start_time_ms=start_ms, end_time_ms=end_ms)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert (parent.info.start_time, parent.info.end_time) == (start_ms, end_ms)
    assert parent.info.end_time - parent.info.start_time == 284_123
    assert parent.info.run_name == "c_layer+compensation@embedded" and parent.data.tags["codec"] == "x265"
    assert parent.data.params["ctc.name"] == "embedded"
    assert parent.data.metrics["uncompressed_map_50"] == summary.loc[summary["qp"].isna(), "map_50"].iloc[0]
    assert "bd_rate_pchip.compensation.vs.c_layer" in parent.data.metrics
    assert "summary.csv" in {a.path for a in client.list_artifacts(run_id)}
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert {c.data.tags["entry"] for c in children} == {"c_layer", "compensation"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert (child.info.start_time, child.info.end_time) == (start_ms, end_ms)
        history = client.get_metric_history(child.info.run_id, "bpp")
        assert sorted(m.step for m in history) == QPS
