"""End to end: the Hydra app on the embedded default, with small image counts and two QPs.

Covers the issue's checks: output files and the MLflow run exist and hold finite numbers; a corrupt
image and a crashing codec end with a clear error naming the cause and keep finished work; an
interrupted run, started again with the same command, resumes and gives the results of an
uninterrupted run; the image anchor with a lossless codec reproduces the uncompressed detections.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.pipeline import SweepError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One generated synthetic set for the whole session (generation is deterministic)."""
    return tmp_path_factory.mktemp("data")


def base_overrides(root: Path, data_root: Path, *, tracking: bool = False) -> list[str]:
    """Small, fast settings; every path under ``root``; MLflow off unless ``tracking``."""
    overrides = [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={data_root}",
                 "executor=local", "progress=false", "dataset.size=6", "ctc.num_images=3",
                 "ctc.qps.features=[32,42]", "ctc.qps.image=[27,42]", "bd.min_points=2", "anchor=[c_layer]"]
    if tracking:
        return overrides + [f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
                            f"tracking.artifact_location=file://{root}/mlartifacts"]
    return overrides + ["tracking=none"]


def compose_cfg(root: Path, data_root: Path, *overrides: str, tracking: bool = False):
    base = base_overrides(root, data_root, tracking=tracking)
    if any(o.startswith("dataset=") for o in overrides):
        base.remove("dataset.size=6")
    if any(o.startswith("anchor=") for o in overrides):
        base.remove("anchor=[c_layer]")
    return vcm_eval.compose(*base + list(overrides))


def test_main_job_writes_every_result_file_and_an_mlflow_run(tmp_path, data_root):
    cfg = compose_cfg(tmp_path, data_root, "proposal=compensation", "anchor=[c_layer,image]", tracking=True)
    outcome = run(cfg, tmp_path / "run")
    summary = outcome.summary
    assert set(summary["entry"]) == {"uncompressed", "c_layer", "image", "compensation"}
    coded = summary[summary["qp"].notna()]
    assert len(coded) == 6 and np.isfinite(coded["avg_bpp"]).all() and np.isfinite(coded["map_50"]).all()
    assert (coded["avg_bpp"] > 0).all() and coded["map_50"].between(0, 1).all()
    # rate falls with QP for both entries
    for _, rows in coded.groupby("entry"):
        assert rows.sort_values("qp")["avg_bpp"].is_monotonic_decreasing
    for name in ("xlsx", "summary", "per_image", "bd", "rd_plot", "rate_split", "ctc_c_layer", "ctc_compensation",
                 "ctc_image"):
        assert outcome.files[name].is_file() and outcome.files[name].stat().st_size > 0, name
    per_image = pd.read_csv(outcome.files["per_image"])
    assert len(per_image) == 3 * (1 + 2 + 2 + 2)
    # BD of every entry against both anchors, and of each anchor against the other
    bd = pd.read_csv(outcome.files["bd"])
    assert set(zip(bd["anchor"], bd["test"])) == {("c_layer", "image"), ("c_layer", "compensation"),
                                                  ("image", "c_layer"), ("image", "compensation")}
    for level in ("c2", "c3", "c4", "c5"):
        assert (per_image.loc[per_image["entry"] == "c_layer", f"bits_{level}"] > 0).all()
    bits = per_image[per_image["entry"].isin(["c_layer", "compensation"])]
    recomputed = bits[[f"bits_c{k}" for k in (2, 3, 4, 5)]].sum(axis=1) + bits["side_info_bits"]
    np.testing.assert_array_equal(recomputed, bits["num_bits"])
    np.testing.assert_allclose(bits["bpp"], bits["num_bits"] / (bits["width"] * bits["height"]))
    ctc = pd.read_csv(outcome.files["ctc_c_layer"], index_col=0)
    assert list(ctc.columns) == ["Dataset", "qp", "avg_bpp", "end_accuracy", "nn_part_1", "encode", "decode",
                                 "nn_part_2"]
    assert list(ctc["qp"]) == [32, 42]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(outcome.mlflow_run_id)
    assert parent.data.params["ctc.name"] == "embedded" and "uncompressed_map_50" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.data.tags["entry"] for c in children} == {"c_layer", "image", "compensation"}
    # every entry run spans the sweep, so their order in a search is not defined: pick the anchor's by its tag
    anchor_run = next(c for c in children if c.data.tags["entry"] == "c_layer")
    history = client.get_metric_history(anchor_run.info.run_id, "bpp")
    assert sorted(m.step for m in history) == [32, 42] and all(math.isfinite(m.value) for m in history)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "per_image.csv", "rd_curve.png", "report_meta.json", "ctc"} <= artifacts
    ctc = {a.path for a in client.list_artifacts(parent.info.run_id, "ctc")}
    assert ctc == {"ctc/c_layer", "ctc/image", "ctc/compensation"}

    # the report files rebuild identically from the run folder and from the MLflow run, computing nothing
    run_dir = tmp_path / "run"
    written = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")
                     if p.is_file() and p.suffix in (".csv", ".xlsx", ".png", ".json")
                     and p.name not in ("provenance.json",))
    for source in ([str(run_dir)], ["--mlflow-run", outcome.mlflow_run_id, "--tracking-uri",
                                    f"sqlite:///{tmp_path}/mlflow.db"]):
        out = tmp_path / f"rebuilt-{len(source)}"
        subprocess.run([sys.executable, str(REPO / "tools" / "rebuild_report.py"), *source, "--out", str(out)],
                       check=True, capture_output=True, timeout=300)
        for rel in written:
            assert (out / rel).read_bytes() == (run_dir / rel).read_bytes(), rel


def test_per_level_qps_are_recorded_and_offsets_leave_plain_results_alone(tmp_path, data_root):
    plain = run(compose_cfg(tmp_path, data_root), tmp_path / "a")
    shifted = run(compose_cfg(tmp_path, data_root, "anchor.c_layer.qp_offsets={c2:-2,c5:3}"), tmp_path / "b")
    for outcome, offsets in ((plain, {}), (shifted, {"c2": -2, "c5": 3})):
        for table in (outcome.per_image, outcome.summary):
            rows = table[table["entry"] == "c_layer"]
            for level in ("c2", "c3", "c4", "c5"):
                assert (rows[f"qp_{level}"] == rows["qp"] + offsets.get(level, 0)).all(), level
    # c3 and c4 are coded at the same QP in both runs: the same bitstreams, shared through the cache
    a, b = (o.per_image[o.per_image["entry"] == "c_layer"].reset_index(drop=True) for o in (plain, shifted))
    assert (a["bits_c3"] == b["bits_c3"]).all() and (a["bits_c4"] == b["bits_c4"]).all()
    assert (a["bits_c2"] < b["bits_c2"]).all()
    assert b["from_cache"].eq(False).all() and not b["computed_now"].eq(False).any()


def test_proposal_none_runs_the_anchor_alone_and_reuses_its_results(tmp_path, data_root):
    first = run(compose_cfg(tmp_path, data_root), tmp_path / "a")
    assert set(first.summary["entry"]) == {"uncompressed", "c_layer"}
    again = run(compose_cfg(tmp_path, data_root, "proposal=compensation"), tmp_path / "b")
    anchor_rows = again.per_image[again.per_image["entry"] == "c_layer"]
    assert not anchor_rows["computed_now"].any()  # identical configuration: reused, not recomputed
    pd.testing.assert_frame_equal(
        first.summary[first.summary["entry"] == "c_layer"].reset_index(drop=True),
        again.summary[again.summary["entry"] == "c_layer"].reset_index(drop=True))


def test_image_anchor_with_lossless_codec_equals_uncompressed_detections(tmp_path, data_root):
    cfg = compose_cfg(tmp_path, data_root, "codec=lossless", "anchor=[image]",
                      "anchor.image.chroma_format=444")
    outcome = run(cfg, tmp_path / "run")
    summary = outcome.summary.set_index("entry")
    reference = summary.loc["uncompressed", "map_50"]
    coded = outcome.summary[outcome.summary["entry"] == "image"]
    assert (coded["map_50"] == reference).all() and (coded["avg_bpp"] > 0).all()


def test_corrupt_image_is_an_error_naming_it_and_keeps_finished_work(tmp_path, data_root):
    import shutil

    from hydra.utils import instantiate

    records = instantiate(compose_cfg(tmp_path, data_root).dataset).records()
    copy = tmp_path / "copy"
    shutil.copytree(Path(records[0].path).parent.parent, copy)  # annotations.json + images/
    broken = copy / "images" / Path(records[1].path).name
    broken.write_bytes(broken.read_bytes()[:200])
    cfg = compose_cfg(tmp_path, data_root, "dataset=coco",
                      f"dataset.annotations={copy / 'annotations.json'}", f"dataset.images={copy}")
    with pytest.raises(SweepError) as info:
        run(cfg, tmp_path / "run")
    message = str(info.value)
    assert broken.name in message and "corrupt" in message and "run the same command again" in message
    # the other two pictures' work (uncompressed + 2 QPs each) is in the store
    assert len(list((tmp_path / "store" / "detections").rglob("*.json"))) == 2 * (1 + 2)


def test_failing_codec_is_an_error_naming_picture_and_keeps_finished_work(tmp_path, data_root):
    cfg = compose_cfg(tmp_path, data_root, "+codec.fail_on=c3",
                      "codec._target_=fakes.FailingCodec", "~codec.preset", "~codec.extra_params")
    with pytest.raises(SweepError) as info:
        run(cfg, tmp_path / "run")
    message = str(info.value)
    assert "encoder crashed on image" in message and "c3" in message and "QP" in message
    assert len(list((tmp_path / "store" / "clayers").rglob("*.npz"))) == 3


def _store_count(store: Path, kind: str) -> int:
    return len(list((store / kind).rglob("*.json"))) if (store / kind).exists() else 0


def test_interrupted_run_resumes_with_identical_results(tmp_path, data_root):
    """A run SIGKILLed mid-sweep (by its own codec, at a fixed point: no race with the sweep's speed), started
    again with the same command, gives an uninterrupted run's results without redoing finished work."""
    from fakes import encoded_frames

    kills = tmp_path / "kills"
    overrides = base_overrides(tmp_path / "killed", data_root) + [
        "proposal=compensation", "codec._target_=fakes.KillingCodec", f"+codec.folder={kills}", "+codec.after=9",
        "~codec.preset", "~codec.extra_params"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "vcm_eval", *overrides, "hydra.run.dir=" + str(tmp_path / "killed" / "run1")]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    store = tmp_path / "killed" / "store"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    finished_detections = _store_count(store, "detections")
    coded_before = encoded_frames(kills)
    assert len(coded_before) == 9 and finished_detections > 0

    command[-1] = "hydra.run.dir=" + str(tmp_path / "killed" / "run2")
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    resumed = pd.read_csv(tmp_path / "killed" / "run2" / "summary.csv")

    clean = run(compose_cfg(tmp_path / "clean", data_root, "proposal=compensation", "codec._target_=fakes.NoiseCodec",
                            "~codec.preset", "~codec.extra_params"), tmp_path / "clean" / "run")
    columns = ["entry", "qp", "num_bits", "avg_bpp", "map_50", "map_50_95"]
    pd.testing.assert_frame_equal(resumed[columns], clean.summary[columns].reset_index(drop=True),
                                  check_dtype=False)
    # nothing finished was redone: no picture coded twice, every stored file untouched, every stored
    # detection reused as it was
    coded = encoded_frames(kills)
    assert len(coded) == len(set(coded)) > len(coded_before)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items())
    per_image = pd.read_csv(tmp_path / "killed" / "run2" / "per_image.csv")
    assert (~per_image["computed_now"]).sum() == finished_detections < len(per_image)
