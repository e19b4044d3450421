"""Segmentation as a task of the CTC (``ctc.task: segmentation``, issue 15 item 3).

Covers: masks as COCO RLE in detection records (box-only records unchanged); the synthetic set's masks file
(``annotations.json`` untouched); a corrupt mask annotation stops with an error naming the file and the
annotation; mask mAP scoring; the embedded model's mask branch (C-layers and boxes those of the detector, the
shipped branch reaching its recorded mask mAP); and segmentation end to end on a few pictures, reusing the
C-layers and bitstreams of a detection run in the same store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.data.coco import CocoDataset
from vcm_eval.data.masks import check_segmentation, decode_rles, encode_masks
from vcm_eval.data.synthetic import MASKS_FILE, SyntheticDataset, generate_image, split_folder
from vcm_eval.evaluation.coco import CocoEvaluator, ground_truth_as_detections
from vcm_eval.hashing import file_sha256
from vcm_eval.models.base import WeightsError
from vcm_eval.models.embedded import PACKAGED_MASK_WEIGHTS, build_embedded_model
from vcm_eval.store import decode_record
from vcm_eval.types import Detections

STYLE = "natural"
#: the val pictures whose mask mAP the shipped branch's .json does not record: re-measured loosely
MAP_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def seg_dataset(data_root) -> SyntheticDataset:
    return SyntheticDataset(split="val", num_images=3, root=data_root, size=6, style=STYLE, task="segmentation")


def _gt_with_masks(dataset: CocoDataset) -> dict[str, Detections]:
    """The ground truth as score-1 detections carrying their masks (RLEs)."""
    out = ground_truth_as_detections(dataset.ground_truth, dataset.class_names)
    for image_id, dets in out.items():
        anns = [a for a in dataset.ground_truth["annotations"] if str(a["image_id"]) == image_id]
        out[image_id] = Detections(dets.boxes, dets.scores, dets.classes, rles=[a["segmentation"] for a in anns])
    return {k: v for k, v in out.items() if k in {r.image_id for r in dataset.records()}}


# --------------------------------------------------------------------------- masks in records


def test_box_records_are_unchanged_and_masks_round_trip_as_rle():
    boxes, scores, classes = np.array([[1, 2, 5, 6], [0, 0, 3, 3]]), np.array([0.9, 0.4]), np.array([1, 0])
    plain = Detections(boxes, scores, classes).to_dict()
    assert list(plain) == ["boxes", "scores", "classes"]  # the record of a box detector, as before masks
    masks = np.zeros((2, 8, 10), dtype=bool)
    masks[0, 2:6, 1:5] = True
    masks[1, 0:3, 0:3] = True
    record = json.loads(json.dumps(Detections(boxes, scores, classes, masks=masks).to_dict()))
    assert [r["size"] for r in record["masks"]] == [[8, 10], [8, 10]]
    back = Detections.from_dict(record)
    assert back.masks is None and back.has_masks and len(back.rles) == 2  # kept compact, decoded for scoring
    np.testing.assert_array_equal(decode_rles(back.rles), masks)
    assert back.to_dict() == record
    assert not Detections.from_dict(plain).has_masks
    with pytest.raises(ValueError, match="one mask RLE per detection"):
        Detections(boxes, scores, classes, rles=record["masks"][:1])


def test_check_segmentation_accepts_coco_forms_and_names_what_is_wrong():
    rle = encode_masks(np.ones((1, 4, 5), dtype=bool))[0]
    assert check_segmentation(rle, 4, 5) is None
    assert check_segmentation([[0, 0, 4, 0, 4, 3]], 4, 5) is None
    assert check_segmentation({"size": [4, 5], "counts": [0, 20]}, 4, 5) is None
    assert "size" in check_segmentation(rle, 5, 4)
    assert "cannot decode" in check_segmentation({**rle, "counts": "!!garbage"}, 4, 5)
    assert "polygon" in check_segmentation([[0, 0, 4]], 4, 5)
    assert "neither" in check_segmentation("mask", 4, 5)


# --------------------------------------------------------------------------- the synthetic set's masks


def test_masks_file_holds_the_visible_pixels_and_leaves_annotations_json_alone(data_root, seg_dataset):
    folder = split_folder(data_root, seed=0, split="val", size=6, style=STYLE)
    plain = SyntheticDataset(split="val", num_images=3, root=data_root, size=6, style=STYLE)
    assert plain.annotation_file.name == "annotations.json" and seg_dataset.annotation_file.name == MASKS_FILE
    before = hashlib.sha256((folder / "annotations.json").read_bytes()).hexdigest()
    boxes = json.loads((folder / "annotations.json").read_text())
    masked = json.loads((folder / MASKS_FILE).read_text())
    # the same document, each annotation with a segmentation added
    assert [{k: v for k, v in a.items() if k != "segmentation"} for a in masked["annotations"]] == boxes["annotations"]
    _, objects = generate_image(0, "val", 0, STYLE)
    anns = [a for a in masked["annotations"] if a["image_id"] == 1]
    for ann, obj in zip(anns, objects, strict=True):
        full = decode_rles([ann["segmentation"]])[0]
        x0, y0, x1, y1 = obj.box
        assert full.sum() == ann["area"] == obj.area and not full[:y0].any() and not full[:, x1:].any()
        np.testing.assert_array_equal(full[y0:y1, x0:x1], obj.mask)
    assert hashlib.sha256((folder / "annotations.json").read_bytes()).hexdigest() == before
    assert "task" not in plain.identity()
    assert seg_dataset.identity()["task"] == "segmentation"


def test_corrupt_mask_annotation_names_the_file_and_the_annotation(data_root, seg_dataset, tmp_path):
    folder = tmp_path / "split"
    shutil.copytree(split_folder(data_root, seed=0, split="val", size=6, style=STYLE), folder)
    doc = json.loads((folder / MASKS_FILE).read_text())
    victim = next(a for a in doc["annotations"] if a["image_id"] == 2)
    victim["segmentation"]["counts"] = victim["segmentation"]["counts"][:-3]  # a truncated RLE
    (folder / MASKS_FILE).write_text(json.dumps(doc))
    pattern = rf"{MASKS_FILE}: annotation {victim['id']} \(image 2\): corrupt mask"
    with pytest.raises(ValueError, match=pattern):
        CocoDataset(folder / MASKS_FILE, folder, num_images=3, task="segmentation")
    # a synthetic split folder with that file is refused the same way, before any sweep
    root = tmp_path / "root"
    target = split_folder(root, seed=0, split="val", size=6, style=STYLE)
    shutil.copytree(folder, target)
    with pytest.raises(ValueError, match=pattern):
        SyntheticDataset(split="val", num_images=3, root=root, size=6, style=STYLE, task="segmentation")
    # a missing mask is named too; pictures outside the evaluated ones are not checked
    del victim["segmentation"]
    (folder / MASKS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"annotation {victim['id']} \(image 2\) has no 'segmentation'"):
        CocoDataset(folder / MASKS_FILE, folder, num_images=3, task="segmentation")
    assert len(CocoDataset(folder / MASKS_FILE, folder, num_images=1, task="segmentation").records()) == 1
    # box scoring does not read masks at all
    assert len(CocoDataset(folder / MASKS_FILE, folder, num_images=3).records()) == 3


# --------------------------------------------------------------------------- scoring


def test_mask_map_of_the_ground_truth_is_one_and_box_masks_score_less(seg_dataset):
    evaluator = seg_dataset.make_evaluator(seg_dataset.class_names)
    assert isinstance(evaluator, CocoEvaluator) and evaluator.headline == "segm_map_50"
    gt = _gt_with_masks(seg_dataset)
    metrics = evaluator.evaluate(gt)
    assert metrics["segm_map_50"] == pytest.approx(1.0) and metrics["segm_map_50_95"] == pytest.approx(1.0)
    assert metrics["map_50"] == pytest.approx(1.0)  # box metrics of the same detections beside them
    # filled boxes as masks: boxes still perfect, masks of discs, rings, stars... no longer
    boxy = {}
    for image_id, dets in gt.items():
        h, w = decode_rles(dets.rles[:1]).shape[1:] if len(dets) else (1, 1)
        full = np.zeros((len(dets), h, w), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(dets.boxes.astype(int)):
            full[k, y0:y1, x0:x1] = True
        boxy[image_id] = Detections(dets.boxes, dets.scores, dets.classes, masks=full)
    scored = evaluator.evaluate(boxy)
    assert scored["map_50"] == pytest.approx(1.0) and scored["segm_map_50_95"] < 0.9
    # detections without masks cannot be scored as segmentation
    with pytest.raises(ValueError, match="no instance masks"):
        evaluator.evaluate({k: Detections(v.boxes, v.scores, v.classes) for k, v in gt.items()})
    # the detection evaluator of the same set is untouched: no segm_ metrics
    box_metrics = SyntheticDataset(split="val", num_images=3, root=seg_dataset.image_dir.parents[1],
                                   size=6, style=STYLE).make_evaluator(seg_dataset.class_names).evaluate(gt)
    assert not any(k.startswith("segm_") for k in box_metrics)


# --------------------------------------------------------------------------- the model


def _require_mask_weights() -> None:
    if not PACKAGED_MASK_WEIGHTS.is_file():
        pytest.skip(f"{PACKAGED_MASK_WEIGHTS} absent (tools/train_embedded_mask_head.py writes it)")


@pytest.fixture(scope="module")
def models():
    _require_mask_weights()
    return build_embedded_model(), build_embedded_model(task="segmentation")


def test_mask_branch_keeps_c_layers_and_boxes_and_adds_masks(models):
    detector, segmenter = models
    rgb, _ = generate_image(0, "val", 1, STYLE)
    feats, seg_feats = detector.encode(rgb), segmenter.encode(rgb)
    for level in feats.layers:
        np.testing.assert_array_equal(feats.layers[level], seg_feats.layers[level])
    boxes, masked = detector.decode(feats), segmenter.decode(seg_feats)
    np.testing.assert_array_equal(boxes.boxes, masked.boxes)
    np.testing.assert_array_equal(boxes.scores, masked.scores)
    np.testing.assert_array_equal(boxes.classes, masked.classes)
    assert boxes.masks is None and masked.masks.shape == (len(masked), *rgb.shape[:2])
    np.testing.assert_array_equal(segmenter.detect_unsplit(rgb).masks, masked.masks)
    # shared C-layer identity (cache keys), distinct detection identity
    assert segmenter.encoder_identity() == detector.identity() == detector.encoder_identity()
    assert segmenter.identity() != detector.identity() and segmenter.identity()["name"] == "embedded_mask"


def test_shipped_mask_branch_describes_itself_and_reaches_its_map(models, tmp_path):
    detector, segmenter = models
    meta = json.loads(PACKAGED_MASK_WEIGHTS.with_suffix(".json").read_text())
    assert meta["sha256"] == file_sha256(PACKAGED_MASK_WEIGHTS) == segmenter.identity()["mask_head"]["weights_sha256"]
    assert meta["detector_sha256"] == detector.weights_sha256 and PACKAGED_MASK_WEIGHTS.stat().st_size < 1e6
    assert meta["val"]["segm_map_50"] >= 0.5
    ds = SyntheticDataset(split="val", num_images=20, root=tmp_path, style=STYLE, task="segmentation")
    dets = {r.image_id: segmenter.detect(ds.load(r)) for r in ds.records()}
    metrics = ds.make_evaluator(segmenter.class_names).evaluate(dets)
    # 20 of the 100 recorded pictures: a sanity bound, not a reproduction
    assert metrics["segm_map_50"] >= meta["val"]["segm_map_50"] - 0.15


def test_mask_weights_for_other_detector_weights_or_corrupt_are_refused(tmp_path):
    _require_mask_weights()
    pth, desc = tmp_path / "m.pth", tmp_path / "m.json"
    shutil.copyfile(PACKAGED_MASK_WEIGHTS, pth)
    meta = json.loads(PACKAGED_MASK_WEIGHTS.with_suffix(".json").read_text())
    desc.write_text(json.dumps({**meta, "detector_sha256": "0" * 64}))
    with pytest.raises(WeightsError, match=r"m\.pth: this mask head was trained on detector weights 0000"):
        build_embedded_model(task="segmentation", mask_weights=pth)
    desc.write_text(json.dumps(meta))
    data = bytearray(pth.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pth.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"m\.pth: corrupt.*train_embedded_mask_head\.py"):
        build_embedded_model(task="segmentation", mask_weights=pth)
    with pytest.raises(WeightsError, match=r"nowhere\.pth.*not found"):
        build_embedded_model(task="segmentation", mask_weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="unknown task"):
        build_embedded_model(task="panoptic")


# --------------------------------------------------------------------------- end to end


def _cfg(root: Path, data_root: Path, *overrides: str, tracking: bool = False):
    base = [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={data_root}",
            "executor=local", "progress=false", "dataset.size=6", "ctc.num_images=3", "ctc.qps.features=[32,42]",
            "ctc.qps.image=[27,42]", "bd.min_points=2", "anchor=[c_layer,image]"]
    base += ([f"tracking.tracking_uri=sqlite:///{root}/mlflow.db", f"tracking.artifact_location=file://{root}/mlart"]
             if tracking else ["tracking=none"])
    return vcm_eval.compose(*base + list(overrides))


def _stored(root: Path, kind: str) -> set[str]:
    return {p.name for p in (root / "store" / kind).rglob("*") if p.is_file()}


def test_segmentation_end_to_end_reuses_the_detection_run(tmp_path, data_root):
    _require_mask_weights()
    detection = run(_cfg(tmp_path, data_root), tmp_path / "det")
    coded, clayers = _stored(tmp_path, "coded"), _stored(tmp_path, "clayers")
    detections = _stored(tmp_path, "detections")
    records = {p: p.read_bytes() for p in (tmp_path / "store" / "detections").rglob("*.json")}

    cfg = _cfg(tmp_path, data_root, "ctc=embedded_segmentation", tracking=True)
    assert cfg.ctc.task == "segmentation" and cfg.model.task == "segmentation" and cfg.dataset.task == "segmentation"
    outcome = run(cfg, tmp_path / "seg")
    # the C-layers and every coded record came from the detection run; only detection was done again
    assert _stored(tmp_path, "coded") == coded and _stored(tmp_path, "clayers") == clayers
    new = _stored(tmp_path, "detections") - detections
    assert len(new) == 3 * (1 + 2 + 2)
    assert all(p.read_bytes() == data for p, data in records.items())  # box records untouched, no masks key
    assert all("masks" not in json.loads(decode_record(data)[1])["detections"] for data in records.values())

    summary = outcome.summary
    coded_rows = summary[summary["qp"].notna()]
    assert np.isfinite(coded_rows["segm_map_50"]).all() and coded_rows["segm_map_50"].between(0, 1).all()
    assert np.isfinite(coded_rows["segm_map_50_95"]).all()
    # the same boxes as the detection run: its box metrics are the segmentation run's box metrics
    merged = summary.merge(detection.summary, on=["entry", "qp"], suffixes=("", "_det"))
    np.testing.assert_allclose(merged["map_50"], merged["map_50_det"])
    np.testing.assert_allclose(merged["avg_bpp"], merged["avg_bpp_det"])
    # mask mAP is the headline of the BD table, the CTC files, the spreadsheet and the report metadata
    bd = pd.read_csv(outcome.files["bd"])
    assert set(bd["metric"]) == {"segm_map_50"} and len(bd) == 2
    meta = json.loads(outcome.files["report_meta"].read_text())
    assert meta["metric"] == "segm_map_50" and meta["ctc"] == "embedded_segmentation"
    ctc = pd.read_csv(outcome.files["ctc_c_layer"], index_col=0)
    rows = summary[summary["entry"] == "c_layer"].sort_values("qp")
    np.testing.assert_allclose(ctc["end_accuracy"], rows["segm_map_50"] * 100)
    entry_sheet = pd.read_excel(outcome.files["xlsx"], sheet_name="c_layer")
    assert {"segm_map_50", "segm_map_50_95", "map_50"} <= set(entry_sheet.columns)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(outcome.mlflow_run_id)
    assert parent.data.tags["task"] == "segmentation" and parent.data.params["ctc.task"] == "segmentation"
    wanted = {"uncompressed_segm_map_50", "uncompressed_segm_map_50_95", "uncompressed_map_50"}
    assert wanted <= set(parent.data.metrics)


def test_segmentation_on_a_box_only_data_set_is_refused(tmp_path, data_root):
    from vcm_eval.cli import check_dataset_task

    class BoxesOnly:
        name, task = "boxes", "detection"

    with pytest.raises(ValueError, match="ctc.task=segmentation, but the data set 'boxes'"):
        check_dataset_task(_cfg(tmp_path, data_root, "ctc=embedded_segmentation"), BoxesOnly())
    with pytest.raises(ValueError, match="unknown task 'panoptic'"):
        check_dataset_task(_cfg(tmp_path, data_root, "ctc.task=panoptic"), BoxesOnly())
