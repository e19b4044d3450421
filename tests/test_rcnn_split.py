"""The split contract of vcm_eval's Faster R-CNN FPN: encode/decode, validation, identity."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from rcnn_support import seeded_model, seeded_weights

from vcm_eval.hashing import file_sha256
from vcm_eval.models.base import SplitModel
from vcm_eval.models.rcnn import COCO_CLASS_NAMES, ZOO
from vcm_eval.models.rcnn.model import rescale_boxes
from vcm_eval.types import SplitFeatures, SplitMeta


def _noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width])


def test_decode_of_encode_equals_detect_exactly(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    image = _noise_image(150, 230)  # 320x491 input, padded to 320x512: the padding is exercised
    feats = model.encode(image)
    assert feats.meta == SplitMeta(original_size=(150, 230), input_size=(320, 491), padded_size=(320, 512))
    for level, stride in zip(("c2", "c3", "c4", "c5"), (4, 8, 16, 32)):
        arr = feats.layers[level]
        assert arr.dtype == np.float32 and arr.shape == (256, 320 // stride, 512 // stride)
    split = model.decode(feats)
    whole = model.detect(image)
    assert len(whole) > 0
    np.testing.assert_array_equal(split.boxes, whole.boxes)
    np.testing.assert_array_equal(split.scores, whole.scores)
    np.testing.assert_array_equal(split.classes, whole.classes)
    assert np.all((whole.boxes[:, [0, 2]] >= 0) & (whole.boxes[:, [0, 2]] <= 230))
    assert np.all((whole.boxes[:, [1, 3]] >= 0) & (whole.boxes[:, [1, 3]] <= 150))

    # A coding-error-like perturbation of c5 alone reaches every level through the top-down sums.
    noise = np.random.default_rng(1).normal(0, 0.5, feats.layers["c5"].shape).astype(np.float32)
    noisy = model.decode(feats.replace_layers({**feats.layers, "c5": feats.layers["c5"] + noise}))
    assert len(noisy) > 0
    assert len(noisy) != len(split) or not np.array_equal(noisy.scores, split.scores)
    # float64 reconstructions are accepted and become exactly the float32 maps.
    as64 = model.features_to_tensors(feats.replace_layers({k: v.astype(np.float64) for k, v in feats.layers.items()}))
    assert all(np.array_equal(as64[k][0].numpy(), feats.layers[k]) for k in feats.layers)


def test_decode_rejects_bad_features(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    feats = model.encode(_noise_image(64, 64))
    layers = feats.layers
    with pytest.raises(ValueError, match="lack level c3"):
        model.decode(feats.replace_layers({k: v for k, v in layers.items() if k != "c3"}))
    with pytest.raises(ValueError, match="c4 has shape"):
        model.decode(feats.replace_layers({**layers, "c4": layers["c4"][:, :-1]}))
    with pytest.raises(ValueError, match="NaN"):
        bad = layers["c2"].copy()
        bad[0, 0, 0] = np.nan
        model.decode(feats.replace_layers({**layers, "c2": bad}))
    with pytest.raises(ValueError, match="dequantise"):
        model.decode(feats.replace_layers({**layers, "c5": layers["c5"].astype(np.uint16)}))
    with pytest.raises(ValueError, match="multiple of 32"):
        model.decode(SplitFeatures(layers, dataclasses.replace(feats.meta, padded_size=(330, 320))))
    with pytest.raises(ValueError, match="does not fit"):
        model.decode(SplitFeatures(layers, dataclasses.replace(feats.meta, input_size=(400, 320))))


def test_identity_and_classes(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    assert isinstance(model, SplitModel)
    ident = model.identity()
    json.dumps(ident)
    assert ident["zoo_name"] == "faster_rcnn_R_50_FPN_3x"
    assert ident["weights_sha256"] == file_sha256(seeded_weights("r50", tmp_path_factory))
    assert (ident["min_size_test"], ident["max_size_test"]) == (320, 533)
    assert list(model.class_names) == list(COCO_CLASS_NAMES)
    assert len(COCO_CLASS_NAMES) == 80 and COCO_CLASS_NAMES[0] == "person" and COCO_CLASS_NAMES[-1] == "toothbrush"
    assert COCO_CLASS_NAMES.index("dining table") == 60


def test_zoo_table():
    x101 = ZOO["faster_rcnn_X_101_32x8d_FPN_3x"]
    assert x101.weights_file == "model_final_68b088.pkl"
    assert (x101.depth, x101.num_groups, x101.width_per_group, x101.stride_in_1x1) == (101, 32, 8, False)
    assert x101.pixel_std == (57.375, 57.12, 58.395)
    r50 = ZOO["faster_rcnn_R_50_FPN_3x"]
    assert (r50.depth, r50.num_groups, r50.width_per_group, r50.stride_in_1x1) == (50, 1, 64, True)
    assert r50.blocks_per_stage == (3, 4, 6, 3) and x101.blocks_per_stage == (3, 4, 23, 3)
    with pytest.raises(ValueError, match="max_size_test"):
        r50.with_test_size(800, 600)
    with pytest.raises(ValueError, match="positive integer"):
        r50.with_test_size(0, 600)


def test_rescale_matches_detector_postprocess():
    import torch

    boxes = torch.tensor([[10.0, 20.0, 330.0, 300.0], [0.0, 0.0, 0.0, 5.0], [-1.0, 5.0, 50.0, 25.0]])
    out, keep = rescale_boxes(boxes, input_size=(320, 480), original_size=(160, 240))
    np.testing.assert_allclose(out.numpy(), [[5, 10, 165, 150], [0, 0, 0, 2.5], [0, 2.5, 25, 12.5]])
    assert keep.tolist() == [True, False, True]
