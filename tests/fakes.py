"""Test doubles: codecs with known behaviour (imported by tests; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.codecs.base import CodecError, FrameSpec, VideoCodec, check_decoded
from vcm_eval.types import CodedPicture, Frame


class NoiseCodec(VideoCodec):
    """Adds reproducible noise of +-``amplitude`` codes (seeded by the picture content and QP) and
    clips to the bit depth. The "bitstream" is the pickled noisy picture, so bits are meaningless but
    real bytes; decoding returns exactly the noisy picture."""

    name = "noise"

    def __init__(self, amplitude: int = 8) -> None:
        self.amplitude = amplitude
        self.calls = 0

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        self.calls += 1
        seed = int.from_bytes(hashlib.sha256(frame.luma.tobytes() + bytes([qp])).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        peak = (1 << frame.bit_depth) - 1
        noisy = tuple(np.clip(p.astype(np.int64) + rng.integers(-self.amplitude, self.amplitude + 1, p.shape),
                              0, peak).astype(np.uint16) for p in frame.planes)
        return CodedPicture(pickle.dumps(Frame(noisy, frame.bit_depth, frame.chroma_format)), codec=self.identity())

    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        return check_decoded(pickle.loads(bitstream), FrameSpec.of(like), codec=self.name, label=label)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "amplitude": self.amplitude}


class FailingCodec(VideoCodec):
    """Fails on every picture whose label contains ``fail_on`` (all pictures when empty)."""

    name = "failing"

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on
        self.inner = NoiseCodec(4)

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        if self.fail_on in label:
            raise CodecError(f"failing: encoder crashed on {label} (exit code -11) [command: fake-encoder -q {qp}]")
        return self.inner.encode(frame, qp, label=label)

    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        return self.inner.decode(bitstream, like, label=label)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "fail_on": self.fail_on}


class SlowCodec(NoiseCodec):
    """A NoiseCodec that takes ``delay`` seconds per encode, so a test can interrupt a sweep mid-task."""

    name = "slow"

    def __init__(self, amplitude: int = 8, delay: float = 0.3) -> None:
        super().__init__(amplitude)
        self.delay = delay

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        import time

        time.sleep(self.delay)
        return super().encode(frame, qp, label=label)

    def identity(self) -> dict[str, Any]:
        return {"name": NoiseCodec.name, "amplitude": self.amplitude}  # same bitstreams as NoiseCodec


class KillingCodec(NoiseCodec):
    """A NoiseCodec that SIGKILLs a process once, when ``after`` encodes have finished, wherever it runs.

    Every finished encode leaves one file in ``folder`` (named by the frame's content and QP, so a test
    can tell whether a picture was ever coded twice); the encode that finds ``after`` of them claims
    ``folder/killed`` with ``O_EXCL`` (exactly one process in any executor does) and kills ``target``:
    ``"self"``, the process running it (the driver with ``executor=local``, a worker otherwise), or
    ``"group"``, its whole process group (a driver with its local cluster). Once ``killed`` exists it
    codes like a NoiseCodec, so the same command resumes; its bitstreams are NoiseCodec's.
    """

    name = "killing"

    def __init__(self, folder: str, after: int, target: str = "self", amplitude: int = 8) -> None:
        super().__init__(amplitude)
        if target not in ("self", "group"):
            raise ValueError(f"target must be 'self' or 'group', not {target!r}")
        self.folder, self.after, self.target = folder, after, target

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        import signal

        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.glob("encoded-*"))) >= self.after:
            try:
                os.close(os.open(folder / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                if self.target == "group":
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
        coded = super().encode(frame, qp, label=label)
        digest = hashlib.sha256(frame.luma.tobytes() + bytes([qp])).hexdigest()[:16]
        (folder / f"encoded-{digest}-{os.getpid()}-{self.calls}").write_text(label)
        return coded

    def identity(self) -> dict[str, Any]:
        return {"name": NoiseCodec.name, "amplitude": self.amplitude}  # same bitstreams as NoiseCodec


def encoded_frames(folder: str | Path) -> list[str]:
    """Content digests of the frames a :class:`KillingCodec` finished coding into ``folder`` (repeats kept)."""
    return [p.name.split("-")[1] for p in Path(folder).glob("encoded-*")]


class InterruptingCodec(NoiseCodec):
    """A NoiseCodec that raises KeyboardInterrupt (as Ctrl-C does) in its ``after``-th encode of this process."""

    name = "interrupting"

    def __init__(self, after: int, amplitude: int = 8) -> None:
        super().__init__(amplitude)
        self.after = after

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        if self.calls + 1 == self.after:
            self.calls += 1
            raise KeyboardInterrupt
        return super().encode(frame, qp, label=label)

    def identity(self) -> dict[str, Any]:
        return {"name": NoiseCodec.name, "amplitude": self.amplitude}  # same bitstreams as NoiseCodec


class PictureOnlyImageEntry:
    """An image entry that codes still pictures and has no ``code_sequence`` (built as ``_target_`` from YAML)."""

    def __new__(cls, **kwargs: Any):
        from vcm_eval.methods import ImageCodingMethod

        class PictureOnly(ImageCodingMethod):
            def code(self, image, rate_point, coder, *, label=""):
                raise AssertionError("a video CTC must not code pictures one by one")

        return PictureOnly(name=kwargs.get("name", "image"), rate_points=kwargs["rate_points"],
                           bit_depth=kwargs.get("bit_depth", 10))
