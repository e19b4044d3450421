"""``vtm``: the VVC reference software VTM (EncoderApp / DecoderApp), as the CTC drives it.

Users bring their own VTM build (VTM-12.0 for the paper; no registry carries it). The binaries and
the All-Intra configuration file are found, in this order, from

1. explicit paths: ``encoder_path`` / ``decoder_path`` / ``cfg`` (environment ``VTM_ENCODER``,
   ``VTM_DECODER``, ``VTM_CFG``);
2. a VTM source/build folder: ``vtm_dir`` (environment ``VTM_DIR``), searched for
   ``bin/EncoderAppStatic``, ``bin/EncoderApp`` and ``bin/umake/<compiler>/<arch>/release/...``,
   with the configuration ``cfg/encoder_intra_vtm.cfg``;
3. ``EncoderAppStatic`` / ``EncoderApp`` on ``PATH`` (configuration file then from ``cfg``, or from a
   ``cfg/`` folder above the binary).

One picture is coded per call, with the options of the golden streams in ``shared/golden/vvc``::

    EncoderAppStatic -c encoder_intra_vtm.cfg -i in.yuv -wdt W -hgt H -fr 1 -f 1
        --InputChromaFormat=400 --InputBitDepth=10 --InternalBitDepth=10 --OutputBitDepth=10
        --ConformanceWindowMode=1 -q QP -b out.bin -o /dev/null

A sequence of a video CTC is coded in one call under its condition, with the CTC's configuration file of that
condition from the same ``cfg/`` folder (``encoder_intra_vtm.cfg``, ``encoder_lowdelay_vtm.cfg``,
``encoder_randomaccess_vtm.cfg``), the frame rate and frame count on the command line, as the FCM CTC's scripts
drive it::

    EncoderAppStatic -c encoder_lowdelay_vtm.cfg -i seq.yuv -wdt W -hgt H -fr FPS -f N --IntraPeriod=64
        --InputChromaFormat=400 --InputBitDepth=10 --InternalBitDepth=10 --OutputBitDepth=10
        --ConformanceWindowMode=1 -q QP -b out.bin -o /dev/null

(under AI with ``--TemporalSubsampleRatio=1``: the All-Intra file codes only every 8th picture), and the bits of
each picture are read from the encoder's ``POC ... bits`` lines. VTM-12.0's random-access file has a GOP of 32, so
its intra period must be a multiple of 32 (or -1); the encoder says so when it is not.

``--ConformanceWindowMode=1`` pads sizes that are not a multiple of the minimum CU size and signals
the padding as the conformance window (decoders crop it); for other sizes it changes nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from vcm_eval.codecs.base import CodecUnavailableError, CodingCondition
from vcm_eval.codecs.external import EncodeJob, ExternalCodec, env_or, find_executable
from vcm_eval.hashing import file_sha256

#: configuration file of the CTC All-Intra condition, under ``cfg/`` of a VTM tree.
DEFAULT_CFG_NAME = "encoder_intra_vtm.cfg"
#: configuration file of each coding condition of a video CTC, beside the All-Intra one
CONDITION_CFG_NAMES = {"AI": DEFAULT_CFG_NAME, "LD": "encoder_lowdelay_vtm.cfg", "RA": "encoder_randomaccess_vtm.cfg"}


@lru_cache(maxsize=16)
def _cfg_sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def _binary_candidates(root: Path, names: tuple[str, ...]) -> list[Path]:
    """Where a VTM/HM build puts its binaries, best first: CMake (``bin/``), the bundled Makefile
    (``bin/umake/<compiler>/<arch>/release``), or ``root`` itself being the binary folder."""
    found: list[Path] = []
    for name in names:
        found += [root / "bin" / name, root / name]
    for name in names:
        found += [Path(p) for p in sorted(glob.glob(str(root / "bin" / "umake" / "*" / "*" / "release" / name)))]
        found += [Path(p) for p in sorted(glob.glob(str(root / "bin" / "*" / name)))]
    return found


class VTMCodec(ExternalCodec):
    """VVC through VTM's EncoderApp (All-Intra configuration, one picture per call).

    Args:
        vtm_dir: a VTM source/build folder (``$VTM_DIR``).
        encoder_path: EncoderApp(Static) binary (``$VTM_ENCODER``); overrides ``vtm_dir``.
        decoder_path: DecoderApp(Static) binary (``$VTM_DECODER``); by default the one beside the encoder.
        cfg: encoder configuration file, a path or a file name under ``<vtm_dir>/cfg`` (``$VTM_CFG``);
            default ``encoder_intra_vtm.cfg``. Its sha256 is part of the identity.
        internal_bit_depth: ``--InternalBitDepth``; None = the picture's bit depth (10 in the CTC).
        **kwargs: :class:`~vcm_eval.codecs.external.ExternalCodec` options (``decoder``, ``timeout_s``,
            ``expected_version``, ``strict_version``, ``log_dir``, ``keep_logs``, ``verify``, ``tmp_dir``,
            ``extra_options``).

    Example::

        >>> codec = VTMCodec(vtm_dir="/opt/VVCSoftware_VTM", expected_version="12.0")
        >>> coded = codec.encode(Frame.gray(picture), qp=41, label="img1/c5")
        >>> codec.decode(coded.bitstream, FrameSpec(*picture.shape)).luma.shape == picture.shape
        True
    """

    name = "vtm"
    encoder_banner = r"VVCSoftware: VTM Encoder Version (\S+)"
    decoder_banner = r"VVCSoftware: VTM Decoder Version (\S+)"
    encoder_title = "VTM encoder (EncoderApp)"
    #: binary names, preferred first; HM-like subclasses override these and the environment names.
    encoder_names: tuple[str, ...] = ("EncoderAppStatic", "EncoderApp")
    decoder_names: tuple[str, ...] = ("DecoderAppStatic", "DecoderApp")
    env_dir, env_encoder, env_decoder, env_cfg = "VTM_DIR", "VTM_ENCODER", "VTM_DECODER", "VTM_CFG"
    missing_hint = ("Build VTM-12.0 (see docs/codecs.md) and set codec.vtm_dir (or the environment variable "
                    "VTM_DIR) to its folder, or codec.encoder_path / VTM_ENCODER to its EncoderAppStatic; "
                    "or run with codec=vvenc or codec=x265.")

    def __init__(
        self,
        *,
        vtm_dir: str | os.PathLike | None = None,
        encoder_path: str | os.PathLike | None = None,
        decoder_path: str | os.PathLike | None = None,
        cfg: str | os.PathLike | None = None,
        internal_bit_depth: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vtm_dir = None if vtm_dir in (None, "") else os.fspath(vtm_dir)
        self.encoder_path = None if encoder_path in (None, "") else os.fspath(encoder_path)
        self.decoder_path = None if decoder_path in (None, "") else os.fspath(decoder_path)
        self.cfg = None if cfg in (None, "") else os.fspath(cfg)
        self.internal_bit_depth = None if internal_bit_depth is None else int(internal_bit_depth)

    # ------------------------------------------------------------------ finding the build

    def _root(self) -> Path | None:
        root = env_or(self.vtm_dir, self.env_dir)
        return Path(root).expanduser() if root else None

    def _explicit(self, value: str | None, env_var: str, key: str) -> Path | None:
        path = env_or(value, env_var)
        if path is None:
            return None
        path = Path(path).expanduser()
        source = f"codec.{key}" if value else f"${env_var}"
        if not path.is_file():
            raise CodecUnavailableError(f"{self.name}: {source} = {path} does not exist. {self.missing_hint}")
        if not os.access(path, os.X_OK):
            raise CodecUnavailableError(f"{self.name}: {source} = {path} is not executable (chmod +x it)")
        return path

    def find_encoder(self) -> Path:
        explicit = self._explicit(self.encoder_path, self.env_encoder, "encoder_path")
        if explicit is not None:
            return explicit
        root = self._root()
        if root is not None:
            if not root.is_dir():
                raise CodecUnavailableError(f"{self.name}: the build folder {root} (codec.vtm_dir / "
                                            f"${self.env_dir}) does not exist. {self.missing_hint}")
            candidates = _binary_candidates(root, self.encoder_names)
            found = find_executable(candidates)
            if found is None:
                raise CodecUnavailableError(
                    f"{self.name}: no encoder binary in {root}; looked for "
                    f"{', '.join(str(p.relative_to(root)) for p in candidates[:6])} and bin/umake/*/*/release/. "
                    "Build it first (cmake --build ... --target EncoderApp). " + self.missing_hint)
            return found
        for name in self.encoder_names:
            on_path = shutil.which(name)
            if on_path:
                return Path(on_path)
        raise CodecUnavailableError(
            f"{self.name}: no VTM encoder configured: codec.encoder_path / ${self.env_encoder} and "
            f"codec.vtm_dir / ${self.env_dir} are unset and no {' or '.join(self.encoder_names)} is on PATH. "
            + self.missing_hint)

    def find_decoder(self) -> Path | None:
        explicit = self._explicit(self.decoder_path, self.env_decoder, "decoder_path")
        if explicit is not None:
            return explicit
        root = self._root()
        if root is not None and root.is_dir():
            found = find_executable(_binary_candidates(root, self.decoder_names))
            if found is not None:
                return found
        try:
            encoder = self.find_encoder()
        except CodecUnavailableError:
            encoder = None
        if encoder is not None:
            sibling = find_executable([encoder.parent / name for name in self.decoder_names])
            if sibling is not None:
                return sibling
        for name in self.decoder_names:
            on_path = shutil.which(name)
            if on_path:
                return Path(on_path)
        return None

    def find_config(self) -> Path:
        """The encoder configuration file; raises :class:`CodecUnavailableError` with the fix when absent."""
        value = env_or(self.cfg, self.env_cfg)
        root = self._root()
        name = DEFAULT_CFG_NAME
        if value is not None:
            path = Path(value).expanduser()
            if path.is_file():
                return path
            if path.is_absolute() or len(path.parts) > 1:
                source = "codec.cfg" if self.cfg else f"${self.env_cfg}"
                raise CodecUnavailableError(f"{self.name}: {source} = {path} does not exist")
            name = value
        searched: list[Path] = []
        if root is not None:
            searched.append(root / "cfg" / name)
        try:
            encoder = self.find_encoder().resolve()
        except CodecUnavailableError:
            encoder = None
        if encoder is not None:
            searched += [parent / "cfg" / name for parent in list(encoder.parents)[:6]]
        for path in searched:
            if path.is_file():
                return path
        raise CodecUnavailableError(
            f"{self.name}: encoder configuration {name} not found (looked in "
            f"{', '.join(str(p) for p in searched) or 'no folder: neither vtm_dir nor an encoder is set'}); "
            f"set codec.cfg (or ${self.env_cfg}) to the All-Intra file cfg/{DEFAULT_CFG_NAME} of your VTM tree")

    # ------------------------------------------------------------------ command line

    def encode_args(self, job: EncodeJob) -> list[str]:
        """The CTC All-Intra command line for one picture (see the module docstring)."""
        internal = job.bit_depth if self.internal_bit_depth is None else str(self.internal_bit_depth)
        return [
            "-c", job.config_path,
            "-i", job.input_path,
            "-wdt", job.width,
            "-hgt", job.height,
            "-fr", "1",
            "-f", "1",
            f"--InputChromaFormat={job.chroma_format}",
            f"--InputBitDepth={job.bit_depth}",
            f"--InternalBitDepth={internal}",
            f"--OutputBitDepth={job.bit_depth}",
            "--ConformanceWindowMode=1",
            "-q", job.qp,
            "-b", job.bitstream_path,
            # The reconstruction is not needed: the bitstream is decoded like any other.
            "-o", os.devnull,
            *self.extra_options,
        ]

    codes_sequences = True

    def condition_config(self, mode: str) -> Path:
        """The configuration file of coding condition ``mode``: the All-Intra file itself for ``AI``, else the
        CTC's file of that condition in the All-Intra file's folder."""
        intra = self.find_config()
        if mode == "AI":
            return intra
        path = intra.parent / CONDITION_CFG_NAMES[mode]
        if not path.is_file():
            raise CodecUnavailableError(f"{self.name}: the {mode} configuration {path} does not exist; a VTM tree has "
                                        f"it in cfg/ beside {intra.name}")
        return path

    def sequence_args(self, job: EncodeJob, condition: CodingCondition, num_frames: int) -> list[str]:
        """The CTC's command line for a sequence under ``condition`` (see the module docstring)."""
        args = self.encode_args(job)
        args[args.index("-c") + 1] = str(self.condition_config(condition.mode))
        args[args.index("-fr") + 1] = str(max(1, round(condition.frame_rate)))
        args[args.index("-f") + 1] = str(num_frames)
        at = args.index("-q")
        # the All-Intra file codes every 8th picture (TemporalSubsampleRatio 8, the still-picture CTC's sampling);
        # a video CTC codes every frame
        every_frame = ["--TemporalSubsampleRatio=1"] if condition.mode == "AI" else []
        return [*args[:at], f"--IntraPeriod={condition.intra_period}", *every_frame, *args[at:]]

    def identity_extra(self) -> dict[str, Any]:
        cfg = self.find_config()
        stat = cfg.stat()
        extra = {"cfg_name": cfg.name, "cfg_sha256": _cfg_sha256(str(cfg), stat.st_mtime_ns, stat.st_size)}
        for mode in ("LD", "RA"):  # a sequence's bitstream depends on its condition's file too
            path = cfg.parent / CONDITION_CFG_NAMES[mode]
            if path.is_file():
                stat = path.stat()
                extra[f"cfg_{mode.lower()}_sha256"] = _cfg_sha256(str(path), stat.st_mtime_ns, stat.st_size)
        return extra

    def __repr__(self) -> str:
        where = self.encoder_path or self.vtm_dir or f"${self.env_dir}"
        return f"{type(self).__name__}({where!r}, decoder={self.decoder!r}, expected_version={self.expected_version!r})"
