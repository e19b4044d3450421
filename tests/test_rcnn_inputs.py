"""Unusual pictures through vcm_eval's Faster R-CNN FPN: a correct result or a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from rcnn_support import seeded_model

from vcm_eval.data.images import read_image
from vcm_eval.models.rcnn.preprocess import resized_shape


def _picture(height: int, width: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))[:height, :width])


def _assert_inside(dets, height, width):
    assert np.all(dets.boxes[:, [0, 2]] >= 0) and np.all(dets.boxes[:, [0, 2]] <= width)
    assert np.all(dets.boxes[:, [1, 3]] >= 0) and np.all(dets.boxes[:, [1, 3]] <= height)
    assert np.all(dets.boxes[:, 2] > dets.boxes[:, 0]) and np.all(dets.boxes[:, 3] > dets.boxes[:, 1])


def test_grayscale_rgba_and_16_bit_files(tmp_path_factory, tmp_path):
    model = seeded_model("r50", tmp_path_factory)
    rgb = _picture(60, 80)
    gray = rgb[:, :, 1]
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)]), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # 16-bit, exactly 8-bit * 257

    gray_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), gray_rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "gray16.png"), gray_rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    dets = model.detect(read_image(tmp_path / "gray16.png"))
    assert len(dets) > 0
    _assert_inside(dets, 60, 80)


def test_picture_smaller_than_32_px(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    feats = model.encode(_picture(12, 20))
    assert feats.meta.input_size == (320, 533) and feats.meta.padded_size == (320, 544)
    dets = model.decode(feats)
    assert len(dets) > 0
    _assert_inside(dets, 12, 20)


def test_large_picture(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    image = np.kron(_picture(300, 400), np.ones((10, 10, 1), dtype=np.uint8))  # 4000x3000 px
    feats = model.encode(image)
    assert feats.meta.original_size == (3000, 4000) and feats.meta.input_size == (320, 427)
    dets = model.decode(feats)
    assert len(dets) > 0
    _assert_inside(dets, 3000, 4000)
    assert dets.boxes.max() > 533  # rescaled to the original picture, not the network input


def test_pictures_that_cannot_be_detected_on(tmp_path_factory):
    model = seeded_model("r50", tmp_path_factory)
    with pytest.raises(ValueError, match="too small"):
        model.encode(np.zeros((1, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="aspect ratio is too extreme"):
        model.encode(np.zeros((2, 6000, 3), np.uint8))
    for bad in (np.zeros((40, 40), np.uint8), np.zeros((40, 40, 4), np.uint8), np.zeros((40, 40, 3), np.float32),
                np.zeros((40, 40, 3), np.uint16)):
        with pytest.raises(ValueError, match="RGB uint8"):
            model.encode(bad)


@pytest.mark.parametrize("hw, expected", [
    ((480, 640), (800, 1067)), ((640, 480), (1067, 800)), ((512, 512), (800, 800)),
    ((300, 451), (800, 1203)), ((100, 1000), (133, 1333)), ((2, 6000), None),
])
def test_resized_shape_follows_detectron2(hw, expected):
    if expected is None:
        with pytest.raises(ValueError):
            resized_shape(*hw, 800, 1333)
    else:
        assert resized_shape(*hw, 800, 1333) == expected
