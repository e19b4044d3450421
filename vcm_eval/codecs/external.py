"""Running external encoder/decoder binaries (VTM, VVenC, and HM-like codecs) safely.

:class:`ExternalCodec` is the runner; subclasses only say where their binaries are and how their
command lines look (:meth:`ExternalCodec.encode_args`), the pattern of CompressAI-Vision's codecs.

Every call runs in its own temporary folder (removed afterwards, also on failure) with that folder as
the working directory, so nothing is written beside the user's binaries. The binary runs in a new
process group with its output going to a log file; a hang past ``timeout_s`` kills the whole group.
Any failure (missing binary, a binary that is not the expected encoder, non-zero exit, a signal,
a timeout, an empty or undecodable bitstream, a decoded picture of the wrong size) raises
:class:`CodecError` naming the picture, the QP and the command, with the log copied to ``log_dir``.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import av

from vcm_eval.codecs.base import (
    CodecError,
    CodecUnavailableError,
    CodedSequence,
    CodingCondition,
    FrameSpec,
    VideoCodec,
    check_decoded,
)
from vcm_eval.codecs.x265 import decode_annexb, decode_annexb_frames
from vcm_eval.codecs.yuv import frame_from_bytes, frame_num_bytes, frame_to_bytes
from vcm_eval.errors import SettingError
from vcm_eval.types import CodedPicture, Frame

log = logging.getLogger(__name__)

DECODER_MODES = ("auto", "pyav", "binary")
KEEP_LOG_MODES = ("failure", "always")
#: seconds a version probe (``--help`` / ``--version``) may take before the binary counts as hung.
PROBE_TIMEOUT_S = 60.0
_LOG_TAIL_LINES = 15
#: version warnings already logged in this process (one line per binary, not one per picture).
_WARNED: set[str] = set()


@dataclass(frozen=True)
class EncodeJob:
    """What one encoder command line needs. Fields are strings so that :meth:`ExternalCodec.identity`
    can build the command with placeholders (``{input}``, ``{qp}``, ...) instead of real values."""

    input_path: str
    bitstream_path: str
    width: str
    height: str
    bit_depth: str
    chroma_format: str
    qp: str
    #: the encoder's configuration file, for encoders that take one (VTM's ``-c``).
    config_path: str = "{cfg}"

    @classmethod
    def placeholders(cls) -> EncodeJob:
        return cls("{input}", "{bitstream}", "{width}", "{height}", "{bit_depth}", "{chroma_format}", "{qp}")


@dataclass(frozen=True)
class Banner:
    """What a binary says about itself: the first line that matched, and the version in it."""

    line: str
    version: str


def parse_banner(text: str, pattern: str) -> Banner | None:
    """First line of ``text`` matching ``pattern`` (one group: the version), or None."""
    regex = re.compile(pattern)
    for line in text.splitlines():
        match = regex.search(line)
        if match:
            return Banner(line.strip(), match.group(1))
    return None


def version_matches(reported: str, expected: str) -> bool:
    """True when ``reported`` is ``expected`` or a finer version of it (expected ``12.0`` accepts
    ``12.0`` and ``12.0.1``, not ``12.01`` or ``2.0``)."""
    reported, expected = reported.strip(), str(expected).strip()
    return reported == expected or reported.startswith(expected + ".")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "picture"


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join("    | " + ln for ln in tail)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


class _Timeout(Exception):
    pass


def run_logged(args: list[str], *, cwd: Path, log_path: Path, timeout_s: float | None) -> tuple[int, float]:
    """Run ``args`` in ``cwd`` with stdout and stderr appended to ``log_path``.

    Returns:
        (return code, wall seconds). A negative return code is the signal that ended the process.

    Raises:
        _Timeout: past ``timeout_s``; the process group is killed first.
        OSError: when the binary cannot be started.
    """
    start = time.perf_counter()
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise _Timeout from None
        except BaseException:
            # Interrupted (Ctrl-C, a cancelled task): leave no encoder running behind.
            _kill_group(proc)
            raise
    return returncode, time.perf_counter() - start


@lru_cache(maxsize=64)
def _probe_output(path: str, mtime_ns: int, size: int, args: tuple[str, ...]) -> str:
    """Output of ``path args`` (stdout + stderr, first 64 KiB), cached per binary file version."""
    with tempfile.TemporaryDirectory(prefix="vcm_eval_probe_") as tmp:
        try:
            proc = subprocess.run([path, *args], cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=PROBE_TIMEOUT_S, start_new_session=True)
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout[:65536].decode(errors="replace")


def probe(path: Path, args: tuple[str, ...]) -> str:
    """Run ``path args`` once per binary version and return what it printed."""
    stat = path.stat()
    return _probe_output(str(path), stat.st_mtime_ns, stat.st_size, tuple(args))


@lru_cache(maxsize=8)
def pyav_can_decode(container_format: str) -> bool:
    """True when this PyAV build has a native decoder for ``container_format`` (``vvc``, ``hevc``)."""
    try:
        av.codec.Codec(container_format, "r")
    except Exception:  # noqa: BLE001 - an unknown codec raises different types across PyAV versions
        return False
    return True


def find_executable(candidates: list[Path]) -> Path | None:
    """First of ``candidates`` that is an executable file."""
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def env_or(value: str | os.PathLike | None, env_var: str) -> str | None:
    """``value`` when given, else the environment variable ``env_var`` when set and non-empty."""
    if value not in (None, ""):
        return os.fspath(value)
    env = os.environ.get(env_var, "").strip()
    return env or None


class ExternalCodec(VideoCodec):
    """A codec driven through encoder (and optionally decoder) binaries; see the module docstring.

    Args:
        decoder: ``auto`` (PyAV's native decoder when it decodes the stream, else the decoder binary),
            ``pyav``, or ``binary``.
        expected_version: the encoder version the CTC asks for (e.g. ``"12.0"``); None skips the check.
        strict_version: a version mismatch raises :class:`CodecUnavailableError` instead of a warning.
        timeout_s: wall-clock limit of one encoder or decoder run; None for none.
        log_dir: where encoder logs are kept (always on failure; on success with ``keep_logs="always"``).
            None: ``<system temp>/vcm_eval_codec_logs``.
        keep_logs: ``failure`` or ``always``.
        verify: decode every new bitstream once and check it is one picture of the coded size, which
            catches empty, truncated and foreign output before it is cached.
        tmp_dir: parent folder of the per-call temporary folders (None: the system default).
        extra_options: further encoder arguments, appended last (so they override); part of the identity.
    """

    qp_range = (0, 63)  # VVC

    #: Annex-B format name of the stream for PyAV (``vvc`` or ``hevc``).
    annexb_format: str = "vvc"
    #: regex with one group (the version) matched against the encoder's probe output.
    encoder_banner: str = ""
    #: regex for the decoder binary; empty: no decoder binary check.
    decoder_banner: str = r"VVCSoftware: VTM Decoder Version (\S+)"
    #: arguments that make the encoder print its banner and exit.
    encoder_probe_args: tuple[str, ...] = ("--help",)
    decoder_probe_args: tuple[str, ...] = ("--help",)
    #: how the encoder is named in messages ("VTM EncoderApp").
    encoder_title: str = "encoder"
    #: what to tell a user whose encoder is missing.
    missing_hint: str = ""

    def __init__(
        self,
        *,
        decoder: str = "auto",
        expected_version: str | None = None,
        strict_version: bool = False,
        timeout_s: float | None = 3600.0,
        log_dir: str | os.PathLike | None = None,
        keep_logs: str = "failure",
        verify: bool = True,
        tmp_dir: str | os.PathLike | None = None,
        extra_options: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        if decoder not in DECODER_MODES:
            raise SettingError(f"{self.name}: decoder must be one of {DECODER_MODES}, got {decoder!r}")
        if keep_logs not in KEEP_LOG_MODES:
            raise SettingError(f"{self.name}: keep_logs must be one of {KEEP_LOG_MODES}, got {keep_logs!r}")
        if timeout_s is not None and float(timeout_s) <= 0:
            raise SettingError(f"{self.name}: timeout_s must be positive or null, got {timeout_s}")
        self.decoder = decoder
        self.expected_version = None if expected_version in (None, "") else str(expected_version)
        self.strict_version = bool(strict_version)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.log_dir = None if log_dir in (None, "") else Path(log_dir)
        self.keep_logs = keep_logs
        self.verify = bool(verify)
        self.tmp_dir = None if tmp_dir in (None, "") else Path(tmp_dir)
        self.extra_options = [str(opt) for opt in (extra_options or [])]

    # ------------------------------------------------------------------ what subclasses provide

    @abc.abstractmethod
    def find_encoder(self) -> Path:
        """Path of the encoder binary; raises :class:`CodecUnavailableError` with the fix when absent."""

    def find_decoder(self) -> Path | None:
        """Path of the decoder binary, or None when none is configured or found."""
        return None

    def find_config(self) -> Path | None:
        """The encoder's configuration file, for encoders that take one; None otherwise."""
        return None

    @abc.abstractmethod
    def encode_args(self, job: EncodeJob) -> list[str]:
        """Encoder arguments (without the binary) for ``job``; a pure function of the job and options."""

    def decode_args(self, bitstream_path: str, output_path: str, bit_depth: int) -> list[str]:
        """Decoder arguments (without the binary): VTM/HM DecoderApp style."""
        return ["-b", bitstream_path, "-o", output_path, "-d", str(bit_depth)]

    def identity_extra(self) -> dict[str, Any]:
        """Subclass-specific identity entries (configuration file hash, preset, ...)."""
        return {}

    # ------------------------------------------------------------------ binaries and versions

    def encoder_info(self) -> tuple[Path, Banner]:
        """The encoder's path and banner; raises :class:`CodecUnavailableError` when it is missing or is
        not the expected encoder."""
        path = self.find_encoder()
        return path, self._banner(path, self.encoder_banner, self.encoder_probe_args, self.encoder_title)

    def _banner(self, path: Path, pattern: str, args: tuple[str, ...], title: str) -> Banner:
        try:
            text = probe(path, args)
        except OSError as exc:
            raise CodecUnavailableError(
                f"{self.name}: {path} cannot be run ({exc}); it should be the {title} binary. {self.missing_hint}"
            ) from exc
        banner = parse_banner(text, pattern)
        if banner is None:
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(nothing)")
            raise CodecUnavailableError(
                f"{self.name}: {path} is not the {title}: `{path.name} {' '.join(args)}` printed {first!r}, "
                f"not a line matching {pattern!r}. Point the configuration at the right binary. {self.missing_hint}"
            )
        return banner

    def version_warning(self, version: str) -> str | None:
        """The mismatch message when ``version`` is not :attr:`expected_version`, else None."""
        if self.expected_version is None or version_matches(version, self.expected_version):
            return None
        return (f"{self.name}: the encoder reports version {version} but the CTC asks for "
                f"{self.expected_version}; results are not comparable with the reference")

    def _checked_encoder(self) -> tuple[Path, Banner, str | None]:
        path, banner = self.encoder_info()
        warning = self.version_warning(banner.version)
        if warning and self.strict_version:
            raise CodecUnavailableError(
                f"{warning} (strict_version is set; point the configuration at a {self.expected_version} build "
                "or set strict_version=false to run anyway)")
        if warning and warning not in _WARNED:
            _WARNED.add(warning)
            log.warning(warning)
        return path, banner, warning

    def check_available(self) -> None:
        self._checked_encoder()
        self.find_config()
        if self.decoder == "binary":
            self._decoder_path(required=True)
        elif self.decoder == "pyav" and not pyav_can_decode(self.annexb_format):
            raise CodecUnavailableError(
                f"{self.name}: this PyAV build has no native {self.annexb_format} decoder; set decoder=binary "
                "with a decoder binary, or install av>=14 from PyPI")

    def _decoder_path(self, *, required: bool) -> Path | None:
        path = self.find_decoder()
        if path is None:
            if required:
                raise CodecUnavailableError(
                    f"{self.name}: decoder=binary but no decoder binary is configured or found; "
                    f"set it in the codec configuration, or use decoder=pyav. {self.missing_hint}")
            return None
        if self.decoder_banner:
            self._banner(path, self.decoder_banner, self.decoder_probe_args, "decoder")
        return path

    def _run_checked(self, args: list[str], tmp: Path, log_path: Path, fail: Callable[[str], CodecError],
                     role: str, *, exit_hint: str = "") -> float:
        """Run an encoder/decoder command; any way it can fail becomes ``fail(reason)``. Returns wall seconds."""
        try:
            returncode, elapsed = run_logged(args, cwd=tmp, log_path=log_path, timeout_s=self.timeout_s)
        except _Timeout:
            raise fail(f"no result after {self.timeout_s:g} s (timeout_s); the {role} and its child "
                       "processes were killed") from None
        except OSError as exc:
            raise fail(f"the {role} could not be started ({exc})") from exc
        if returncode < 0:
            raise fail(f"the {role} was killed by signal {_signal_name(-returncode)} (crashed)")
        if returncode != 0:
            raise fail(f"the {role} exited with status {returncode}{exit_hint}")
        return elapsed

    # ------------------------------------------------------------------ identity

    def identity(self) -> dict[str, Any]:
        """Name, version as the binary reports it, options with placeholders, subclass extras.

        The binary's path is left out on purpose, so that the same build at another path (another
        machine of a cluster) shares cache entries; it is recorded with each result instead.
        """
        _, banner, warning = self._checked_encoder()
        return self._identity_of(banner, warning)

    def _identity_of(self, banner: Banner, warning: str | None) -> dict[str, Any]:
        ident: dict[str, Any] = {"name": self.name, "version": banner.version}
        ident.update(self.identity_extra())
        ident["options"] = self.encode_args(EncodeJob.placeholders())
        if warning:
            ident["version_warning"] = warning
        return ident

    # ------------------------------------------------------------------ encode

    def _check_frame(self, frame: Frame, qp: int, label: str) -> None:
        if not self.supports(frame.chroma_format):
            raise CodecError(f"{self.name}: {label or 'picture'} is {frame.chroma_format}, "
                             "which this codec does not code")
        if frame.chroma_format == "420" and (frame.width % 2 or frame.height % 2):
            raise CodecError(f"{self.name}: {label or 'picture'} is 4:2:0 of odd size {frame.width}x{frame.height}; "
                             "VVC codes 4:2:0 pictures of even width and height only: pad it first")
        if not 8 <= frame.bit_depth <= 16:
            raise CodecError(f"{self.name}: {label or 'picture'} has bit depth {frame.bit_depth}, outside 8..16")
        self.check_qp(qp, label=label)

    def encode(self, frame: Frame, qp: int, *, label: str = "") -> CodedPicture:
        """Code ``frame`` at ``qp`` with the encoder binary; see the class docstring for failures."""
        self._check_frame(frame, qp, label)
        what = f"{label or 'picture'} ({frame.width}x{frame.height} {frame.chroma_format} {frame.bit_depth}-bit)"

        def verify(bitstream: bytes) -> None:
            self.decode(bitstream, FrameSpec.of(frame), label=label)

        bitstream, args, elapsed, record, _ = self._run_encoder([frame], qp, label, what, self.encode_args, verify)
        return CodedPicture(bitstream, codec=record, command=args, encode_s=elapsed)

    def encode_sequence(self, frames: Sequence[Frame], qp: int, condition: CodingCondition, *,
                        label: str = "") -> CodedSequence:
        """Code ``frames`` as one sequence under ``condition`` (:meth:`sequence_args`); the bits of each picture
        come from the encoder's per-picture log lines (:attr:`picture_bits_pattern`), the parameter sets' bits
        counted with the first picture."""
        if not self.codes_sequences:
            return super().encode_sequence(frames, qp, condition, label=label)
        if not frames:
            raise CodecError(f"{self.name}: {label or 'sequence'} has no frames")
        for frame in frames:
            self._check_frame(frame, qp, label)
        first = frames[0]
        what = (f"{label or 'sequence'} ({len(frames)} frames of {first.width}x{first.height} {first.chroma_format} "
                f"{first.bit_depth}-bit, {condition.mode})")

        def verify(bitstream: bytes) -> None:
            self.decode_sequence(bitstream, FrameSpec.of(first), len(frames), label=label)

        bitstream, args, elapsed, record, log_text = self._run_encoder(
            frames, qp, label, what, lambda job: self.sequence_args(job, condition, len(frames)), verify)
        bits: dict[int, int] = {}
        for match in re.finditer(self.picture_bits_pattern, log_text, flags=re.MULTILINE):
            bits[int(match.group(1))] = int(match.group(2))
        if sorted(bits) != list(range(len(frames))):
            raise CodecError(f"{self.name}: the encoder log of {what} at QP {qp} reports the bits of pictures "
                             f"{sorted(bits)[:8]}..., not of each of the {len(frames)} frames; cannot split the rate "
                             f"per frame\n  command: {shlex.join(args)}")
        frame_bits = [bits[i] for i in range(len(frames))]
        frame_bits[0] += max(0, 8 * len(bitstream) - sum(frame_bits))  # parameter sets and SEI count as rate too
        return CodedSequence(bitstream, frame_bits, record, elapsed, args)

    def decode_sequence(self, bitstream: bytes, like: Frame | FrameSpec, num_frames: int, *,
                        label: str = "") -> list[Frame]:
        """Decode ``num_frames`` pictures (display order) with PyAV or the decoder binary, as :attr:`decoder` says."""
        if not self.codes_sequences:
            return super().decode_sequence(bitstream, like, num_frames, label=label)
        spec = FrameSpec.of(like)
        use_pyav = self.decoder == "pyav" or (self.decoder == "auto" and pyav_can_decode(self.annexb_format))
        if use_pyav:
            return decode_annexb_frames(bitstream, self.annexb_format, spec, num_frames, codec=self.name, label=label)
        data = self._decode_to_yuv(bitstream, spec, label)
        size = frame_num_bytes(spec)
        if len(data) != size * num_frames:
            raise CodecError(f"{self.name}: {label or 'sequence'} decodes to {len(data) / size:g} pictures of "
                             f"{spec!r}, expected {num_frames}; the bitstream is truncated or corrupt")
        return [check_decoded(frame_from_bytes(data[i * size:(i + 1) * size], spec), spec, codec=self.name,
                              label=label) for i in range(num_frames)]

    #: whether :meth:`sequence_args` codes a sequence as one stream; otherwise sequences are coded All-Intra, one
    #: picture per encoder run (:meth:`VideoCodec.encode_sequence`)
    codes_sequences: bool = False

    def sequence_args(self, job: EncodeJob, condition: CodingCondition, num_frames: int) -> list[str]:
        """Encoder arguments for a sequence of ``num_frames`` pictures under ``condition`` (codecs with
        :attr:`codes_sequences`)."""
        raise NotImplementedError

    #: regex over the encoder's log: one match per coded picture, group 1 its POC (display index), group 2 its bits
    picture_bits_pattern: str = r"^POC\s+(\d+)\b.*?\)\s+(\d+)\s+bits"

    def _run_encoder(self, frames: Sequence[Frame], qp: int, label: str, what: str,
                     arguments: Callable[[EncodeJob], list[str]], verify: Callable[[bytes], None]
                     ) -> tuple[bytes, list[str], float, dict[str, Any], str]:
        """Write ``frames`` to one YUV file, run the encoder on it, check and verify the bitstream.
        Returns the bitstream, the command, wall seconds, the identity record and the encoder's log."""
        encoder, banner, warning = self._checked_encoder()
        config = self.find_config()
        frame = frames[0]
        with tempfile.TemporaryDirectory(prefix=f"vcm_eval_{self.name}_", dir=self.tmp_dir) as tmp_name:
            tmp = Path(tmp_name)
            job = EncodeJob(str(tmp / "input.yuv"), str(tmp / f"bitstream.{self.annexb_format}"),
                            str(frame.width), str(frame.height), str(frame.bit_depth), frame.chroma_format,
                            str(int(qp)), str(config) if config is not None else "")
            with open(job.input_path, "wb") as yuv:
                for picture in frames:
                    yuv.write(frame_to_bytes(picture))
            args = [str(encoder), *arguments(job)]
            log_path = tmp / "encoder.log"
            log_path.write_text(f"# {shlex.join(args)}\n")

            def fail(reason: str) -> CodecError:
                kept = self._keep_log(log_path, label, qp, failed=True)
                tail = _log_tail(log_path)
                return CodecError(
                    f"{self.name}: encoding {what} at QP {qp} failed: {reason}\n"
                    f"  command: {shlex.join(args)}\n  encoder log: {kept}"
                    + (f"\n  last lines of the log:\n{tail}" if tail else ""))

            elapsed = self._run_checked(args, tmp, log_path, fail, "encoder")
            bitstream_path = Path(job.bitstream_path)
            if not bitstream_path.is_file():
                raise fail("the encoder exited normally but wrote no bitstream file")
            bitstream = bitstream_path.read_bytes()
            if not bitstream:
                raise fail("the encoder wrote an empty bitstream")
            if not (bitstream.startswith(b"\x00\x00\x01") or bitstream.startswith(b"\x00\x00\x00\x01")):
                raise fail(f"the bitstream ({len(bitstream)} bytes) does not start with an Annex-B start code")
            if self.verify:
                try:
                    verify(bitstream)
                except CodecUnavailableError:
                    pass  # no decoder here: the pipeline decodes where one is available
                except CodecError as exc:
                    raise fail(f"the bitstream ({len(bitstream)} bytes) does not decode to the coded picture(s) "
                               f"(truncated or foreign output): {exc}") from exc
            if self.keep_logs == "always":
                self._keep_log(log_path, label, qp, failed=False)
            log_text = log_path.read_text(errors="replace")
        return bitstream, args, elapsed, self.identity_record(encoder, banner, warning), log_text

    def identity_record(self, encoder: Path, banner: Banner, warning: str | None) -> dict[str, Any]:
        """What is stored with each result: the identity plus the binary's path and full banner line."""
        record = self._identity_of(banner, warning)
        record["encoder"] = str(encoder)
        record["banner"] = banner.line
        return record

    def _keep_log(self, log_path: Path, label: str, qp: int, *, failed: bool) -> Path | str:
        log_dir = self.log_dir or Path(tempfile.gettempdir()) / "vcm_eval_codec_logs"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        status = "FAILED_" if failed else ""
        target = log_dir / f"{status}{self.name}_{_safe_name(label)}_qp{int(qp)}_{stamp}_{os.getpid()}.log"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path, target)
        except OSError as exc:
            return f"(could not be kept in {log_dir}: {exc})"
        return target

    # ------------------------------------------------------------------ decode

    def decode(self, bitstream: bytes, like: Frame | FrameSpec, *, label: str = "") -> Frame:
        """Decode with PyAV or the decoder binary, as :attr:`decoder` says."""
        spec = FrameSpec.of(like)
        if self.decoder == "pyav":
            return decode_annexb(bitstream, self.annexb_format, spec, codec=self.name, label=label)
        if self.decoder == "binary":
            return self.decode_with_binary(bitstream, spec, label=label)
        if not pyav_can_decode(self.annexb_format):
            if self.find_decoder() is None:
                raise CodecUnavailableError(
                    f"{self.name}: this PyAV build has no native {self.annexb_format} decoder and no decoder "
                    f"binary is configured; install av>=14 from PyPI or configure one. {self.missing_hint}")
            return self.decode_with_binary(bitstream, spec, label=label)
        try:
            return decode_annexb(bitstream, self.annexb_format, spec, codec=self.name, label=label)
        except CodecError as exc:
            pyav_error = exc
        if self.find_decoder() is None:
            raise pyav_error
        try:
            return self.decode_with_binary(bitstream, spec, label=label)
        except CodecError as exc:
            raise CodecError(f"{exc}\n  PyAV's decoder failed too: {pyav_error}") from exc

    def decode_with_binary(self, bitstream: bytes, spec: FrameSpec, *, label: str = "") -> Frame:
        """Decode through the decoder binary (``-b in -o out -d bit_depth``), then check the geometry."""
        data = self._decode_to_yuv(bitstream, spec, label)
        try:
            frame = frame_from_bytes(data, spec)
        except ValueError as exc:
            raise CodecError(f"{self.name}: decoded picture of {label or 'picture'}: {exc}; the bitstream is "
                             "truncated or belongs to another picture") from None
        return check_decoded(frame, spec, codec=self.name, label=label)

    def _decode_to_yuv(self, bitstream: bytes, spec: FrameSpec, label: str) -> bytes:
        """The decoder binary's output file for ``bitstream`` (every picture, as YUV)."""
        decoder = self._decoder_path(required=True)
        if not bitstream:
            raise CodecError(f"{self.name}: bitstream of {label or 'picture'} is empty")
        with tempfile.TemporaryDirectory(prefix=f"vcm_eval_{self.name}_dec_", dir=self.tmp_dir) as tmp_name:
            tmp = Path(tmp_name)
            in_path, out_path = tmp / f"bitstream.{self.annexb_format}", tmp / "decoded.yuv"
            in_path.write_bytes(bitstream)
            args = [str(decoder), *self.decode_args(str(in_path), str(out_path), spec.bit_depth)]
            log_path = tmp / "decoder.log"
            log_path.write_text(f"# {shlex.join(args)}\n")

            def fail(reason: str) -> CodecError:
                tail = _log_tail(log_path)
                return CodecError(f"{self.name}: decoding {label or 'picture'} (expected {spec!r}) failed: {reason}\n"
                                  f"  command: {shlex.join(args)}" + (f"\n  decoder log:\n{tail}" if tail else ""))

            self._run_checked(args, tmp, log_path, fail, "decoder",
                              exit_hint=" (truncated or corrupt bitstream?)")
            if not out_path.is_file():
                raise fail("the decoder wrote no picture")
            return out_path.read_bytes()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decoder={self.decoder!r}, expected_version={self.expected_version!r})"


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return str(number)
