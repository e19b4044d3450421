"""``x265``: HEVC through the libx265 that PyAV's wheel carries (no external binary).

Every picture is coded as an intra (IDR) picture at a fixed QP with rate control off (``qp=``),
single-threaded (``pools=none``, ``frame-threads=1``) so that the output is deterministic, and
without the SEI message in which x265 writes its version and options (``info=0``), which would
otherwise be counted as rate. The raw ``hevc`` muxer writes the Annex-B elementary stream, so
file bytes are bitstream bytes.

Sequences (:meth:`X265Codec.encode_sequence`) are coded as one HEVC stream under the CTC's condition, at the
same fixed QP with x265's default QP steps between picture types (``ipratio``/``pbratio``, as VTM's configs offset
the QP of each temporal layer): ``AI`` every picture IDR; ``LD`` an IDR picture every intra period and P pictures
between, each referring only to earlier ones; ``RA`` closed GOPs of one intra picture per intra period with
hierarchical B pictures (``bframes=15``, ``b-pyramid``: a fixed GOP of 16, the longest x265 allows; VTM-12.0's
random-access configuration has 32).
Scene-cut detection is off so that only the intra period places intra pictures.

libx265 refuses pictures narrower or lower than 16 samples (a packed level of a few channel components can
be 10x15); such a 4:0:0 picture is extended to 16 by repeating its last row / column, and the decoder crops
it back. Larger pictures are coded exactly as given.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

import av
import numpy as np

from vcm_eval.codecs.avframes import PIX_FMTS, from_video_frame, pix_fmt, to_video_frame
from vcm_eval.codecs.base import (
    CodecError,
    CodecUnavailableError,
    CodedSequence,
    CodingCondition,
    FrameSpec,
    VideoCodec,
    check_decoded,
)
from vcm_eval.types import CodedPicture, Frame


def _pix_fmt(chroma_format: str, bit_depth: int) -> str:
    try:
        return pix_fmt(chroma_format, bit_depth)
    except ValueError as exc:
        raise CodecError(f"x265: {exc}") from None


def decode_annexb(bitstream: bytes, container_format: str, spec: FrameSpec, *, codec: str,
                  label: str = "") -> Frame:
    """Decode a one-picture Annex-B stream (``hevc`` or ``vvc``) with PyAV's native decoder."""
    return decode_annexb_frames(bitstream, container_format, spec, 1, codec=codec, label=label)[0]


def decode_annexb_frames(bitstream: bytes, container_format: str, spec: FrameSpec, num_frames: int, *, codec: str,
                         label: str = "") -> list[Frame]:
    """Decode an Annex-B stream of ``num_frames`` pictures (display order) with PyAV's native decoder."""
    if not bitstream:
        raise CodecError(f"{codec}: bitstream of {label or 'picture'} is empty")
    try:
        with av.open(io.BytesIO(bitstream), format=container_format) as container:
            frames = list(container.decode(video=0))
    except (av.error.FFmpegError, ValueError) as exc:
        raise CodecError(f"{codec}: cannot decode {label or 'picture'} ({exc}); "
                         "the bitstream is truncated or corrupt") from exc
    if len(frames) != num_frames:
        raise CodecError(f"{codec}: {label or 'bitstream'} decodes to {len(frames)} pictures, expected {num_frames}; "
                         "the bitstream is truncated or corrupt")
    expected_fmt = PIX_FMTS.get((spec.chroma_format, spec.bit_depth))
    if frames and frames[0].format.name != expected_fmt:
        raise CodecError(f"{codec}: {label or 'picture'} decoded as {frames[0].format.name}, expected {expected_fmt}")
    return [check_decoded(from_video_frame(f, spec.bit_depth, spec.chroma_format), spec, codec=codec, label=label)
            for f in frames]


#: libx265's smallest picture side.
MIN_SIDE = 16


def pad_to_minimum(frame: Frame, minimum: int = MIN_SIDE) -> Frame:
    """``frame`` with its 4:0:0 plane extended to at least ``minimum`` x ``minimum`` by edge repetition;
    unchanged when it is large enough."""
    if frame.height >= minimum and frame.width >= minimum:
        return frame
    if frame.chroma_format != "400":
        raise CodecError(f"x265: a {frame.chroma_format} picture of {frame.width}x{frame.height} is smaller than "
                         f"x265's {minimum}x{minimum}; only 4:0:0 pictures are extended")
    luma = np.pad(frame.luma, ((0, max(0, minimum - frame.height)), (0, max(0, minimum - frame.width))), mode="edge")
    return Frame.gray(luma, frame.bit_depth)


class X265Codec(VideoCodec):
    """HEVC All-Intra at fixed QP via PyAV's libx265.

    Args:
        preset: x265 speed preset (``ultrafast`` .. ``placebo``); part of the cache key.
        extra_params: further ``x265-params`` (``key=value`` joined by ``:``), appended last.

    Example::

        >>> codec = X265Codec()
        >>> coded = codec.encode(Frame.gray(np.full((64, 64), 512, np.uint16)), qp=37)
        >>> codec.decode(coded.bitstream, FrameSpec(64, 64)).luma.shape
        (64, 64)
    """

    name = "x265"
    qp_range = (0, 51)

    def __init__(self, preset: str = "medium", extra_params: str = "") -> None:
        self.preset = preset
        self.extra_params = extra_params

    def x265_params(self, qp: int) -> str:
        params = f"qp={int(qp)}:keyint=1:info=0:pools=none:frame-threads=1:log-level=error"
        return params + (f":{self.extra_params}" if self.extra_params else "")

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        self.check_available()
        self.check_qp(qp, label=label)
        start = time.perf_counter()
        given = frame
        frame = pad_to_minimum(frame)
        buf = io.BytesIO()
        try:
            with av.open(buf, "w", format="hevc") as out:
                stream = out.add_stream("libx265", rate=1)
                stream.width, stream.height = frame.width, frame.height
                stream.pix_fmt = _pix_fmt(frame.chroma_format, frame.bit_depth)
                stream.options = {"preset": self.preset, "x265-params": self.x265_params(qp)}
                for packet in stream.encode(to_video_frame(frame)):
                    out.mux(packet)
                for packet in stream.encode(None):
                    out.mux(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            raise CodecError(f"x265: encoding {label or 'picture'} ({given.width}x{given.height}) at QP {qp} "
                             f"failed: {exc}") from exc
        bitstream = buf.getvalue()
        if not bitstream:
            raise CodecError(f"x265: encoding {label or 'picture'} at QP {qp} produced no bytes")
        return CodedPicture(bitstream, codec=self.identity(), encode_s=time.perf_counter() - start,
                            command=[f"libx265 preset={self.preset} {self.x265_params(qp)}"])

    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        spec = FrameSpec.of(like)
        if spec.height >= MIN_SIDE and spec.width >= MIN_SIDE:
            return decode_annexb(bitstream, "hevc", spec, codec=self.name, label=label)
        padded = FrameSpec(max(spec.height, MIN_SIDE), max(spec.width, MIN_SIDE), spec.bit_depth, spec.chroma_format)
        decoded = decode_annexb(bitstream, "hevc", padded, codec=self.name, label=label)
        return Frame.gray(np.ascontiguousarray(decoded.luma[: spec.height, : spec.width]), spec.bit_depth)

    def sequence_params(self, qp: int, condition: CodingCondition) -> str:
        """x265-params of a sequence under ``condition`` (see the module docstring)."""
        common = f"qp={int(qp)}:info=0:pools=none:frame-threads=1:log-level=error:scenecut=0:open-gop=0"
        if condition.mode == "AI":
            structure = "keyint=1"
        else:
            keyint = condition.intra_period if condition.intra_period > 0 else 100000
            structure = f"keyint={keyint}:min-keyint={keyint}"
            structure += (":bframes=0" if condition.mode == "LD"
                          else ":bframes=15:b-adapt=0:b-pyramid=1:rc-lookahead=20")
        return f"{common}:{structure}" + (f":{self.extra_params}" if self.extra_params else "")

    def encode_sequence(self, frames: Sequence[Frame], qp: int, condition: CodingCondition, *,
                        label: str = "") -> CodedSequence:
        """Code ``frames`` as one HEVC stream under ``condition``; bits per picture from its packets."""
        self.check_available()
        self.check_qp(qp, label=label)
        if not frames:
            raise CodecError(f"x265: {label or 'sequence'} has no frames")
        start = time.perf_counter()
        padded = [pad_to_minimum(f) for f in frames]
        params = self.sequence_params(qp, condition)
        rate = Fraction(condition.frame_rate).limit_denominator(1001)
        buf, bits = io.BytesIO(), {}
        try:
            with av.open(buf, "w", format="hevc") as out:
                stream = out.add_stream("libx265", rate=rate)
                stream.width, stream.height = padded[0].width, padded[0].height
                stream.pix_fmt = _pix_fmt(padded[0].chroma_format, padded[0].bit_depth)
                stream.options = {"preset": self.preset, "x265-params": params}
                packets = []
                for index, frame in enumerate(padded):
                    video_frame = to_video_frame(frame)
                    video_frame.pts = index
                    packets += stream.encode(video_frame)
                packets += stream.encode(None)
                for packet in packets:
                    bits[int(packet.pts)] = bits.get(int(packet.pts), 0) + 8 * packet.size
                    out.mux(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            raise CodecError(f"x265: encoding {label or 'sequence'} ({len(frames)} frames of {frames[0].width}x"
                             f"{frames[0].height}) at QP {qp} under {condition.mode} failed: {exc}") from exc
        bitstream = buf.getvalue()
        frame_bits = [bits.get(i, 0) for i in range(len(frames))]
        if not bitstream or len(bits) != len(frames):
            raise CodecError(f"x265: encoding {label or 'sequence'} at QP {qp} gave {len(bits)} pictures for "
                             f"{len(frames)} frames")
        frame_bits[0] += 8 * len(bitstream) - sum(frame_bits)  # anything the muxer adds counts as rate too
        return CodedSequence(bitstream, frame_bits, self.identity(), time.perf_counter() - start,
                             [f"libx265 preset={self.preset} fps={rate} {params}"])

    def decode_sequence(self, bitstream: bytes, like: Frame | FrameSpec, num_frames: int, *,
                        label: str = "") -> list[Frame]:
        spec = FrameSpec.of(like)
        padded = FrameSpec(max(spec.height, MIN_SIDE), max(spec.width, MIN_SIDE), spec.bit_depth, spec.chroma_format)
        frames = decode_annexb_frames(bitstream, "hevc", padded, num_frames, codec=self.name, label=label)
        if (padded.height, padded.width) == (spec.height, spec.width):
            return frames
        return [Frame.gray(np.ascontiguousarray(f.luma[: spec.height, : spec.width]), spec.bit_depth) for f in frames]

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "library": "libx265 via PyAV", "av": av.__version__,
                "ffmpeg": _ffmpeg_version(), "preset": self.preset, "extra_params": self.extra_params,
                "params": self.x265_params(0).replace("qp=0:", "")}

    def check_available(self) -> None:
        _self_test()


@lru_cache(maxsize=1)
def _ffmpeg_version() -> str:
    return str(av.library_versions.get("libavcodec", "")) if hasattr(av, "library_versions") else ""


@lru_cache(maxsize=1)
def _self_test() -> None:
    """Round-trip one small gray10le picture once per process: old PyAV wheels carried 8-bit-only x265."""
    try:
        av.codec.Codec("libx265", "w")
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise CodecUnavailableError(
            "x265: this PyAV build has no libx265 encoder; install the PyAV wheel from PyPI "
            f"(pip install 'av>=14,<19') ({exc})") from exc
    probe = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 1024
    buf = io.BytesIO()
    with av.open(buf, "w", format="hevc") as out:
        stream = out.add_stream("libx265", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "gray10le"
        stream.options = {"x265-params": "qp=0:keyint=1:info=0:pools=none:frame-threads=1:log-level=error"}
        for packet in list(stream.encode(av.VideoFrame.from_ndarray(probe, format="gray10le"))) + list(
            stream.encode(None)
        ):
            out.mux(packet)
    with av.open(io.BytesIO(buf.getvalue()), format="hevc") as container:
        frame = next(container.decode(video=0))
    if frame.format.name != "gray10le":
        raise CodecUnavailableError(
            f"x265: PyAV's libx265 round trip gave {frame.format.name}, not gray10le: this build codes "
            "8 bits only; install av>=14 from PyPI")
