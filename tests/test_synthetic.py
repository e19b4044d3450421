"""The synthetic set: determinism, annotations that match the pixels, the COCO folder and dataset entry,
for both styles (shapes: the original set, pinned since before styles; natural: photographic)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vcm_eval.data import synthetic
from vcm_eval.data.coco import CocoDataset
from vcm_eval.data.synthetic import (
    CLASS_NAMES,
    MAX_OBJECT_FRACTION,
    MIN_OBJECT_PX,
    PHOTOS,
    SyntheticDataset,
    generate_image,
    generate_sample,
    split_folder,
    write_split,
)
from vcm_eval.evaluation.coco import CocoEvaluator

# Regression anchor for the generator: sha256 of the pixels and of the JSON of seed 0, val, 3 pictures.
# A change to either means GENERATOR_VERSION must be bumped (cached sets on users' machines are stale).
PINNED_PIXELS_SHA256 = "238142826c0343fdf25b2b441c5edff81a9b11a4c15831035030037591f5927a"
PINNED_JSON_SHA256 = "c779f21c4b1df91e0c4a6de8f58aee8f3722839cad31e3ed1dcf3b27b81a9aa8"
# The same for the natural style; a change means NATURAL_GENERATOR_VERSION must be bumped.
NATURAL_PINNED_PIXELS_SHA256 = "2ee4943a06ee1b754e1fcb07095cf129cd073d0833b274a8a830a4016dd78c33"
NATURAL_PINNED_JSON_SHA256 = "c3c85c17ec069a1b97a72050aa7cd3a36e4d5c7c7d40074ed03b3087f7e39db2"
# sha256 over the decoded pixels of the photos the natural style is made of (name, shape, bytes in PHOTOS
# order): the files are checked against skimage's registry hashes when loaded, and this also pins their
# decoding (two are JPEGs).
PHOTO_PIXELS_SHA256 = "0aef57acb5fffd75c7166972f27ff99a9157be3d5bed7b5c6b105bd545302cc3"


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("style", ["shapes", "natural"])
def test_same_seed_gives_identical_files(tmp_path, style):
    a = write_split(tmp_path / "a", seed=5, split="val", size=6, style=style)
    b = write_split(tmp_path / "b", seed=5, split="val", size=6, style=style)
    ha, hb = _tree_hashes(a), _tree_hashes(b)
    assert len(ha) == 7 and ha == hb


def test_natural_generation_is_a_pure_function():
    # Twice the same sample (pixels, objects with their masks, sources), in another order of calls.
    first = [generate_sample(0, "val", i, "natural") for i in (0, 1, 2)]
    second = [generate_sample(0, "val", i, "natural") for i in (2, 1, 0)][::-1]
    for a, b in zip(first, second):
        assert np.array_equal(a.rgb, b.rgb) and a.objects == b.objects and a.sources == b.sources
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))
    shapes, _ = generate_image(0, "val", 0)
    assert not (shapes.shape == first[0].rgb.shape and np.array_equal(shapes, first[0].rgb))


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


def test_natural_pixels_and_json_are_pinned(tmp_path):
    # Must hold on every x86-64 CPU: the pixel path has no numpy transcendental function and no float
    # reduction (run it again with NPY_DISABLE_CPU_FEATURES set to check another SIMD path).
    folder = write_split(tmp_path / "v", seed=0, split="val", size=3, style="natural")
    pixels = hashlib.sha256()
    for i in range(3):
        pixels.update(generate_image(0, "val", i, "natural")[0].tobytes())
    json_sha = hashlib.sha256((folder / "annotations.json").read_bytes()).hexdigest()
    assert (pixels.hexdigest(), json_sha) == (NATURAL_PINNED_PIXELS_SHA256, NATURAL_PINNED_JSON_SHA256), (
        "the natural generator's output changed: bump NATURAL_GENERATOR_VERSION (cached sets are stale) and re-pin")
    doc = json.loads((folder / "annotations.json").read_text())
    assert doc["info"] == {"description": "vcm_eval synthetic detection set", "style": "natural",
                           "generator_version": 1, "seed": 0, "split": "val", "size": 3}


def test_natural_photos_are_pinned():
    digest = hashlib.sha256()
    for name, photo in synthetic._photos().items():
        pixels = np.asarray(photo.image)
        digest.update(f"{name}:{pixels.shape}:".encode())
        digest.update(pixels.tobytes())
    assert list(synthetic._photos()) == list(PHOTOS)
    assert digest.hexdigest() == PHOTO_PIXELS_SHA256


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


def _nearest_class_colour(mean_rgb: np.ndarray) -> int:
    """Index of the class whose base colour has the closest chromaticity (colour / brightest channel)."""
    base = np.array([synthetic._CLASS_STYLE[name][0] for name in CLASS_NAMES], dtype=float)
    base /= base.max(axis=1, keepdims=True)
    return int(np.argmin(((base - mean_rgb / max(mean_rgb.max(), 1.0)) ** 2).sum(axis=1)))


def test_natural_annotations_are_the_visible_pixels(tmp_path):
    sides, classes, recognised, judged = [], set(), 0, 0
    for index in range(40):
        sample = generate_sample(0, "train", index, "natural")
        rgb, objects = sample.rgb, sample.objects
        h, w = rgb.shape[:2]
        assert rgb.dtype == np.uint8 and min(h, w) == 320 and 320 <= max(h, w) <= 480
        assert 1 <= len(objects)
        covered = np.zeros((h, w), dtype=np.int32)
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            # The box is the extent of the visible mask and the area its pixel count, exactly.
            assert obj.mask.dtype == bool and obj.mask.shape == (y1 - y0, x1 - x0)
            assert int(obj.mask.sum()) == obj.area > 0
            assert obj.mask[0].any() and obj.mask[-1].any() and obj.mask[:, 0].any() and obj.mask[:, -1].any()
            covered[y0:y1, x0:x1] += obj.mask
            sides.append(math.sqrt((x1 - x0) * (y1 - y0)))
            classes.add(obj.class_index)
            if obj.area >= 64:  # the colour cast: the visible pixels' mean is nearest the class colour
                judged += 1
                mean = rgb[y0:y1, x0:x1][obj.mask].astype(np.int64).sum(axis=0) / obj.area
                recognised += _nearest_class_colour(mean) == obj.class_index
        assert covered.max() <= 1  # visible pixels belong to one object
        # Texture everywhere: no flat 16 x 16 block in the picture (the shapes style is full of them).
        blocks = rgb[: h // 16 * 16, : w // 16 * 16].reshape(h // 16, 16, w // 16, 16, 3).astype(int)
        assert (blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max(axis=-1).min() > 0
    sides = np.asarray(sides)
    assert classes == set(range(len(CLASS_NAMES)))
    assert sides.min() < 2 * MIN_OBJECT_PX and sides.max() > 0.5 * MAX_OBJECT_FRACTION * 320
    assert recognised >= 0.95 * judged, (recognised, judged)

    # The JSON carries exactly these boxes and areas.
    folder = write_split(tmp_path / "n", seed=0, split="train", size=2, style="natural")
    doc = json.loads((folder / "annotations.json").read_text())
    expected = [(i + 1, o.class_index + 1, [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]], o.area)
                for i in range(2) for o in generate_image(0, "train", i, "natural")[1]]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in doc["annotations"]] == expected


def test_natural_pictures_mix_photos():
    for index in range(30):
        sources = generate_sample(0, "train", index, "natural").sources
        names = [name for name, _ in sources]
        assert 2 <= len(names) <= 4 and len(set(names)) == len(names) and set(names) <= set(PHOTOS)
        assert math.isclose(sum(share for _, share in sources), 1.0)
        assert sum(share >= 0.05 for _, share in sources) >= 2, sources  # no picture is a single photo
    assert generate_sample(0, "train", 0).sources == ()


def test_natural_style_names_its_missing_photos(tmp_path, monkeypatch):
    synthetic._photos.cache_clear()
    try:
        # scikit-image not installed (importing vcm_eval.data.synthetic never needed it)
        monkeypatch.setattr(synthetic.importlib.util, "find_spec", lambda name, *a: None)
        with pytest.raises(ImportError, match=r"pip install scikit-image"):
            generate_image(0, "val", 0, "natural")
        with pytest.raises(ImportError, match=r"pip install scikit-image"):
            SyntheticDataset(split="val", root=tmp_path / "a", size=2, style="natural")
        assert not (split_folder(tmp_path / "a", seed=0, split="val", size=2, style="natural")).exists()
        generate_image(0, "val", 0)  # the shapes style does not need it
        monkeypatch.undo()
        # installed, but a photo file is missing
        monkeypatch.setattr(synthetic, "_photo_dir", lambda: tmp_path)
        with pytest.raises(RuntimeError, match=r"astronaut.*pip install scikit-image"):
            generate_image(0, "val", 0, "natural")
    finally:
        synthetic._photos.cache_clear()


def test_style_is_selectable_and_shapes_keeps_its_keys(tmp_path):
    assert split_folder(tmp_path, seed=0, split="val", size=8) == tmp_path / "v1-seed0" / "val-8"
    assert split_folder(tmp_path, seed=0, split="val", size=8, style="shapes") == tmp_path / "v1-seed0" / "val-8"
    assert (split_folder(tmp_path, seed=0, split="val", size=8, style="natural")
            == tmp_path / "natural-v1-seed0" / "val-8")
    shapes = SyntheticDataset(split="val", root=tmp_path, size=2)
    natural = SyntheticDataset(split="val", root=tmp_path, size=2, style="natural")
    folder = split_folder(tmp_path, seed=0, split="val", size=2)
    assert shapes.identity() == {"name": "synthetic-val", "annotations": str(folder / "annotations.json"),
                                 "num_images": 2, "generator_version": 1, "seed": 0, "split": "val", "size": 2}
    assert natural.identity()["style"] == "natural" and natural.identity()["generator_version"] == 1
    assert np.array_equal(natural.load(natural.records()[1]), generate_image(0, "val", 1, "natural")[0])
    assert natural.fingerprint(natural.records()[0]) != shapes.fingerprint(shapes.records()[0])
    for bad in (lambda: SyntheticDataset(root=tmp_path, style="photo"), lambda: generate_image(0, "val", 0, "x"),
                lambda: write_split(tmp_path / "x", seed=0, split="val", size=1, style="x")):
        with pytest.raises(ValueError, match="unknown synthetic style"):
            bad()


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
    assert isinstance(ds, SyntheticDataset) and len(ds.records()) == 3 and ds.style == "natural"
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
    assert val["info"]["style"] == "natural"  # the default
    assert tool.main([str(tmp_path), "--splits", "val", "--val-size", "3"]) == 0
    assert "kept existing" in capsys.readouterr().out
    assert tool.main([str(tmp_path / "old"), "--style", "shapes", "--val-size", "2"]) == 0
    old = json.loads((tmp_path / "old" / "val" / "annotations.json").read_text())
    assert "style" not in old["info"] and len(old["images"]) == 2
