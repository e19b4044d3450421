"""RGB <-> Y'CbCr conversion of pictures for image coding, done by libswscale (through PyAV).

The image anchor codes pictures as video codecs expect them: BT.709 matrix, limited ("video",
MPEG) range — at 10 bits luma 64..940 and chroma 64..960 — with chroma subsampled to 4:2:0 by
swscale's bicubic filter (or kept at 4:4:4). The RGB side is full range (0..255). Odd widths and
heights are padded by repeating the last column/row before subsampling, and cropped after.

swscale runs single-threaded here: with its automatic thread count it produces different samples
(measured: a different 4:2:0 picture from the same RGB), which would make the image anchor's
results depend on the machine and the executor.
"""

from __future__ import annotations

import av
import numpy as np

from vcm_eval.codecs.avframes import from_video_frame, pix_fmt, to_video_frame
from vcm_eval.errors import SettingError
from vcm_eval.types import Frame

MATRIX = "ITU709"
#: what the conversion is, recorded in the image anchor's identity (and so in its cache keys).
CONVERSION = "swscale BT.709 limited range, bicubic chroma, 1 thread"


def rgb_to_ycbcr(image: np.ndarray, *, chroma_format: str = "420", bit_depth: int = 10) -> Frame:
    """RGB uint8 (H, W, 3), full range -> BT.709 limited-range Y'CbCr frame (padded to even size for 4:2:0)."""
    if chroma_format not in ("420", "444"):
        raise SettingError(f"pictures are converted to 4:2:0 or 4:4:4 Y'CbCr, not {chroma_format}")
    fmt = pix_fmt(chroma_format, bit_depth)
    if chroma_format == "420" and (image.shape[0] % 2 or image.shape[1] % 2):
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    yuv = rgb.reformat(format=fmt, src_colorspace=MATRIX, dst_colorspace=MATRIX, src_color_range="JPEG",
                       dst_color_range="MPEG", interpolation="BICUBIC", threads=1)
    return from_video_frame(yuv, bit_depth, chroma_format)


def ycbcr_to_rgb(frame: Frame, size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: RGB uint8 (H, W, 3) cropped to ``size`` = (height, width)."""
    rgb = to_video_frame(frame).reformat(format="rgb24", src_colorspace=MATRIX, dst_colorspace=MATRIX,
                                         src_color_range="MPEG", dst_color_range="JPEG", interpolation="BICUBIC",
                                         threads=1)
    height, width = size
    return np.ascontiguousarray(rgb.to_ndarray()[:height, :width])
