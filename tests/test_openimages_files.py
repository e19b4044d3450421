"""Open Images file readers, hierarchy expansion, bad input, and the tools/oi_eval.py command."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path

from vcm_eval.evaluation import openimages_files as F

BOX_HEADER = "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n"
LABEL_HEADER = "ImageID,LabelName,Confidence\n"
DET_HEADER = "ImageID,LabelName,Score,XMin,XMax,YMin,YMax\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _golden(case: str, name: str) -> Path:
    return shared_path("golden", "openimages", case, name)


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Readers


def test_read_gt_boxes_columns_types_and_extra_columns(tmp_path):
    path = _write(tmp_path, "b.csv", "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsGroupOf,IsInside\n"
                                     "0001,xclick,/m/01g317,1,0.1,0.5,0.2,0.6,1,0\n\n")
    boxes = F.read_gt_boxes(path)
    assert boxes.ImageID.tolist() == ["0001"]  # an all-digit id stays a string
    assert boxes.IsGroupOf.tolist() == [True]
    assert boxes[["XMin", "XMax", "YMin", "YMax"]].to_numpy().tolist() == [[0.1, 0.5, 0.2, 0.6]]
    assert boxes.Line.tolist() == [2]


@pytest.mark.parametrize("row, message", [
    ("a,x,0.1,0.5,0.2,0.6\n", "exactly 7 comma-separated fields"),
    ("a,x,0.1,0.5,0.2,0.6,0,9\n", "exactly 7 comma-separated fields"),
    ("a,x,0.1,zero,0.2,0.6,0\n", "XMax is empty, not a number"),
    ("a,x,,0.5,0.2,0.6,0\n", "XMin is empty"),
    ("a,x,nan,0.5,0.2,0.6,0\n", "NaN or inf"),
    ("a,x,0.1,0.5,0.2,0.6,2\n", "IsGroupOf is not 0 or 1"),
    ("a,x,0.1,1.5,0.2,0.6,0\n", "outside \\[0, 1\\]"),
    ("a,x,-0.1,0.5,0.2,0.6,0\n", "outside \\[0, 1\\]"),
    ("a,x,0.6,0.5,0.2,0.6,0\n", "XMin > XMax"),
    ("a,x,0.1,0.5,0.7,0.6,0\n", "YMin > YMax"),
    (",x,0.1,0.5,0.2,0.6,0\n", "ImageID is empty"),
])
def test_bad_box_rows_are_errors_naming_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, "boxes.csv", BOX_HEADER + "ok,x,0.1,0.5,0.2,0.6,0\n" + row)
    with pytest.raises(F.OpenImagesFormatError, match=message) as info:
        F.read_gt_boxes(path)
    assert "boxes.csv" in str(info.value) and "line 3" in str(info.value)


def test_missing_columns_and_missing_file(tmp_path):
    path = _write(tmp_path, "b.csv", "ImageID,LabelName,XMin,XMax,YMin,YMax\n")
    with pytest.raises(F.OpenImagesFormatError, match="lacks column.*IsGroupOf"):
        F.read_gt_boxes(path)
    with pytest.raises(F.OpenImagesFormatError, match="no such ground-truth box file"):
        F.read_gt_boxes(tmp_path / "absent.csv")
    with pytest.raises(F.OpenImagesFormatError, match="empty file"):
        F.read_gt_boxes(_write(tmp_path, "e.csv", ""))


def test_duplicated_box_rows_error_keep_or_drop_and_are_counted(tmp_path):
    path = _write(tmp_path, "b.csv", BOX_HEADER + "a,x,0.1,0.5,0.2,0.6,0\nb,x,0.1,0.5,0.2,0.6,0\n"
                                                  "a,x,0.1,0.5,0.2,0.6,0\n")
    with pytest.raises(F.OpenImagesFormatError, match="repeat an earlier row.*line 4"):
        F.read_gt_boxes(path)
    counts = F.InputCounts()
    assert len(F.read_gt_boxes(path, duplicates="keep", counts=counts)) == 3
    assert counts.counts["gt_box_duplicates"] == 1
    counts = F.InputCounts()
    assert F.read_gt_boxes(path, duplicates="drop", counts=counts).ImageID.tolist() == ["a", "b"]
    assert counts.nonzero() == {"gt_box_duplicates": 1, "gt_box_duplicates_dropped": 1}


def test_labels_duplicates_and_conflicts_are_kept_and_counted(tmp_path):
    path = _write(tmp_path, "l.csv", LABEL_HEADER + "a,x,1\na,x,1\na,y,1\na,y,0\n")
    counts = F.InputCounts()
    labels = F.read_image_labels(path, counts=counts)
    assert len(labels) == 4
    assert counts.nonzero() == {"label_duplicates": 1, "label_conflicts": 1}
    with pytest.raises(F.OpenImagesFormatError, match="Confidence is not 0 or 1.*line 2"):
        F.read_image_labels(_write(tmp_path, "bad.csv", LABEL_HEADER + "a,x,0.5\n"))


def test_detections_out_of_range_error_unless_allowed_and_inverted_kept(tmp_path):
    path = _write(tmp_path, "d.csv", DET_HEADER + "a,x,0.9,0.1,0.5,0.2,0.6\na,x,0.9,0.5,0.1,0.2,0.6\n"
                                                  "a,x,0.8,0.1,1.2,0.2,0.6\n")
    with pytest.raises(F.OpenImagesFormatError, match="outside \\[0, 1\\].*line 4.*dividing by the image size"):
        F.read_detections(path)
    dets = F.read_detections(path, allow_out_of_range=True)
    assert len(dets) == 3  # the inverted box (line 3) is the metric's to drop, as the reference does
    with pytest.raises(F.OpenImagesFormatError, match="Score is empty, not a number"):
        F.read_detections(_write(tmp_path, "s.csv", DET_HEADER + "a,x,high,0.1,0.5,0.2,0.6\n"))


def test_unknown_labels_error_for_ground_truth_and_counted_skip_for_detections(tmp_path):
    boxes = F.read_gt_boxes(_write(tmp_path, "b.csv", BOX_HEADER + "a,cat,0.1,0.5,0.2,0.6,0\n"))
    with pytest.raises(F.OpenImagesFormatError, match="\\['cat'\\] are not in the class list"):
        F.check_labels_known(boxes, {"dog"}, "b.csv", "box")
    dets = F.read_detections(_write(tmp_path, "d.csv", DET_HEADER + "a,cat,0.9,0.1,0.5,0.2,0.6\n"
                                                                    "a,dog,0.9,0.1,0.5,0.2,0.6\n"))
    counts = F.InputCounts()
    kept = F.drop_unknown_detection_labels(dets, {"dog"}, "d.csv", counts)
    assert kept.LabelName.tolist() == ["dog"]
    assert counts.counts["detections_unknown_label"] == 1


# ---------------------------------------------------------------------------------------------
# Class lists


def test_labelmap_and_class_descriptions_agree_on_the_golden_case():
    from_map = F.read_labelmap(_golden("main", "labelmap.pbtxt"))
    from_csv = F.read_class_descriptions(_golden("main", "class_descriptions.csv"))
    assert [(c.id, c.name, c.display_name) for c in from_map] == [(c.id, c.name, c.display_name) for c in from_csv]
    assert from_map[0] == F.Category(1, "/m/01g317", "Person") and len(from_map) == 14


def test_labelmap_parsing_details_and_errors(tmp_path):
    text = '# comment\nitem {\n  name: "/m/b"  # trailing\n  id: 2\n}\nitem { id: 1 name: \'a \\"q\\"\' }\n'
    cats = F.read_labelmap(_write(tmp_path, "m.pbtxt", text))
    assert [(c.id, c.name) for c in cats] == [(1, 'a "q"'), (2, "/m/b")]
    with pytest.raises(F.OpenImagesFormatError, match="needs name and id"):
        F.read_labelmap(_write(tmp_path, "n.pbtxt", 'item { name: "x" }'))
    with pytest.raises(F.OpenImagesFormatError, match="repeated class id"):
        F.read_labelmap(_write(tmp_path, "r.pbtxt", 'item { name: "x" id: 1 } item { name: "y" id: 1 }'))
    with pytest.raises(F.OpenImagesFormatError, match="expected 'item"):
        F.read_labelmap(_write(tmp_path, "j.pbtxt", '{"items": []}'))


def test_official_headerless_class_descriptions(tmp_path):
    cats = F.read_class_descriptions(_write(tmp_path, "c.csv", "/m/011k07,Tortoise\n/m/0k4j,Car\n"))
    assert [(c.id, c.name, c.display_name) for c in cats] == [(1, "/m/011k07", "Tortoise"), (2, "/m/0k4j", "Car")]


# ---------------------------------------------------------------------------------------------
# Hierarchy


def test_hierarchy_flattening_multi_parent_and_root():
    h = F.LabelHierarchy.from_file(_golden("main", "hierarchy.json"))
    bicycle, land, vehicle, toy = "/m/0199g", "/m/01prls", "/m/07yv9", "/m/0138tl"
    assert h.root == "/m/0bl9f" and h.root not in h.labels
    assert h.ancestors[bicycle] == {land, vehicle, toy}
    assert h.descendants[vehicle] == {land, "/m/0k4j", "/m/01bjv", bicycle, "/m/0cmf2"}
    assert h.descendants[toy] == {bicycle}
    assert h.ancestors[vehicle] == frozenset() and h.descendants[bicycle] == frozenset()


def _row_multiset(frame, columns):
    return Counter(tuple(r) for r in frame[columns].itertuples(index=False))


@pytest.mark.parametrize("case", ["main", "ties"])
def test_expansion_equals_the_reference_tool_output(case):
    """Same rows as oid_hierarchical_labels_expansion.py wrote, and the same order within each
    (image, class) -- the only order the metric can see."""
    h = F.LabelHierarchy.from_file(_golden(case, "hierarchy.json"))
    cols = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
    ours = F.expand_boxes(F.read_gt_boxes(_golden(case, "gt_boxes.csv")), h)
    ref = F.read_gt_boxes(_golden(case, "gt_boxes_expanded.csv"), duplicates="keep")
    assert _row_multiset(ours, cols) == _row_multiset(ref, cols)
    for key, group in ref.groupby(["ImageID", "LabelName"], sort=False):
        mine = ours[(ours.ImageID == key[0]) & (ours.LabelName == key[1])]
        assert mine[cols].to_numpy().tolist() == group[cols].to_numpy().tolist(), key
    lcols = ["ImageID", "LabelName", "Confidence"]
    ours_l = F.expand_image_labels(F.read_image_labels(_golden(case, "gt_image_labels.csv")), h)
    ref_l = F.read_image_labels(_golden(case, "gt_image_labels_expanded.csv"))
    assert _row_multiset(ours_l, lcols) == _row_multiset(ref_l, lcols)


def test_negative_labels_expand_down_only(tmp_path):
    h = F.LabelHierarchy.from_file(_golden("main", "hierarchy.json"))
    labels = F.read_image_labels(_write(tmp_path, "l.csv", LABEL_HEADER + "a,/m/0bt9lr,0\nb,/m/0bt9lr,1\n"))
    out = F.expand_image_labels(labels, h)
    assert out[out.ImageID == "a"].LabelName.tolist() == ["/m/0bt9lr"]  # no Animal from a negative Dog
    assert out[out.ImageID == "b"].LabelName.tolist() == ["/m/0bt9lr", "/m/0jbk"]


def test_labels_outside_the_hierarchy_are_errors(tmp_path):
    h = F.LabelHierarchy.from_file(_golden("main", "hierarchy.json"))
    boxes = F.read_gt_boxes(_write(tmp_path, "b.csv", BOX_HEADER + "a,/m/0bl9f,0.1,0.5,0.2,0.6,0\n"
                                                                  "a,/m/xyz,0.1,0.5,0.2,0.6,0\n"))
    with pytest.raises(F.OpenImagesFormatError, match="not in the hierarchy.*line 2, 3"):
        F.expand_boxes(boxes, h, "b.csv")
    with pytest.raises(F.OpenImagesFormatError, match="own ancestor"):
        F.LabelHierarchy.from_json({"LabelName": "r", "Subcategory": [{"LabelName": "a", "Subcategory": [
            {"LabelName": "a"}]}]})
    with pytest.raises(F.OpenImagesFormatError, match="not valid JSON"):
        F.LabelHierarchy.from_file(_write(tmp_path, "h.json", "{"))


# ---------------------------------------------------------------------------------------------
# Metrics CSV and the command-line tool


def test_metric_names_follow_the_reference():
    assert F.reference_metric_names(0.5) == ("OpenImagesDetectionChallenge_Precision/mAP@0.5IOU",
                                             "OpenImagesDetectionChallenge_PerformanceByCategory/AP@0.5IOU/")
    assert F.reference_metric_names(0.75)[0] == "OpenImagesDetectionChallenge_Precision/mAP@0.75IOU"
    out = io.StringIO()
    F.write_metrics_csv(out, [("a", 0.5), ("b", float("nan"))])
    assert out.getvalue() == "a,0.5\r\nb,nan\r\n"


def _compare_csv(path: Path, reference: Path) -> None:
    got, want = F.read_metrics_csv(path), F.read_metrics_csv(reference)
    assert [n for n, _ in got] == [n for n, _ in want]
    for (name, g), (_, w) in zip(got, want):
        assert (np.isnan(g) and np.isnan(w)) or abs(g - w) <= 1e-9, name


def _main_case_args() -> list[str]:
    """The unexpanded golden 'main' files with hierarchy and label map."""
    files = {"--boxes": "gt_boxes.csv", "--labels": "gt_image_labels.csv", "--hierarchy": "hierarchy.json",
             "--labelmap": "labelmap.pbtxt", "--detections": "detections.csv"}
    return [arg for flag, name in files.items() for arg in (flag, str(_golden("main", name)))]


def test_cli_expands_and_matches_the_reference_csv(tmp_path):
    tool = _load_tool("oi_eval")
    out = tmp_path / "metrics.csv"
    assert tool.main([*_main_case_args(), "--output", str(out)]) == 0
    _compare_csv(out, _golden("main", "tf_cli_metrics_iou0.5.csv"))


def test_cli_on_reference_expanded_files_with_class_descriptions(tmp_path, capsys):
    tool = _load_tool("oi_eval")
    args = ["--boxes", str(_golden("main", "gt_boxes_expanded.csv")), "--labels",
            str(_golden("main", "gt_image_labels_expanded.csv")), "--class-descriptions",
            str(_golden("main", "class_descriptions.csv")), "--detections", str(_golden("main", "detections.csv"))]
    assert tool.main(args) == 2  # the expanded file repeats a box: an error unless allowed
    assert "--duplicate-boxes keep" in capsys.readouterr().err
    out = tmp_path / "m.csv"
    assert tool.main([*args, "--duplicate-boxes", "keep", "--output", str(out)]) == 0
    _compare_csv(out, _golden("main", "tf_cli_metrics_iou0.5.csv"))
    err = capsys.readouterr().err
    assert "gt_box_duplicates=1" in err and "detections_invalid_box=2" in err


def test_cli_subprocess_on_mpeg_vcm_case_is_byte_identical(tmp_path):
    """Flat MPEG labels, classes taken from the ground truth: the very bytes the TF CLI wrote."""
    out = tmp_path / "m.csv"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "oi_eval.py"),
                           "--boxes", str(_golden("mpeg_vcm", "gt_boxes.csv")),
                           "--labels", str(_golden("mpeg_vcm", "gt_image_labels.csv")),
                           "--detections", str(_golden("mpeg_vcm", "detections.csv")), "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _compare_csv(out, _golden("mpeg_vcm", "tf_cli_metrics_iou0.5.csv"))
    assert out.read_bytes() == _golden("mpeg_vcm", "tf_cli_metrics_iou0.5.csv").read_bytes()


def test_cli_iou_option_renames_rows(tmp_path):
    tool = _load_tool("oi_eval")
    out = tmp_path / "m.csv"
    assert tool.main([*_main_case_args(), "--iou", "0.75", "--output", str(out)]) == 0
    rows = F.read_metrics_csv(out)
    expected = json.loads(_golden("main", "expected_metrics.json").read_text())["results"]["iou_0.75"]
    assert rows[0] == (expected["mAP_metric_name"], pytest.approx(expected["mAP"], abs=1e-9))


def test_cli_bad_input_exit_code_and_message(tmp_path, capsys):
    tool = _load_tool("oi_eval")
    boxes = _write(tmp_path, "b.csv", BOX_HEADER + "a,x,0.1,0.5,0.2,0.6,0\n")
    labels = _write(tmp_path, "l.csv", LABEL_HEADER + "a,x,1\n")
    dets = _write(tmp_path, "d.csv", DET_HEADER + "a,x,0.9,10,50,20,60\n")
    assert tool.main(["--boxes", str(boxes), "--labels", str(labels), "--detections", str(dets)]) == 2
    assert "d.csv" in capsys.readouterr().err
    dets = _write(tmp_path, "d2.csv", DET_HEADER + "a,x,0.9,0.1,0.5,0.2,0.6\na,y,0.9,0.1,0.5,0.2,0.6\n")
    assert tool.main(["--boxes", str(boxes), "--labels", str(labels), "--detections", str(dets)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("OpenImagesDetectionChallenge_Precision/mAP@0.5IOU,1.0\r\n")
    assert "detections_unknown_label=1" in captured.err
