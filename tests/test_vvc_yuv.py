"""Raw YUV files as VTM/VVenC read and write them, and PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.codecs.yuv import frame_from_bytes, frame_num_bytes, frame_to_bytes, psnr, read_yuv, write_yuv
from vcm_eval.types import Frame


def frame_420(height: int = 6, width: int = 10) -> Frame:
    rng = np.random.default_rng(0)
    planes = (rng.integers(0, 1024, (height, width)), rng.integers(0, 1024, (height // 2, width // 2)),
              rng.integers(0, 1024, (height // 2, width // 2)))
    return Frame(tuple(p.astype(np.uint16) for p in planes), 10, "420")


def test_raw_layout_is_planar_little_endian(tmp_path):
    frame = frame_420()
    data = frame_to_bytes(frame)
    assert len(data) == frame_num_bytes(FrameSpec.of(frame)) == 2 * (60 + 15 + 15)
    assert data[:2] == int(frame.luma[0, 0]).to_bytes(2, "little")
    assert data[120:122] == int(frame.planes[1][0, 0]).to_bytes(2, "little")
    back = read_yuv(write_yuv(frame, tmp_path / "f.yuv"), FrameSpec.of(frame))
    assert all(np.array_equal(a, b) for a, b in zip(back.planes, frame.planes, strict=True))
    eight = Frame.gray(np.arange(12, dtype=np.uint16).reshape(3, 4), bit_depth=8)
    assert frame_to_bytes(eight) == bytes(range(12))


def test_monochrome_accepts_a_420_file_and_rejects_other_sizes():
    frame = frame_420()
    gray = frame_from_bytes(frame_to_bytes(frame), FrameSpec(6, 10, 10, "400"))
    assert gray.chroma_format == "400" and np.array_equal(gray.luma, frame.luma)
    with pytest.raises(ValueError, match="a 10x6 400 10-bit picture has 120"):
        frame_from_bytes(frame_to_bytes(frame)[:-2], FrameSpec(6, 10, 10, "400"))
    with pytest.raises(ValueError, match="bytes"):
        frame_from_bytes(frame_to_bytes(frame), FrameSpec(8, 10))


def test_odd_420_planes_round_up():
    spec = FrameSpec(5, 7, 10, "420")
    assert frame_num_bytes(spec) == 2 * (35 + 2 * 3 * 4)


def test_psnr_formula():
    ref = np.zeros((4, 4), np.uint16)
    test = ref.copy()
    test[0, 0] = 4  # MSE = 16 / 16 = 1
    assert psnr(ref, test, peak=1023) == pytest.approx(20 * math.log10(1023))
    assert psnr(ref, ref) == math.inf
    with pytest.raises(ValueError, match="shapes"):
        psnr(ref, ref[:2])
