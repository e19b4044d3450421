"""tools/run_detector.py: detections JSON and C-layer .npz from outside the test process, clear errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rcnn_support import golden_arrays, golden_dir, seeded_weights

from vcm_eval.models.rcnn import COCO_CLASS_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL = REPO_ROOT / "tools" / "run_detector.py"


def _tool_module():
    spec = importlib.util.spec_from_file_location("run_detector", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_detections_and_clayers(tmp_path, tmp_path_factory):
    weights = seeded_weights("r50", tmp_path_factory)
    out, npz = tmp_path / "out" / "dets.json", tmp_path / "clayers.npz"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--zoo", "faster_rcnn_R_50_FPN_3x", "--weights", str(weights),
         "--min-size", "320", "--max-size", "533", str(golden_dir() / "chelsea.png"),
         "--output", str(out), "--save-clayers", str(npz)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    gold = golden_arrays("r50", "chelsea")
    assert (result["height"], result["width"]) == (300, 451)
    assert result["model"]["zoo_name"] == "faster_rcnn_R_50_FPN_3x"
    dets = result["detections"]
    assert len(dets) == len(gold["scores"])
    boxes = np.array([d["box"] for d in dets])
    classes = np.array([d["class"] for d in dets])
    scores = np.array([d["score"] for d in dets])
    assert [d["class_name"] for d in dets] == [COCO_CLASS_NAMES[c] for c in classes]
    dist = np.abs(gold["pred_boxes"][:, None, :] - boxes[None]).max(axis=2)
    dist[gold["pred_classes"][:, None] != classes[None, :]] = np.inf
    idx = dist.argmin(axis=1)
    assert dist[np.arange(len(idx)), idx].max() < 1e-2
    np.testing.assert_allclose(scores[idx], gold["scores"], atol=5e-5)
    with np.load(npz) as saved:
        for level in ("c2", "c3", "c4", "c5"):
            np.testing.assert_allclose(saved[level], gold[level][0], rtol=1e-4, atol=1e-4)
        assert tuple(saved["padded_size"]) == tuple(gold["padded_hw"])
        assert tuple(saved["original_size"]) == (300, 451)


@pytest.mark.parametrize("case", ["not_an_image", "missing_image", "missing_weights"])
def test_cli_bad_input_is_a_one_line_error(case, tmp_path, capsys):
    tool = _tool_module()
    image = golden_dir() / "chelsea.png"
    weights = tmp_path / "model_final_280758.pkl"
    if case == "not_an_image":
        image = tmp_path / "notes.jpg"
        image.write_text("not a picture")
    elif case == "missing_image":
        image = tmp_path / "absent.png"
    rc = tool.main(["--zoo", "faster_rcnn_R_50_FPN_3x", "--weights", str(weights), str(image)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("run_detector: error: ") and err.count("\n") == 1
    assert (str(image) if case != "missing_weights" else "model_final_280758.pkl") in err
