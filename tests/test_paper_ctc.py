"""The paper's CTC wired end to end: MPEG VCM Open Images files, the Detectron2-compatible X101-FPN and the
Open Images Challenge metric, with x265 in place of VTM (absent here) and two pictures standing in for the
Open Images ones (the real ones are not distributed with the annotations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import shared_path
from PIL import Image
from rcnn_support import golden_image, seeded_weights

import vcm_eval
from vcm_eval.cli import run


def test_paper_ctc_runs_with_x265_on_stand_in_pictures(tmp_path, tmp_path_factory, monkeypatch):
    annotations = shared_path("data", "mpeg-vcm")
    names = (annotations / "detection_validation_input_5k.lst").read_text().split()[:2]
    images = tmp_path / "images"
    images.mkdir()
    for name, source in zip(names, ("chelsea", "astronaut")):
        Image.fromarray(golden_image(source)).save(images / name, quality=95)
    monkeypatch.setenv("VCM_EVAL_OIV6_ANNOTATIONS", str(annotations))
    monkeypatch.setenv("VCM_EVAL_OIV6_IMAGES", str(images))
    weights = seeded_weights("x101", tmp_path_factory)
    cfg = vcm_eval.compose(*[
        "ctc=paper", "codec=x265", "proposal=compensation", "anchor=[c_layer]", "ctc.num_images=2",
        "ctc.qps.features=[37,45]", f"model.weights={weights}", "model.min_size_test=320",
        "model.max_size_test=533", "executor=local", "tracking=none", "progress=false", "bd.min_points=2",
        f"paths.output_root={tmp_path}", f"paths.store={tmp_path}/store"])
    outcome = run(cfg, tmp_path / "run")
    summary = outcome.summary.set_index(["entry", "qp"], drop=False)
    assert outcome.files["ctc_c_layer"].name == "final_oiv6_vcm.csv"
    coded = outcome.summary[outcome.summary["qp"].notna()]
    assert len(coded) == 4 and np.isfinite(coded["avg_bpp"]).all() and coded["map_50"].between(0, 1).all()
    # X101-FPN: 256 channels per level, packed 16 x 16; the Open Images metric scored the detections
    per_image = outcome.per_image
    assert (per_image.loc[per_image["entry"] == "c_layer", "bits_c2"] > 0).all()
    assert "num_gt_instances" in summary.columns and (summary["num_gt_instances"] > 0).all()
    provenance = Path(outcome.out_dir / "provenance.json").read_text()
    assert "faster_rcnn_X_101_32x8d_FPN_3x" in provenance and "oiv6_vcm" in provenance
