"""The learned entry's one error type, in a module of its own because every other module raises it."""

from __future__ import annotations

from vcm_eval.codecs.base import CodecError


class LearnedFusionError(CodecError):
    """A checkpoint is missing, corrupt or does not fit, or a bitstream does not decode; the message says which.
    A :class:`~vcm_eval.codecs.base.CodecError`, as the failures of the picture codecs are: the command line
    reports it as a user error, not a traceback."""
