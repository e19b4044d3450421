"""``vvenc``: Fraunhofer VVenC's ``vvencFFapp``, a much faster VVC encoder than VTM.

The binary is found from ``encoder_path`` (``$VVENC_ENCODER``), a VVenC source/build folder
``vvenc_dir`` (``$VVENC_DIR``; CMake puts the binary in ``bin/release-static/``), or ``PATH``.

One picture per call, with the options of the golden VVenC streams::

    vvencFFapp --preset medium --IntraQPOffset=0 -i in.yuv -s WxH --InputChromaFormat=400
        --InputBitDepth=10 --InternalBitDepth=10 --OutputBitDepth=10 -fr 1 -f 1 -q QP -t 1 -b out.266

The presets lower the QP of intra slices by 3 (``IntraQPOffset=-3``); ``--IntraQPOffset=0`` must come
*after* ``--preset`` (options apply in order), so that the slice QP is the QP asked for, as in VTM's
All-Intra configuration. ``vvencapp`` (the simple front end) has no such option and is rejected.
One encoder thread (``-t 1``): parallelism comes from coding many pictures at once, and the
bitstream does not depend on the machine's core count. VVenC has no decoder: streams are decoded
by PyAV's native decoder, or by a VTM DecoderApp given as ``decoder_path`` (``$VTM_DECODER``).

A sequence of a video CTC is coded in one call, ``-fr FPS -f N`` and the condition's options after the preset
(:data:`CONDITION_OPTIONS`): AI ``--IntraPeriod 1 --GOPSize 1``; LD a GOP of 8 without reordering
(``--GOPSize 8 --PicReordering 0 --DecodingRefreshType none --POC0IDR 1``); RA the preset's GOP of 32 with CRA
refresh every intra period (``--DecodingRefreshType cra --POC0IDR 1 --STA 0``). The bits of each picture come
from its ``POC ... bits`` lines.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from vcm_eval.codecs.base import CodecUnavailableError, CodingCondition
from vcm_eval.codecs.external import EncodeJob, ExternalCodec, env_or, find_executable
from vcm_eval.errors import SettingError

_BINARY = "vvencFFapp"

#: vvencFFapp's options of each coding condition (its library has no low-delay switch: LD is a GOP of 8 without
#: reordering, no refresh pictures, POC 0 IDR; STA off under RA so that only the intra period places intra pictures)
CONDITION_OPTIONS = {
    "AI": lambda period: ["--IntraPeriod", "1", "--GOPSize", "1"],
    "LD": lambda period: ["--IntraPeriod", str(period), "--DecodingRefreshType", "none", "--GOPSize", "8",
                          "--PicReordering", "0", "--POC0IDR", "1"],
    "RA": lambda period: ["--IntraPeriod", str(period), "--DecodingRefreshType", "cra", "--POC0IDR", "1",
                          "--STA", "0"],
}


class VVenCCodec(ExternalCodec):
    """VVC through VVenC's ``vvencFFapp`` at a fixed slice QP.

    Args:
        vvenc_dir: a VVenC source/build or install folder (``$VVENC_DIR``).
        encoder_path: the ``vvencFFapp`` binary (``$VVENC_ENCODER``); overrides ``vvenc_dir``.
        decoder_path: a VTM DecoderApp for ``decoder=binary`` (``$VTM_DECODER``).
        preset: VVenC preset (``faster``, ``fast``, ``medium``, ``slow``, ``slower``); part of the identity.
        threads: encoder threads (``-t``); 1 keeps runs independent of the machine.
        **kwargs: :class:`~vcm_eval.codecs.external.ExternalCodec` options.

    Example::

        >>> codec = VVenCCodec(vvenc_dir="/opt/vvenc", preset="medium")
        >>> coded = codec.encode(Frame.gray(picture), qp=41, label="img1/c5")
    """

    name = "vvenc"
    encoder_banner = r"vvencFFapp(?: version|: Fraunhofer VVC Encoder ver\.)\s+(\d[\w.\-]*)"
    encoder_probe_args = ("--version",)
    encoder_title = "VVenC encoder (vvencFFapp)"
    missing_hint = ("Build VVenC (see docs/codecs.md) and set codec.vvenc_dir (or VVENC_DIR) to its folder, "
                    "or codec.encoder_path / VVENC_ENCODER to its vvencFFapp; or run with codec=x265.")

    def __init__(
        self,
        *,
        vvenc_dir: str | os.PathLike | None = None,
        encoder_path: str | os.PathLike | None = None,
        decoder_path: str | os.PathLike | None = None,
        preset: str = "medium",
        threads: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(preset)):
            raise SettingError(f"vvenc: preset must be one word such as 'medium', got {preset!r}")
        if int(threads) < 1:
            raise SettingError(f"vvenc: threads must be at least 1, got {threads}")
        self.vvenc_dir = None if vvenc_dir in (None, "") else os.fspath(vvenc_dir)
        self.encoder_path = None if encoder_path in (None, "") else os.fspath(encoder_path)
        self.decoder_path = None if decoder_path in (None, "") else os.fspath(decoder_path)
        self.preset = str(preset)
        self.threads = int(threads)

    def find_encoder(self) -> Path:
        explicit = env_or(self.encoder_path, "VVENC_ENCODER")
        if explicit is not None:
            path = Path(explicit).expanduser()
            source = "codec.encoder_path" if self.encoder_path else "$VVENC_ENCODER"
            if not path.is_file():
                raise CodecUnavailableError(f"vvenc: {source} = {path} does not exist. {self.missing_hint}")
            if not os.access(path, os.X_OK):
                raise CodecUnavailableError(f"vvenc: {source} = {path} is not executable (chmod +x it)")
            return path
        root = env_or(self.vvenc_dir, "VVENC_DIR")
        if root is not None:
            root_path = Path(root).expanduser()
            candidates = [root_path / "bin" / sub / _BINARY for sub in ("release-static", "release-shared", "")]
            candidates += [root_path / "install" / "bin" / _BINARY, root_path / _BINARY]
            found = find_executable(candidates)
            if found is None:
                raise CodecUnavailableError(
                    f"vvenc: no {_BINARY} in {root_path} (looked in "
                    f"{', '.join(str(p.relative_to(root_path)) for p in candidates)}). {self.missing_hint}")
            return found
        on_path = shutil.which(_BINARY)
        if on_path:
            return Path(on_path)
        raise CodecUnavailableError(
            f"vvenc: no VVenC encoder configured: codec.encoder_path / $VVENC_ENCODER and codec.vvenc_dir / "
            f"$VVENC_DIR are unset and no {_BINARY} is on PATH. {self.missing_hint}")

    def find_decoder(self) -> Path | None:
        explicit = env_or(self.decoder_path, "VTM_DECODER")
        if explicit is None:
            return None
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise CodecUnavailableError(f"vvenc: decoder {path} (codec.decoder_path / $VTM_DECODER) is not an "
                                        "executable file")
        return path

    def encode_args(self, job: EncodeJob) -> list[str]:
        """vvencFFapp's command line for one picture at slice QP ``job.qp`` (see the module docstring)."""
        return [
            "--preset", self.preset,
            "--IntraQPOffset=0",
            "-i", job.input_path,
            "-s", f"{job.width}x{job.height}",
            f"--InputChromaFormat={job.chroma_format}",
            f"--InputBitDepth={job.bit_depth}",
            f"--InternalBitDepth={job.bit_depth}",
            f"--OutputBitDepth={job.bit_depth}",
            "-fr", "1",
            "-f", "1",
            "-q", job.qp,
            "-t", str(self.threads),
            "-b", job.bitstream_path,
            *self.extra_options,
        ]

    codes_sequences = True

    def sequence_args(self, job: EncodeJob, condition: CodingCondition, num_frames: int) -> list[str]:
        """vvencFFapp's command line for a sequence under ``condition`` (see the module docstring)."""
        args = self.encode_args(job)
        args[args.index("-fr") + 1] = str(max(1, round(condition.frame_rate)))
        args[args.index("-f") + 1] = str(num_frames)
        at = args.index("--IntraQPOffset=0") + 1  # after the preset, which would reset what follows it otherwise
        return [*args[:at], *CONDITION_OPTIONS[condition.mode](condition.intra_period), *args[at:]]

    def identity_extra(self) -> dict[str, Any]:
        return {"preset": self.preset, "threads": self.threads}

    def __repr__(self) -> str:
        where = self.encoder_path or self.vvenc_dir or "$VVENC_DIR"
        return f"VVenCCodec({where!r}, preset={self.preset!r}, decoder={self.decoder!r})"
