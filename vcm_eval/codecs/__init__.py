"""Picture codecs behind one interface (:class:`VideoCodec`), plus the content-addressed bitstream cache."""

from vcm_eval.codecs.base import CodecError, CodecUnavailableError, FrameSpec, VideoCodec
from vcm_eval.codecs.lossless import LosslessCodec
from vcm_eval.codecs.vtm import VTMCodec
from vcm_eval.codecs.vvenc import VVenCCodec
from vcm_eval.codecs.x265 import X265Codec

__all__ = ["CodecError", "CodecUnavailableError", "FrameSpec", "LosslessCodec", "VTMCodec", "VVenCCodec",
           "VideoCodec", "X265Codec"]
