"""The image anchor ("remote inference"): code the picture itself, detect on the decoded picture.

The question a standards meeting asks first of any feature codec: does coding features beat simply
coding the picture with the same video codec and running the whole, unsplit detector on the
decoded picture? The picture is converted to Y'CbCr (BT.709, limited range, 10 bits, 4:2:0 by
default; see :mod:`vcm_eval.codecs.colour`), coded with the CTC's codec at the entry's QPs,
decoded, converted back to RGB, and detected on. bpp = coded bits / original pixels, as for features.

On a video CTC (:meth:`ImageAnchor.code_sequence`) the frames of a sequence are converted the same way and
coded as one video under the CTC's condition (AI, LD, RA): the "remote inference" anchor of MPEG FCM.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.codecs.colour import CONVERSION, rgb_to_ycbcr, ycbcr_to_rgb
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.bitrate import psnr_db
from vcm_eval.methods import CodedImage, ImageCodingMethod

if TYPE_CHECKING:
    from vcm_eval.codecs.base import CodingCondition
    from vcm_eval.sequence_methods import CodedVideo


class ImageAnchor(ImageCodingMethod):
    """Code the input picture as Y'CbCr video and detect on the decoded picture.

    Args:
        name: entry name (``image``).
        rate_points: pixel-domain QPs (they differ from feature QPs; the CTC gives each entry its own list).
        bit_depth: sample bit depth of the coded picture (10 in the CTC).
        chroma_format: ``"420"`` (the CTC) or ``"444"`` (no chroma loss; exact with the ``lossless`` codec).
    """

    def __init__(self, *, name: str = "image", rate_points: Sequence[int], bit_depth: int = 10,
                 chroma_format: str = "420") -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth)
        chroma_format = str(chroma_format)  # YAML / the command line read 420 as a number
        if chroma_format not in ("420", "444"):
            raise SettingError(f"{name}: chroma_format must be '420' or '444', got {chroma_format!r}")
        self.chroma_format = chroma_format

    def identity(self) -> dict:
        return {**super().identity(), "conversion": CONVERSION}

    def code(self, image: np.ndarray, rate_point: int, coder: CachedCodec, *,
             label: str = "") -> tuple[np.ndarray, CodedImage]:
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        frame = rgb_to_ycbcr(image, chroma_format=self.chroma_format, bit_depth=self.bit_depth)
        convert_s = time.perf_counter() - t0
        picture_label = f"{label} ({frame.width}x{frame.height} {self.chroma_format}) at QP {rate_point}"
        stored = coder.encode(frame, rate_point, label=picture_label)
        decoded, decode_s = coder.decode(stored.key, FrameSpec.of(frame), label=picture_label)
        rgb = ycbcr_to_rgb(decoded, (height, width))
        peak = float((1 << self.bit_depth) - 1)
        coded = CodedImage(
            entry=self.name, rate_point=int(rate_point), num_bits=stored.num_bits, bitstream=stored.key,
            encode_s=0.0 if stored.from_cache else stored.encode_s, decode_s=decode_s, convert_s=convert_s,
            from_cache=stored.from_cache, psnr_y=psnr_db(frame.luma, decoded.luma, peak), command=stored.command,
            coded_size=(frame.height, frame.width))
        return rgb, coded

    def code_sequence(self, frames: Sequence[np.ndarray], rate_point: int, coder: CachedCodec,
                      condition: CodingCondition, *, label: str = "") -> tuple[list[np.ndarray], CodedVideo]:
        from vcm_eval.sequence_methods import CodedVideo

        height, width = frames[0].shape[:2]
        t0 = time.perf_counter()
        pictures = [rgb_to_ycbcr(f, chroma_format=self.chroma_format, bit_depth=self.bit_depth) for f in frames]
        convert_s = time.perf_counter() - t0
        video_label = (f"{label} ({pictures[0].width}x{pictures[0].height} {self.chroma_format} x {len(frames)}) "
                       f"at QP {rate_point}")
        stored = coder.encode_sequence(pictures, rate_point, condition, label=video_label)
        decoded, decode_s = coder.decode_sequence(stored.key, FrameSpec.of(pictures[0]), len(pictures),
                                                  label=video_label)
        t0 = time.perf_counter()
        rgb = [ycbcr_to_rgb(d, (height, width)) for d in decoded]
        convert_s += time.perf_counter() - t0
        peak = float((1 << self.bit_depth) - 1)
        psnr = float(np.mean([psnr_db(p.luma, d.luma, peak) for p, d in zip(pictures, decoded)]))
        coded = CodedVideo(entry=self.name, rate_point=int(rate_point), condition=condition.to_dict(),
                           bitstream=stored.key, frame_bits=list(stored.frame_bits),
                           encode_s=0.0 if stored.from_cache else stored.encode_s, decode_s=decode_s,
                           convert_s=convert_s, from_cache=stored.from_cache, psnr_y=psnr, command=stored.command)
        return rgb, coded
