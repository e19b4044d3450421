"""The oiv6_vcm dataset entry, its class mapping table, its config, and tools/check_images.py.

Annotations are MPEG's real files, read in place from ``../shared/data/mpeg-vcm``; the pictures are
small JPEGs written to a temporary folder under the listed names.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, shared_path
from PIL import Image

from vcm_eval.data.images import ImageReadError, read_image
from vcm_eval.data.openimages import (
    ENV_ANNOTATIONS,
    ENV_IMAGES,
    ENV_LIST,
    OpenImagesDataset,
    coco_to_openimages,
    label_of_class,
    picture_size,
    read_image_list,
)
from vcm_eval.evaluation import openimages_files as F
from vcm_eval.evaluation.openimages import OpenImagesEvaluator
from vcm_eval.types import Detections

SIZE = (48, 64)  # (height, width) of the test pictures


@pytest.fixture(scope="module")
def mpeg_dir() -> Path:
    return shared_path("data", "mpeg-vcm")


def _first_names(mpeg_dir: Path, n: int) -> list[str]:
    return read_image_list(mpeg_dir / "detection_validation_input_5k.lst")[:n]


def _write_jpegs(folder: Path, names, size=SIZE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name, quality=80)


@pytest.fixture
def images_20(tmp_path, mpeg_dir) -> Path:
    folder = tmp_path / "images"
    _write_jpegs(folder, _first_names(mpeg_dir, 20))
    return folder


COCO = [c for c in coco_to_openimages().coco_name]


# ---------------------------------------------------------------------------------------------
# Construction and bad configuration


def test_records_are_the_first_names_of_the_list_in_order(mpeg_dir, images_20):
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20)
    names = _first_names(mpeg_dir, 20)
    assert [r.image_id for r in ds.records()] == [n[:-4] for n in names]
    assert [r.path for r in ds.records()] == [images_20 / n for n in names]
    assert ds.records()[0].image_id == "bef50424c62d12c5"
    assert ds.load(ds.records()[0]).shape == (*SIZE, 3)
    assert ds.image_size(ds.records()[0].image_id) == SIZE
    ident = ds.identity()
    assert ident["name"] == "oiv6_vcm" and ident["num_images"] == 20
    assert set(ident["files"]) == {"boxes", "labels", "list"}


@pytest.mark.parametrize("missing, env, words", [
    ("annotations_dir", ENV_ANNOTATIONS, "CompressAI-Vision/tree/main/data/mpeg-vcm"),
    ("images_dir", ENV_IMAGES, "Open Images V6 validation"),
])
def test_unset_folders_name_the_setting_and_where_to_get_the_files(mpeg_dir, images_20, missing, env, words):
    kwargs = {"annotations_dir": mpeg_dir, "images_dir": images_20, missing: None}
    with pytest.raises(ValueError, match=missing) as info:
        OpenImagesDataset(**kwargs)
    assert env in str(info.value) and words in str(info.value)


def test_missing_annotation_file_is_named(tmp_path, images_20):
    with pytest.raises(F.OpenImagesFormatError, match="detection_validation_5k_bbox.csv: no such file"):
        OpenImagesDataset(annotations_dir=tmp_path, images_dir=images_20)


def test_missing_and_corrupt_pictures(mpeg_dir, tmp_path):
    folder = tmp_path / "images"
    names = _first_names(mpeg_dir, 5)
    _write_jpegs(folder, names[:3])
    (folder / names[3]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match=f"1 of 5 listed images are missing.*{names[4]}.*check_images.py"):
        OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=folder, num_images=5)
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=folder, num_images=5, check_images=False)
    with pytest.raises(ImageReadError, match=names[3]):
        ds.load(ds.records()[3])
    with pytest.raises(ImageReadError, match=names[4]):
        ds.load(ds.records()[4])
    with pytest.raises(ImageReadError, match=names[3]):
        ds.image_size(ds.records()[3].image_id)


def test_user_list_replaces_the_ctc_list(mpeg_dir, tmp_path, images_20):
    names = _first_names(mpeg_dir, 20)
    _write_jpegs(images_20, ["not_in_mpeg.jpg"])
    user = tmp_path / "mine.lst"
    user.write_text(f"{names[5]}\n\n{names[2][:-4]}\nnot_in_mpeg.jpg\n")
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, list_file=user)
    assert [r.image_id for r in ds.records()] == [names[5][:-4], names[2][:-4], "not_in_mpeg"]
    assert ds.ground_truth.counts["images_without_gt"] == 1
    result = ds.make_evaluator(COCO).evaluate({})
    assert result["count/images_without_gt"] == 1.0


def test_bad_lists_and_counts(mpeg_dir, tmp_path, images_20):
    user = tmp_path / "dup.lst"
    user.write_text("a.jpg\nb.jpg\na.jpg\n")
    with pytest.raises(F.OpenImagesFormatError, match="line 3: image a is listed again"):
        read_image_list(user)
    user.write_text("sub/a.jpg\n")
    with pytest.raises(F.OpenImagesFormatError, match="folder part"):
        read_image_list(user)
    with pytest.raises(ValueError, match="num_images=6000 but the .* has only 5000"):
        OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=6000)


def test_unknown_ground_truth_label_is_an_error(mpeg_dir, tmp_path, images_20):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "detection_validation_input_5k.lst").write_text((mpeg_dir / "detection_validation_input_5k.lst").read_text())
    (ann / "detection_validation_labels_5k.csv").write_text("ImageID,LabelName,Confidence\n")
    (ann / "detection_validation_5k_bbox.csv").write_text(
        "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\nbef50424c62d12c5,persn,0.1,0.2,0.1,0.2,0\n")
    with pytest.raises(F.OpenImagesFormatError, match="\\['persn'\\] are not in the class list.*line 2"):
        OpenImagesDataset(annotations_dir=ann, images_dir=images_20, num_images=3)


# ---------------------------------------------------------------------------------------------
# Evaluation through the dataset entry (pixel detections, model class indices)


def _gt_tables(mpeg_dir: Path, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    boxes = F.read_gt_boxes(mpeg_dir / "detection_validation_5k_bbox.csv")
    labels = F.read_image_labels(mpeg_dir / "detection_validation_labels_5k.csv")
    return boxes[boxes.ImageID.isin(ids)], labels[labels.ImageID.isin(ids)]


def _pixel_detections(boxes: pd.DataFrame, ids: list[str], class_names: list[str], score: float = 0.9):
    index = {name.replace(" ", "_"): k for k, name in enumerate(class_names)}
    h, w = SIZE
    out = {}
    for image_id in ids:
        rows = boxes[boxes.ImageID == image_id]
        px = np.stack([rows.XMin * w, rows.YMin * h, rows.XMax * w, rows.YMax * h], axis=1) if len(rows) else []
        out[image_id] = Detections(np.asarray(px).reshape(-1, 4), np.full(len(rows), score),
                                   [index[n] for n in rows.LabelName])
    return out


def test_evaluator_maps_classes_and_normalises_pixel_boxes(mpeg_dir, images_20):
    """Detections = the non-group-of boxes of the 20 images, in pixels, with COCO class indices.
    As in the metric's real-GT test, AP_c = N_c / (N_c + G_c): precision 1, group-of boxes missed."""
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20)
    ids = [r.image_id for r in ds.records()]
    boxes, _ = _gt_tables(mpeg_dir, ids)
    evaluator = ds.make_evaluator(COCO)
    assert isinstance(evaluator, OpenImagesEvaluator) and evaluator.headline == "map_50"
    result = evaluator.evaluate(_pixel_detections(boxes[~boxes.IsGroupOf], ids, COCO))
    found = (boxes[~boxes.IsGroupOf].groupby("LabelName").size() / boxes.groupby("LabelName").size()).fillna(0)
    for label, want in found.items():
        assert result[f"ap_50/{label}"] == pytest.approx(want, abs=1e-12), label
    assert result["map_50"] == pytest.approx(found.mean(), abs=1e-12)
    assert result["num_gt_instances"] == len(boxes)
    assert set(result) >= {"map_50", "num_detections"}
    assert {c.name for c in ds.categories} == {k[len("ap_50/"):] for k in result if k.startswith("ap_50/")}


def test_evaluator_counts_unmapped_and_unverified_classes(mpeg_dir, images_20):
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20)
    image_id = ds.records()[0].image_id
    names = [*COCO, "unicorn"]
    dets = {image_id: Detections([[1, 1, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]], [0.5, 0.5, 0.5],
                                 [80, COCO.index("toothbrush"), COCO.index("airplane")])}
    result = ds.make_evaluator(names).evaluate(dets)
    assert result["count/detections_unmapped_class"] == 1.0
    assert result["count/detections_unverified"] == 1.0  # the toothbrush: not verified on this image
    assert result["num_detections"] == 3.0
    with pytest.raises(ValueError, match="not trained for these classes"):
        ds.make_evaluator(["unicorn"])


def test_evaluator_rejects_boxes_outside_the_image_and_bad_classes(mpeg_dir, images_20):
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20)
    ev = ds.make_evaluator(COCO)
    image_id = ds.records()[0].image_id
    with pytest.raises(ValueError, match="leave the image"):
        ev.evaluate({image_id: Detections([[0, 0, SIZE[1] + 5, 10]], [0.5], [0])})
    with pytest.raises(ValueError, match="outside the model's 80 classes"):
        ev.evaluate({image_id: Detections([[0, 0, 5, 10]], [0.5], [80])})


def test_iou_threshold_names_the_headline(mpeg_dir, images_20):
    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20, iou_threshold=0.75)
    ev = ds.make_evaluator(COCO)
    result = ev.evaluate({})
    assert ev.headline == "map_75" and "map_75" in result and result["map_75"] == 0.0
    assert any(k.startswith("ap_75/") for k in result)


def test_general_open_images_format_with_mids_and_hierarchy(tmp_path):
    """Golden 'main' files as a dataset: Open Images MIDs, expanded with the hierarchy. Image …001 has
    only a Man box; a COCO 'person' detection on it maps to Person (/m/01g317) and is a TP only
    because expansion copies the Man box to Person."""
    folder = shared_path("golden", "openimages", "main")
    images = tmp_path / "images"
    _write_jpegs(images, ["abcdef0000000001.jpg"])
    user = tmp_path / "one.lst"
    user.write_text("abcdef0000000001.jpg\n")
    ds = OpenImagesDataset(annotations_dir=folder, images_dir=images, list_file=user,
                           boxes_file="gt_boxes.csv", labels_file="gt_image_labels.csv", name="oi_golden",
                           label_format="oi_mid", hierarchy_file="hierarchy.json",
                           class_descriptions_file="class_descriptions.csv")
    assert {c.name: c.display_name for c in ds.categories} == {"/m/04yx4": "Man", "/m/01g317": "Person"}
    h, w = SIZE
    det = Detections([[0.1 * w, 0.1 * h, 0.4 * w, 0.9 * h]], [0.9], [COCO.index("person")])
    result = ds.make_evaluator(COCO).evaluate({"abcdef0000000001": det})
    assert result["ap_50//m/01g317"] == 1.0
    assert result["ap_50//m/04yx4"] == 0.0  # no detector class maps to Man
    assert result["map_50"] == 0.5


def test_picture_size_follows_exif_orientation(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (64, 48)).save(path, exif=exif)
    assert picture_size(path) == (64, 48)
    assert read_image(path).shape[:2] == (64, 48)


# ---------------------------------------------------------------------------------------------
# The class table


def _torchvision_coco_names() -> list[str]:
    """torchvision's COCO category names (``models/_meta.py``) without the N/A gaps, read from the
    source file so that the test does not pay for importing torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        pytest.skip("torchvision is not installed")
    tree = ast.parse((Path(spec.origin).parent / "models" / "_meta.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_COCO_CATEGORIES":
            return [c for c in ast.literal_eval(node.value) if c not in ("N/A", "__background__")]
    raise AssertionError("torchvision/models/_meta.py has no _COCO_CATEGORIES")


def test_coco_table_matches_detector_names_and_mpeg_labels(mpeg_dir):
    table = coco_to_openimages()
    assert table.coco_name.tolist() == _torchvision_coco_names()
    assert table.coco_index.astype(int).tolist() == list(range(80))
    # MPEG's spelling is CompressAI-Vision's normalisation of the COCO name.
    assert table.mpeg_vcm_label.tolist() == [n.lower().replace(" ", "_") for n in table.coco_name]
    assert table.oi_mid.is_unique and table.oi_display_name.is_unique
    assert (table.match == np.where(table.coco_name.str.lower() == table.oi_display_name.str.lower(),
                                    "name", "manual")).all()
    boxes = F.read_gt_boxes(mpeg_dir / "detection_validation_5k_bbox.csv")
    labels = F.read_image_labels(mpeg_dir / "detection_validation_labels_5k.csv")
    used = set(boxes.LabelName) | set(labels.LabelName)
    assert len(used) == 47 and used <= set(table.mpeg_vcm_label)
    # MIDs the golden README states for these classes (real Open Images MIDs)
    mids = label_of_class("oi_mid")
    assert {k: mids[k] for k in ("person", "car", "bus", "bicycle", "airplane", "dog", "cat", "bird")} == {
        "person": "/m/01g317", "car": "/m/0k4j", "bus": "/m/01bjv", "bicycle": "/m/0199g",
        "airplane": "/m/0cmf2", "dog": "/m/0bt9lr", "cat": "/m/01yrx", "bird": "/m/015p6"}
    assert label_of_class("mpeg_vcm")["traffic light"] == "traffic_light"
    with pytest.raises(ValueError, match="label_format"):
        label_of_class("coco")


# ---------------------------------------------------------------------------------------------
# Config


def _compose(monkeypatch, env: dict[str, str | None], num_images=3):
    from omegaconf import OmegaConf

    for key in (ENV_ANNOTATIONS, ENV_IMAGES, ENV_LIST):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dataset = OmegaConf.load(REPO_ROOT / "conf" / "dataset" / "oiv6_vcm.yaml")
    return OmegaConf.create({"ctc": {"num_images": num_images}, "dataset": dataset})


def test_config_builds_the_dataset_from_the_environment(monkeypatch, mpeg_dir, images_20):
    from hydra.utils import instantiate

    cfg = _compose(monkeypatch, {ENV_ANNOTATIONS: str(mpeg_dir), ENV_IMAGES: str(images_20)})
    ds = instantiate(cfg.dataset, _convert_="all")
    assert isinstance(ds, OpenImagesDataset) and ds.name == "oiv6_vcm"
    assert [r.image_id for r in ds.records()] == [n[:-4] for n in _first_names(mpeg_dir, 3)]


def test_config_without_environment_says_what_to_set(monkeypatch, images_20):
    from hydra.utils import instantiate

    cfg = _compose(monkeypatch, {ENV_IMAGES: str(images_20)})
    assert cfg.dataset.annotations_dir is None
    with pytest.raises(Exception, match=ENV_ANNOTATIONS):
        instantiate(cfg.dataset, _convert_="all")


# ---------------------------------------------------------------------------------------------
# tools/check_images.py


def _check_tool():
    spec = importlib.util.spec_from_file_location("tool_check_images", REPO_ROOT / "tools" / "check_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_images_reports_missing_and_unreadable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV_IMAGES, raising=False)
    folder = tmp_path / "images"
    _write_jpegs(folder, ["a.jpg", "b.jpg"])
    (folder / "c.jpg").write_bytes(b"garbage")
    lst = tmp_path / "l.lst"
    lst.write_text("a.jpg\nb\nc.jpg\nd.jpg\n")
    tool = _check_tool()
    assert tool.main(["--images", str(folder), "--list", str(lst), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert f"missing {folder / 'd.jpg'}" in out.out and f"unreadable {folder / 'c.jpg'}" in out.out
    assert "2 of 4 pictures readable, 1 missing, 1 unreadable" in out.err
    assert tool.main(["--images", str(folder), "--list", str(lst), "--num-images", "2", "--no-progress"]) == 0
    assert tool.main(["--list", str(lst)]) == 2  # no picture folder given or set


def test_check_images_uses_the_environment_for_the_mpeg_list(monkeypatch, mpeg_dir, images_20, capsys):
    monkeypatch.setenv(ENV_ANNOTATIONS, str(mpeg_dir))
    monkeypatch.setenv(ENV_IMAGES, str(images_20))
    monkeypatch.delenv(ENV_LIST, raising=False)
    tool = _check_tool()
    assert tool.main(["--num-images", "20", "--no-progress"]) == 0
    assert tool.main(["--num-images", "21", "--no-progress"]) == 1
    assert "missing" in capsys.readouterr().out


def test_dataset_and_evaluator_survive_pickling(mpeg_dir, images_20):
    """Executors move datasets and evaluators between processes."""
    import pickle

    ds = OpenImagesDataset(annotations_dir=mpeg_dir, images_dir=images_20, num_images=20)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.records() == ds.records() and copy.identity() == ds.identity()
    ev = pickle.loads(pickle.dumps(ds.make_evaluator(COCO)))
    image_id = ds.records()[0].image_id  # one airplane box covering most of the picture
    h, w = SIZE
    result = ev.evaluate({image_id: Detections([[0.16 * w, 0.17 * h, 0.82 * w, 0.82 * h]], [0.9],
                                               [COCO.index("airplane")])})
    assert result["ap_50/airplane"] > 0
