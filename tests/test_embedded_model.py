"""The embedded detector: exact split equivalence, the shipped weights and their measured mAP, weight errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vcm_eval.data.synthetic import CLASS_NAMES, SyntheticDataset, generate_image
from vcm_eval.hashing import file_sha256
from vcm_eval.models.base import SplitModel, WeightsError
from vcm_eval.models.embedded import (
    PACKAGED_WEIGHTS,
    EmbeddedArch,
    EmbeddedDetector,
    build_embedded_model,
    build_network,
)
from vcm_eval.types import Detections

# The shipped weights' val mAP@0.5 on the first 20 val pictures is recorded in embedded.json by
# tools/train_embedded_model.py; re-measured here it must agree to within this (CPU kernels of another
# torch build can move a few scores in their last bits, which can reorder near-tied detections).
MAP_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def random_model() -> EmbeddedDetector:
    """Seeded, untrained weights: its random class scores give ~100 detections per picture to compare."""
    torch.manual_seed(0)
    net = build_network(EmbeddedArch(), len(CLASS_NAMES))
    return EmbeddedDetector(net, CLASS_NAMES, EmbeddedArch(), weights_sha256="random")


@pytest.fixture(scope="module")
def shipped_model() -> EmbeddedDetector:
    assert PACKAGED_WEIGHTS.is_file(), (f"{PACKAGED_WEIGHTS} is missing from the checkout; it ships with "
                                        "the package (tools/train_embedded_model.py re-creates it)")
    return build_embedded_model()


def _assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.classes, b.classes)


@pytest.mark.parametrize("shape", [(320, 424), (250, 333), (331, 320)])
def test_split_equals_unsplit_torchvision_forward(random_model, shape):
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    feats = random_model.encode(image)
    dets = random_model.decode(feats)
    assert len(dets) > 0
    _assert_same(dets, random_model.detect_unsplit(image))
    _assert_same(random_model.detect(image), dets)


def test_encode_geometry(random_model):
    # 300x400 is resized to 320 x floor(400 * 320 / 300) = 320x426, then padded to 320x448.
    image = generate_image(0, "val", 0)[0][:300, :400]
    feats = random_model.encode(image)
    assert feats.meta.original_size == (300, 400)
    assert feats.meta.input_size == (320, 426)
    assert feats.meta.padded_size == (320, 448)
    for name, stride in zip(("c2", "c3", "c4", "c5"), (4, 8, 16, 32)):
        layer = feats.layers[name]
        assert layer.dtype == np.float32 and layer.shape == (32, 320 // stride, 448 // stride)
    dets = random_model.decode(feats)
    assert (dets.boxes[:, 2] <= 400 + 1e-3).all() and (dets.boxes[:, 3] <= 300 + 1e-3).all()


def test_decode_rejects_wrong_features(random_model):
    feats = random_model.encode(np.zeros((320, 320, 3), dtype=np.uint8))
    missing = feats.replace_layers({k: v for k, v in feats.layers.items() if k != "c3"})
    with pytest.raises(ValueError, match="lack level c3"):
        random_model.decode(missing)
    wrong = feats.replace_layers({**feats.layers, "c4": feats.layers["c4"][:, :-1]})
    with pytest.raises(ValueError, match="level c4 has shape"):
        random_model.decode(wrong)
    with pytest.raises(ValueError, match="RGB uint8"):
        random_model.encode(np.zeros((32, 32, 3), dtype=np.float32))


def test_shipped_weights_load_and_describe_themselves(shipped_model):
    meta = json.loads(PACKAGED_WEIGHTS.with_suffix(".json").read_text())
    assert isinstance(shipped_model, SplitModel)
    assert tuple(shipped_model.class_names) == CLASS_NAMES == tuple(meta["class_names"])
    ident = shipped_model.identity()
    assert ident["weights_sha256"] == file_sha256(PACKAGED_WEIGHTS) == meta["sha256"]
    assert PACKAGED_WEIGHTS.stat().st_size < 8e6
    assert meta["val"]["map_50"] >= 0.7


def test_shipped_weights_reach_recorded_map(shipped_model, tmp_path):
    meta = json.loads(PACKAGED_WEIGHTS.with_suffix(".json").read_text())
    subset = meta["val"]["subset"]
    ds = SyntheticDataset(split="val", num_images=subset["num_images"], root=tmp_path,
                          seed=meta["dataset"]["seed"], style=meta["dataset"].get("style", "shapes"))
    dets = {r.image_id: shipped_model.detect(ds.load(r)) for r in ds.records()}
    m = ds.make_evaluator(shipped_model.class_names).evaluate(dets)
    assert m["map_50"] == pytest.approx(subset["map_50"], abs=MAP_TOLERANCE)
    assert m["map_50_95"] == pytest.approx(subset["map_50_95"], abs=MAP_TOLERANCE)


def test_missing_weights_name_the_file_and_the_tool(tmp_path):
    with pytest.raises(WeightsError, match=r"nowhere\.pth.*not found.*tools/train_embedded_model\.py"):
        build_embedded_model(tmp_path / "nowhere.pth")


def test_corrupt_or_undescribed_weights_are_rejected(tmp_path):
    if not PACKAGED_WEIGHTS.is_file():
        pytest.skip(f"{PACKAGED_WEIGHTS} absent (see test_shipped_weights_load_and_describe_themselves)")
    pth, desc = tmp_path / "w.pth", tmp_path / "w.json"
    shutil.copyfile(PACKAGED_WEIGHTS, pth)
    with pytest.raises(WeightsError, match=r"w\.json.*missing"):
        build_embedded_model(pth)
    shutil.copyfile(PACKAGED_WEIGHTS.with_suffix(".json"), desc)
    data = bytearray(pth.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pth.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"w\.pth: corrupt"):
        build_embedded_model(pth)
    # A readable file of the right checksum but for another architecture.
    shutil.copyfile(PACKAGED_WEIGHTS, pth)
    meta = json.loads(desc.read_text())
    meta["architecture"]["fpn_channels"] += 16
    meta["sha256"] = file_sha256(pth)
    desc.write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="do not fit the architecture"):
        build_embedded_model(pth)


def test_hydra_config_builds_the_model():
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not PACKAGED_WEIGHTS.is_file():
        pytest.skip(f"{PACKAGED_WEIGHTS} absent (see test_shipped_weights_load_and_describe_themselves)")
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "embedded.yaml")
    model = instantiate(cfg, _convert_="all")
    assert isinstance(model, EmbeddedDetector) and model.weights_sha256 == file_sha256(PACKAGED_WEIGHTS)


def _training_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "train_embedded_model.py"
    spec = importlib.util.spec_from_file_location("train_embedded_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_schedule_is_flat_until_its_decay():
    tool = _training_tool()
    f = tool.lr_factor
    assert [f(i, 1000, 100, 300) for i in (0, 49, 99)] == [0.01, 0.5, 1.0]
    assert f(699, 1000, 100, 300) == 1.0 and f(700, 1000, 100, 300) == 1.0
    assert f(850, 1000, 100, 300) == pytest.approx(0.5) and f(999, 1000, 100, 300) < 1e-3
    # Before the decay of the shorter run, two runs of different length are the same run.
    assert all(f(i, 1000, 100, 300) == f(i, 2500, 100, 300) for i in range(700))


def test_training_order_prefix_does_not_depend_on_run_length():
    tool = _training_tool()
    short_order, short_flips = tool.visiting_order(0, 10, 7)
    long_order, long_flips = tool.visiting_order(0, 10, 25)
    assert long_order[:7] == short_order and long_flips[:7] == short_flips
    assert sorted(long_order[:10]) == list(range(10)) and sorted(long_order[10:20]) == list(range(10))
    assert tool.visiting_order(1, 10, 7) != (short_order, short_flips)


def test_split_equals_unsplit_with_shipped_weights(shipped_model):
    image = generate_image(0, "val", 3)[0]
    dets = shipped_model.decode(shipped_model.encode(image))
    assert len(dets) > 0 and dets.scores.max() > 0.9
    _assert_same(dets, shipped_model.detect_unsplit(image))
