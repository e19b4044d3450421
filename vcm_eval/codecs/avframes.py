"""Moving planar pictures between vcm_eval's :class:`Frame` and PyAV's ``VideoFrame``."""

from __future__ import annotations

import av
import numpy as np

from vcm_eval.types import Frame

PIX_FMTS = {("400", 8): "gray", ("400", 10): "gray10le", ("400", 12): "gray12le",
            ("420", 8): "yuv420p", ("420", 10): "yuv420p10le", ("420", 12): "yuv420p12le",
            ("444", 8): "yuv444p", ("444", 10): "yuv444p10le", ("444", 12): "yuv444p12le"}


def pix_fmt(chroma_format: str, bit_depth: int) -> str:
    """FFmpeg's name of a planar format, e.g. ("420", 10) -> ``yuv420p10le``.

    Raises:
        ValueError: for a combination FFmpeg has no planar format for.
    """
    try:
        return PIX_FMTS[(chroma_format, bit_depth)]
    except KeyError:
        raise ValueError(f"no planar pixel format for {chroma_format} at {bit_depth} bits "
                         f"(supported: {sorted(PIX_FMTS)})") from None


def _sample_type(bit_depth: int) -> np.dtype:
    return np.dtype(np.uint16 if bit_depth > 8 else np.uint8)


def to_video_frame(frame: Frame) -> av.VideoFrame:
    """A PyAV frame holding ``frame``'s samples (copied into FFmpeg's padded plane buffers)."""
    vf = av.VideoFrame(frame.width, frame.height, pix_fmt(frame.chroma_format, frame.bit_depth))
    dtype = _sample_type(frame.bit_depth)
    for plane, samples in zip(vf.planes, frame.planes, strict=True):
        view = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        view[:, : samples.shape[1]] = samples.astype(dtype)
    return vf


def from_video_frame(vf: av.VideoFrame, bit_depth: int, chroma_format: str) -> Frame:
    """The samples of a PyAV frame as a :class:`Frame` (plane padding dropped)."""
    dtype = _sample_type(bit_depth)
    planes = []
    for plane in vf.planes[: 1 if chroma_format == "400" else 3]:
        view = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        planes.append(view[:, : plane.width].astype(np.uint16))
    return Frame(tuple(planes), bit_depth, chroma_format)
