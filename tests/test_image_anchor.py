"""The image anchor's colour conversion and coding (the detection side is in test_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest

from anchors.image import ImageAnchor
from vcm_eval.codecs import LosslessCodec, X265Codec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.codecs.colour import rgb_to_ycbcr, ycbcr_to_rgb
from vcm_eval.store import Store


def smooth_picture(height: int = 63, width: int = 97) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height - 2)],
                    axis=-1).astype(np.uint8)


def test_bt709_limited_range_values_of_primaries():
    picture = np.zeros((2, 2, 3), np.uint8)
    picture[0, 0] = (255, 0, 0)
    frame = rgb_to_ycbcr(picture, chroma_format="444")
    # BT.709 limited range at 10 bits: Y = 64 + 876 * 0.2126, Cb = 512 - 896 * 0.1146, Cr = 512 + 448
    assert abs(int(frame.planes[0][0, 0]) - 250) <= 1
    assert abs(int(frame.planes[1][0, 0]) - 409) <= 1 and abs(int(frame.planes[2][0, 0]) - 960) <= 1
    assert int(frame.planes[0][1, 1]) == 64 and int(frame.planes[1][1, 1]) == 512  # black


def test_444_round_trip_is_exact_at_10_bits():
    picture = np.random.default_rng(0).integers(0, 256, (37, 51, 3)).astype(np.uint8)
    frame = rgb_to_ycbcr(picture, chroma_format="444", bit_depth=10)
    np.testing.assert_array_equal(ycbcr_to_rgb(frame, picture.shape[:2]), picture)


def test_420_round_trip_error_is_small_on_smooth_pictures_and_odd_sizes_survive():
    picture = smooth_picture()
    frame = rgb_to_ycbcr(picture, chroma_format="420")
    assert (frame.height, frame.width) == (64, 98) and frame.planes[1].shape == (32, 49)
    luma = frame.planes[0]
    assert 64 <= luma.min() and luma.max() <= 940
    back = ycbcr_to_rgb(frame, picture.shape[:2])
    error = np.abs(back.astype(int) - picture)
    # chroma at half resolution: on a gradient of ~2.6 code values per pixel the loss stays within a few codes
    assert back.shape == picture.shape and error.mean() < 3.0 and error.max() <= 8


def test_image_anchor_lossless_444_returns_the_picture(tmp_path):
    picture = np.random.default_rng(1).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    anchor = ImageAnchor(name="image", rate_points=[22], chroma_format="444")
    decoded, record = anchor.code(picture, 22, CachedCodec(LosslessCodec(), Store(tmp_path)), label="img")
    np.testing.assert_array_equal(decoded, picture)
    assert record.num_bits > 0 and record.psnr_y == float("inf")


def test_image_anchor_x265_rate_falls_with_qp(tmp_path):
    picture = smooth_picture(96, 128)
    anchor = ImageAnchor(name="image", rate_points=[22, 37])
    coder = CachedCodec(X265Codec(), Store(tmp_path))
    _, fine = anchor.code(picture, 22, coder, label="img")
    decoded, coarse = anchor.code(picture, 37, coder, label="img")
    assert decoded.shape == picture.shape and decoded.dtype == np.uint8
    assert fine.num_bits > coarse.num_bits > 0 and fine.psnr_y > coarse.psnr_y > 30


def test_image_anchor_rejects_other_chroma_formats():
    with pytest.raises(ValueError, match="chroma_format"):
        ImageAnchor(name="image", rate_points=[22], chroma_format="422")


def test_conversion_is_deterministic(tmp_path):
    # with swscale's automatic threading, converting the same picture twice gave different samples for
    # 2 of 12 synthetic pictures (measured); vcm_eval converts with one thread
    from vcm_eval.data.synthetic import SyntheticDataset

    dataset = SyntheticDataset(split="val", num_images=12, root=tmp_path, size=12)
    for record in dataset.records():
        picture = dataset.load(record)
        first, second = rgb_to_ycbcr(picture), rgb_to_ycbcr(picture)
        assert all((a == b).all() for a, b in zip(first.planes, second.planes)), record.path
        np.testing.assert_array_equal(ycbcr_to_rgb(first, picture.shape[:2]), ycbcr_to_rgb(second, picture.shape[:2]))
    assert "1 thread" in ImageAnchor(name="image", rate_points=[22]).identity()["conversion"]
