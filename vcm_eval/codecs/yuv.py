"""Raw planar YUV files as the reference encoders read and write them, and PSNR.

A raw file holds the planes of each picture one after another (Y, then Cb and Cr for 4:2:0), row by
row, with no header. Samples of more than 8 bits take two bytes, little-endian, which is what VTM,
HM and VVenC read and write for ``--InputBitDepth`` / ``-d`` above 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.errors import SettingError
from vcm_eval.types import Frame


def plane_shapes(spec: FrameSpec) -> list[tuple[int, int]]:
    """(height, width) of each plane: luma, plus two chroma planes of ``ceil(H/2) x ceil(W/2)`` for 4:2:0."""
    shapes = [(spec.height, spec.width)]
    if spec.chroma_format == "420":
        shapes += [((spec.height + 1) // 2, (spec.width + 1) // 2)] * 2
    return shapes


def bytes_per_sample(bit_depth: int) -> int:
    """1 for up to 8 bits per sample, else 2 (little-endian)."""
    return 1 if bit_depth <= 8 else 2


def frame_num_bytes(spec: FrameSpec) -> int:
    """Size of one picture in a raw file: ``sum(h * w) * bytes_per_sample``."""
    return sum(h * w for h, w in plane_shapes(spec)) * bytes_per_sample(spec.bit_depth)


def frame_to_bytes(frame: Frame) -> bytes:
    """Raw file bytes of ``frame``: its planes in order, 8-bit or 16-bit little-endian samples."""
    dtype = "<u2" if bytes_per_sample(frame.bit_depth) == 2 else "u1"
    return b"".join(np.ascontiguousarray(plane, dtype=dtype).tobytes() for plane in frame.planes)


def write_yuv(frame: Frame, path: str | Path) -> Path:
    """Write ``frame`` as a one-picture raw file; returns the path."""
    path = Path(path)
    path.write_bytes(frame_to_bytes(frame))
    return path


def frame_from_bytes(data: bytes, spec: FrameSpec, *, luma_only_ok: bool = True) -> Frame:
    """Parse one picture of geometry ``spec`` from raw file bytes.

    A 4:0:0 picture is also accepted when the file holds 4:2:0 data (a decoder that writes constant
    chroma planes for monochrome streams): the luma plane comes first either way, so the rest is ignored.

    Raises:
        ValueError: when ``data`` is shorter than one picture of ``spec``, or has a size that is no
            picture of ``spec`` (another picture size was coded).
    """
    bps = bytes_per_sample(spec.bit_depth)
    dtype = "<u2" if bps == 2 else "u1"
    expected = frame_num_bytes(spec)
    as_420 = frame_num_bytes(FrameSpec(spec.height, spec.width, spec.bit_depth, "420"))
    allowed = {expected} | ({as_420} if spec.chroma_format == "400" and luma_only_ok else set())
    if len(data) not in allowed:
        raise ValueError(f"raw picture has {len(data)} bytes; a {spec!r} picture has {expected}")
    planes, offset = [], 0
    for h, w in plane_shapes(spec):
        n = h * w
        plane = np.frombuffer(data, dtype=dtype, count=n, offset=offset).reshape(h, w)
        planes.append(plane.astype(np.uint16))
        offset += n * bps
    return Frame(tuple(planes), spec.bit_depth, spec.chroma_format)


def read_yuv(path: str | Path, spec: FrameSpec) -> Frame:
    """Read a one-picture raw file of geometry ``spec`` (see :func:`frame_from_bytes`)."""
    path = Path(path)
    try:
        return frame_from_bytes(path.read_bytes(), spec)
    except ValueError as exc:
        raise SettingError(f"{path}: {exc}") from None


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error ``mean((reference - test)**2)``, computed in float64."""
    if reference.shape != test.shape:
        raise ValueError(f"cannot compare pictures of shapes {reference.shape} and {test.shape}")
    diff = reference.astype(np.float64) - test.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 1023.0) -> float:
    """PSNR in dB: ``10 * log10(peak**2 / MSE)``; ``inf`` for identical pictures.

    ``peak`` is ``2**bit_depth - 1`` (1023 for 10 bits). VTM's own log uses ``255 * 4 = 1020`` for
    10-bit video, about 0.026 dB lower than the value here.
    """
    err = mse(reference, test)
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / err))
