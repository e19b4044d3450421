"""The synthetic set: determinism, annotations that match the pixels, the COCO folder and dataset entry."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vcm_eval.data.coco import CocoDataset
from vcm_eval.data.synthetic import (
    CLASS_NAMES,
    MAX_OBJECT_FRACTION,
    MIN_OBJECT_PX,
    SyntheticDataset,
    generate_image,
    split_folder,
    write_split,
)
from vcm_eval.evaluation.coco import CocoEvaluator

# Regression anchor for the generator: sha256 of the pixels and of the JSON of seed 0, val, 3 pictures.
# A change to either means GENERATOR_VERSION must be bumped (cached sets on users' machines are stale).
PINNED_PIXELS_SHA256 = "238142826c0343fdf25b2b441c5edff81a9b11a4c15831035030037591f5927a"
PINNED_JSON_SHA256 = "c779f21c4b1df91e0c4a6de8f58aee8f3722839cad31e3ed1dcf3b27b81a9aa8"


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    a = write_split(tmp_path / "a", seed=5, split="val", size=6)
    b = write_split(tmp_path / "b", seed=5, split="val", size=6)
    ha, hb = _tree_hashes(a), _tree_hashes(b)
    assert len(ha) == 7 and ha == hb


def test_different_seed_or_split_gives_different_pictures():
    a, _ = generate_image(0, "val", 0)
    b, _ = generate_image(1, "val", 0)
    c, _ = generate_image(0, "train", 0)
    assert not (a.shape == b.shape and np.array_equal(a, b))
    assert not (a.shape == c.shape and np.array_equal(a, c))


def test_picture_depends_only_on_its_index(tmp_path):
    small = write_split(tmp_path / "small", seed=2, split="val", size=3)
    large = write_split(tmp_path / "large", seed=2, split="val", size=5)
    for i in range(3):
        name = f"images/{i:06d}.png"
        assert (small / name).read_bytes() == (large / name).read_bytes()


def test_pixels_and_json_are_pinned(tmp_path):
    # The whole content of seed 0, val, pictures 0..2 (pixels, and the JSON bytes) on every machine.
    folder = write_split(tmp_path / "v", seed=0, split="val", size=3)
    pixels = hashlib.sha256()
    for i in range(3):
        pixels.update(generate_image(0, "val", i)[0].tobytes())
    json_sha = hashlib.sha256((folder / "annotations.json").read_bytes()).hexdigest()
    assert (pixels.hexdigest(), json_sha) == (PINNED_PIXELS_SHA256, PINNED_JSON_SHA256), (
        "the generator's output changed: bump GENERATOR_VERSION (cached sets are stale) and re-pin")
    doc = json.loads((folder / "annotations.json").read_text())
    assert doc["info"] == {"description": "vcm_eval synthetic detection set", "generator_version": 1,
                           "seed": 0, "split": "val", "size": 3}
    assert [c["name"] for c in doc["categories"]] == list(CLASS_NAMES)


def test_boxes_match_the_drawn_objects():
    sides, classes = [], set()
    for index in range(40):
        rgb, objects = generate_image(0, "train", index)
        h, w = rgb.shape[:2]
        assert min(h, w) == 320 and 320 <= max(h, w) <= 480
        assert 1 <= len(objects)
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert 0 < obj.area <= (x1 - x0) * (y1 - y0)
            # The box is the extent of the object's visible pixels: each edge row/column holds object
            # colour. Objects have saturation (max - min channel) >= 57, backgrounds <= 31.
            patch = rgb[y0:y1, x0:x1].astype(int)
            sat = patch.max(axis=2) - patch.min(axis=2)
            assert sat[0].max() > 45 and sat[-1].max() > 45 and sat[:, 0].max() > 45 and sat[:, -1].max() > 45
            sides.append(math.sqrt((x1 - x0) * (y1 - y0)))
            classes.add(obj.class_index)
    sides = np.asarray(sides)
    assert classes == set(range(len(CLASS_NAMES)))
    # Scales span every FPN level: objects under 16 px and over 160 px, and every octave populated.
    assert sides.min() < 2 * MIN_OBJECT_PX and sides.max() > 0.5 * MAX_OBJECT_FRACTION * 320
    counts, _ = np.histogram(sides, bins=[0, 16, 32, 64, 128, 1000])
    assert (counts >= 0.08 * len(sides)).all(), counts


def test_objects_overlap_in_some_pictures():
    occluded = 0
    for index in range(30):
        _, objects = generate_image(0, "train", index)
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            if obj.area < 0.45 * (x1 - x0) * (y1 - y0):  # a disc fills ~0.79 of its box; occluded ones less
                occluded += 1
    assert occluded > 0


def test_dataset_entry_generates_once_and_limits(tmp_path):
    ds = SyntheticDataset(split="val", num_images=4, root=tmp_path, seed=0, size=8)
    folder = split_folder(tmp_path, seed=0, split="val", size=8)
    assert (folder / "annotations.json").is_file()
    assert [r.image_id for r in ds.records()] == ["1", "2", "3", "4"]
    img = ds.load(ds.records()[0])
    ref, _ = generate_image(0, "val", 0)
    assert np.array_equal(img, ref)
    mtime = (folder / "annotations.json").stat().st_mtime_ns
    again = SyntheticDataset(split="val", num_images=None, root=tmp_path, seed=0, size=8)
    assert len(again.records()) == 8 and (folder / "annotations.json").stat().st_mtime_ns == mtime
    assert isinstance(ds, CocoDataset) and isinstance(ds.make_evaluator(CLASS_NAMES), CocoEvaluator)
    assert ds.fingerprint(ds.records()[0]) == again.fingerprint(again.records()[0])
    assert ds.identity()["seed"] == 0


def test_dataset_entry_rejects_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="dataset.size"):
        SyntheticDataset(split="val", num_images=10, root=tmp_path, size=5)
    with pytest.raises(ValueError, match="unknown synthetic split"):
        SyntheticDataset(split="test", root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_coco_dataset_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file"):
        CocoDataset(annotations=tmp_path / "nope.json", images=tmp_path)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder"):
        CocoDataset(annotations=tmp_path / "a.json", images=tmp_path / "imgs")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        CocoDataset(annotations=tmp_path / "a.json", images=tmp_path)
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json"):
        CocoDataset(annotations=tmp_path / "b.json", images=tmp_path)


def test_coco_dataset_orders_by_id_and_limits(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "x.png", "width": 4, "height": 4},
                      {"id": 2, "file_name": "y.png", "width": 4, "height": 4},
                      {"id": 5, "file_name": "z.png", "width": 4, "height": 4}],
           "categories": [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    ds = CocoDataset(annotations=tmp_path / "ann.json", images=tmp_path, num_images=2)
    assert [r.image_id for r in ds.records()] == ["2", "5"]
    assert ds.records()[0].path == tmp_path / "y.png"
    assert ds.class_names == ["a", "b"]
    assert ds.missing_files() == [tmp_path / "y.png", tmp_path / "z.png"]


def test_hydra_configs_build_the_datasets(tmp_path, monkeypatch):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    for var in ("VCM_EVAL_COCO_ANNOTATIONS", "VCM_EVAL_COCO_IMAGES"):
        monkeypatch.delenv(var, raising=False)
    conf = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    cfg = OmegaConf.create({"ctc": {"num_images": 3}, "paths": {"data_root": str(tmp_path)},
                            "dataset": OmegaConf.load(conf / "synthetic.yaml")})
    ds = instantiate(cfg.dataset, _convert_="all")
    assert isinstance(ds, SyntheticDataset) and len(ds.records()) == 3
    assert ds.records()[0].path.is_relative_to(tmp_path / "synthetic")

    folder = write_split(tmp_path / "coco", seed=0, split="val", size=2)
    cfg = OmegaConf.create({"ctc": {"num_images": None}, "paths": {"data_root": str(tmp_path)},
                            "dataset": OmegaConf.load(conf / "coco.yaml")})
    cfg.dataset.annotations = str(folder / "annotations.json")
    cfg.dataset.images = str(folder)
    ds = instantiate(cfg.dataset, _convert_="all")
    assert isinstance(ds, CocoDataset) and len(ds.records()) == 2
    # Unset, the generic COCO entry points at ${paths.data_root}/coco and says which file is missing.
    cfg = OmegaConf.create({"ctc": {"num_images": None}, "paths": {"data_root": str(tmp_path)},
                            "dataset": OmegaConf.load(conf / "coco.yaml")})
    with pytest.raises(Exception, match="instances_val2017.json"):
        instantiate(cfg.dataset, _convert_="all")


def test_make_synthetic_dataset_tool(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic_dataset.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tmp_path), "--splits", "val", "train", "--val-size", "3", "--train-size", "2"]) == 0
    val = json.loads((tmp_path / "val" / "annotations.json").read_text())
    train = json.loads((tmp_path / "train" / "annotations.json").read_text())
    assert len(val["images"]) == 3 and len(train["images"]) == 2
    assert all((tmp_path / "val" / im["file_name"]).is_file() for im in val["images"])
    assert tool.main([str(tmp_path), "--splits", "val", "--val-size", "3"]) == 0
    assert "kept existing" in capsys.readouterr().out
