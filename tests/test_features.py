"""Quantise / pack round trips and the compensation identity (DESIGN.md sections 1-2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vcm_eval.features import (
    PackingGeometry,
    add_upsampled_error,
    dequantize,
    grid_shape,
    min_max_params,
    pack_channels,
    quantize,
    top_down_sums,
    unpack_channels,
    upsample_nearest,
)
from vcm_eval.features.quantize import QuantParams


@pytest.mark.parametrize("channels,expected", [(256, (16, 16)), (128, (8, 16)), (64, (8, 8)), (7, (1, 7)),
                                               (12, (3, 4)), (1, (1, 1))])
def test_grid_is_most_square_factorisation(channels, expected):
    assert grid_shape(channels) == expected


@given(channels=st.integers(1, 300))
def test_grid_multiplies_out(channels):
    rows, cols = grid_shape(channels)
    assert rows * cols == channels and rows <= cols


def test_pack_places_channel_c_at_row_major_cell():
    x = np.arange(256 * 3 * 5, dtype=np.uint16).reshape(256, 3, 5)
    picture, geom = pack_channels(x)
    assert picture.shape == (48, 80) and geom == PackingGeometry(256, 3, 5, 16, 16)
    for c in (0, 1, 15, 16, 17, 255):
        r, k = divmod(c, 16)
        np.testing.assert_array_equal(picture[r * 3:(r + 1) * 3, k * 5:(k + 1) * 5], x[c])


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 40), st.integers(1, 9), st.integers(1, 9))))
def test_pack_unpack_round_trip(x):
    picture, geom = pack_channels(x)
    np.testing.assert_array_equal(unpack_channels(picture, geom), x)


def test_unpack_strips_codec_padding():
    x = np.random.default_rng(0).integers(0, 1024, (64, 5, 7)).astype(np.uint16)
    picture, geom = pack_channels(x)
    padded = np.pad(picture, ((0, 8), (0, 3)), mode="edge")
    np.testing.assert_array_equal(unpack_channels(padded, geom), x)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
              elements=st.floats(-1e3, 1e3, width=32)),
       st.integers(2, 16))
def test_quantise_error_is_at_most_half_a_step(x, bit_depth):
    params = min_max_params(x, bit_depth)
    q = quantize(x, params)
    assert q.dtype == np.uint16 and q.max() <= (1 << bit_depth) - 1
    x_hat = dequantize(q, params)
    # half a step, plus float32 rounding of the affine maps
    tolerance = params.step / 2 + 1e-5 * max(1.0, float(np.abs(x).max()))
    assert np.abs(x_hat - x).max() <= tolerance


def test_quantise_maps_extremes_to_code_range():
    x = np.array([[[-2.0, 0.0, 6.0]]], dtype=np.float32)
    params = min_max_params(x, 10)
    assert (params.minimum, params.maximum) == (-2.0, 6.0)
    np.testing.assert_array_equal(quantize(x, params), [[[0, 256, 1023]]])  # 2/8*1023 = 255.75 -> 256
    np.testing.assert_allclose(dequantize(quantize(x, params), params), [[[-2.0, 256 * 8 / 1023 - 2, 6.0]]],
                               rtol=1e-6)


def test_constant_map_quantises_to_zero_and_back():
    x = np.full((2, 3, 3), 1.5, np.float32)
    params = min_max_params(x)
    q = quantize(x, params)
    assert not q.any()
    np.testing.assert_array_equal(dequantize(q, params), x)


def test_quantise_rejects_non_finite_and_bad_depth():
    with pytest.raises(ValueError, match="non-finite"):
        min_max_params(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="bit_depth"):
        min_max_params(np.zeros(3, np.float32), 0)
    assert QuantParams(0.0, 1.0, 10).levels == 1023


def test_upsample_matches_torch_nearest():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None], scale_factor=2, mode="nearest")[0]
    np.testing.assert_array_equal(upsample_nearest(x, (8, 10)), expected.numpy())


def test_compensated_level_adds_upsampled_error():
    finer = np.zeros((1, 4, 4), np.float32)
    error = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    np.testing.assert_array_equal(add_upsampled_error(finer, error)[0],
                                  [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_top_down_sums():
    layers = {"c5": np.ones((1, 1, 1), np.float32), "c4": np.full((1, 2, 2), 2, np.float32),
              "c3": np.zeros((1, 4, 4), np.float32), "c2": np.zeros((1, 8, 8), np.float32)}
    sums = top_down_sums(layers)
    assert sums["c5"].item() == 1 and np.all(sums["c4"] == 3) and np.all(sums["c2"] == 3)
