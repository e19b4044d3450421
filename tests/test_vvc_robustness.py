"""VTM/VVenC adapters against small fake binaries that misbehave in every way a real encoder can.

The fakes are Python scripts written into ``tmp_path``: they print a VTM (or VVenC) banner, record
their arguments, and then do one thing (copy a real golden stream, exit non-zero, crash, hang, write
nothing, write half a stream). Tests needing a real stream read ``shared/golden/vvc`` and skip without it.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from vcm_eval.codecs.base import CodecError, CodecUnavailableError, FrameSpec
from vcm_eval.codecs.external import parse_banner, version_matches
from vcm_eval.codecs.vtm import VTMCodec
from vcm_eval.codecs.vvenc import VVenCCodec
from vcm_eval.codecs.yuv import frame_to_bytes
from vcm_eval.types import Frame

VTM_BANNER = "VVCSoftware: VTM Encoder Version 12.0 [Linux][GCC 12.2.0][64 bit] [SIMD=AVX2] "
VTM_DEC_BANNER = "VVCSoftware: VTM Decoder Version 12.0 [Linux][GCC 12.2.0][64 bit] [SIMD=AVX2] "
VVENC_BANNER = "vvencFFapp version 1.14.0"

FAKE = '''#!{python}
import os, shutil, signal, subprocess, sys, time
MODE, BANNER, SOURCE, RECORD = {mode!r}, {banner!r}, {source!r}, {record!r}
args = sys.argv[1:]
print(BANNER, flush=True)
if "--help" in args or "--version" in args:
    sys.exit(0)
with open(RECORD, "a") as fh:
    fh.write(repr({{"args": args, "cwd": os.getcwd()}}) + "\\n")
def arg(flag):
    return args[args.index(flag) + 1]
print("fake codec running in mode", MODE, flush=True)
if MODE == "ok":
    shutil.copyfile(SOURCE, arg("-b"))
elif MODE == "exit":
    print("ERROR: In function parseCfg: unknown option", flush=True)
    sys.exit(3)
elif MODE == "crash":
    os.kill(os.getpid(), signal.SIGSEGV)
elif MODE == "hang":
    child = subprocess.Popen(["sleep", "300"])
    with open(RECORD + ".child", "w") as fh:
        fh.write(str(child.pid))
    time.sleep(300)
elif MODE == "empty":
    open(arg("-b"), "wb").close()
elif MODE == "truncated":
    data = open(SOURCE, "rb").read()
    open(arg("-b"), "wb").write(data[: len(data) // 2])
elif MODE == "nofile":
    pass
elif MODE == "garbage":
    open(arg("-b"), "wb").write(b"\\x00\\x00\\x01" + os.urandom(200))
elif MODE == "decode_ok":
    shutil.copyfile(SOURCE, arg("-o"))
elif MODE == "decode_short":
    data = open(SOURCE, "rb").read()
    open(arg("-o"), "wb").write(data[: len(data) - 2 * 7])
else:
    sys.exit(99)
'''


def make_fake(tmp_path: Path, name: str, mode: str, *, banner: str = VTM_BANNER, source: Path | None = None) -> Path:
    """Write an executable fake codec ``name`` that behaves as ``mode``; its calls go to ``<name>.calls``."""
    folder = tmp_path / f"fake_{name}_{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(FAKE.format(python=sys.executable, mode=mode, banner=banner, source=str(source or ""),
                                record=str(folder / f"{name}.calls")))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def calls(fake: Path) -> list[dict]:
    record = fake.parent / f"{fake.name}.calls"
    if not record.exists():
        return []
    import ast

    return [ast.literal_eval(line) for line in record.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _no_user_codecs(monkeypatch):
    """The user's own VTM/VVenC settings must not leak into these tests."""
    for var in ("VTM_DIR", "VTM_ENCODER", "VTM_DECODER", "VTM_CFG", "VVENC_DIR", "VVENC_ENCODER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "encoder_intra_vtm.cfg"
    path.write_text("# fake All-Intra configuration\nIntraPeriod : 1\n")
    return path


@pytest.fixture
def golden() -> Path:
    return shared_path("golden", "vvc")


def vtm(encoder: Path, cfg: Path, tmp_path: Path, **kwargs) -> VTMCodec:
    kwargs.setdefault("log_dir", tmp_path / "logs")
    kwargs.setdefault("tmp_dir", tmp_path / "work")
    (tmp_path / "work").mkdir(exist_ok=True)
    return VTMCodec(encoder_path=encoder, cfg=cfg, **kwargs)


def small_frame(height: int = 208, width: int = 336) -> Frame:
    return Frame.gray((np.arange(height * width, dtype=np.uint16).reshape(height, width) * 3) % 1024)


def assert_clean(tmp_path: Path) -> None:
    assert list((tmp_path / "work").iterdir()) == [], "per-call temporary folders must be removed"


# ---------------------------------------------------------------- banners and versions


def test_parse_banner_and_version_match():
    text = "\n" + VTM_BANNER + "\n\nUsage: ...\n"
    banner = parse_banner(text, VTMCodec.encoder_banner)
    assert banner is not None and banner.version == "12.0" and banner.line.startswith("VVCSoftware")
    assert parse_banner(VTM_DEC_BANNER, VTMCodec.encoder_banner) is None
    assert parse_banner("vvencFFapp version 1.14.0\n", VVenCCodec.encoder_banner).version == "1.14.0"
    log_line = "vvencFFapp: Fraunhofer VVC Encoder ver. 1.14.0 [Linux][GCC 12.2.0][64 bit][SIMD=AVX2]"
    assert parse_banner(log_line, VVenCCodec.encoder_banner).version == "1.14.0"
    assert version_matches("12.0", "12.0") and version_matches("12.0.1", "12.0")
    assert not version_matches("12.01", "12.0") and not version_matches("2.0", "12.0")
    assert not version_matches("13.0", "12.0")


# ---------------------------------------------------------------- finding binaries


def test_missing_binary_says_how_to_fix(tmp_path):
    with pytest.raises(CodecUnavailableError) as err:
        VTMCodec().check_available()
    message = str(err.value)
    assert "VTM_DIR" in message and "codec.vtm_dir" in message
    assert "codec=vvenc" in message and "codec=x265" in message
    with pytest.raises(CodecUnavailableError, match="does not exist"):
        VTMCodec(encoder_path=tmp_path / "nope" / "EncoderAppStatic").check_available()
    with pytest.raises(CodecUnavailableError, match="no encoder binary in"):
        VTMCodec(vtm_dir=tmp_path).check_available()
    with pytest.raises(CodecUnavailableError, match="VVENC_DIR"):
        VVenCCodec().check_available()


@pytest.mark.parametrize("layout", ["bin/EncoderAppStatic", "bin/umake/gcc-12.2/x86_64/release/EncoderApp"])
def test_finds_build_layouts_and_cfg_from_vtm_dir(tmp_path, layout, monkeypatch):
    root = tmp_path / "VVCSoftware_VTM"
    encoder = root / layout
    encoder.parent.mkdir(parents=True)
    fake = make_fake(tmp_path, "EncoderAppStatic", "ok")
    encoder.write_bytes(fake.read_bytes())
    encoder.chmod(0o755)
    decoder = encoder.parent / encoder.name.replace("Encoder", "Decoder")
    decoder.write_bytes(make_fake(tmp_path, "DecoderAppStatic", "ok", banner=VTM_DEC_BANNER).read_bytes())
    decoder.chmod(0o755)
    (root / "cfg").mkdir()
    (root / "cfg" / "encoder_intra_vtm.cfg").write_text("IntraPeriod : 1\n")
    for codec in (VTMCodec(vtm_dir=root), None):
        if codec is None:  # the same folder through the environment
            monkeypatch.setenv("VTM_DIR", str(root))
            codec = VTMCodec()
        assert codec.find_encoder() == encoder
        assert codec.find_decoder() == decoder
        assert codec.find_config() == root / "cfg" / "encoder_intra_vtm.cfg"
        ident = codec.identity()
        assert ident["version"] == "12.0" and ident["cfg_name"] == "encoder_intra_vtm.cfg"


def test_cfg_found_above_an_explicit_encoder(tmp_path):
    root = tmp_path / "vtm"
    (root / "cfg").mkdir(parents=True)
    (root / "cfg" / "encoder_intra_vtm.cfg").write_text("IntraPeriod : 1\n")
    (root / "bin").mkdir()
    encoder = root / "bin" / "EncoderAppStatic"
    encoder.write_bytes(make_fake(tmp_path, "EncoderAppStatic", "ok").read_bytes())
    encoder.chmod(0o755)
    codec = VTMCodec(encoder_path=encoder)
    assert codec.find_config() == root / "cfg" / "encoder_intra_vtm.cfg"
    with pytest.raises(CodecUnavailableError, match="codec.cfg"):
        VTMCodec(encoder_path=encoder, cfg=tmp_path / "missing.cfg").check_available()


def test_not_a_vtm_binary(tmp_path, cfg_file):
    for banner, expected in [("Hello, I am some other program", "not the VTM encoder"),
                             (VTM_DEC_BANNER, "not the VTM encoder")]:
        fake = make_fake(tmp_path, f"EncoderApp{len(banner)}", "ok", banner=banner)
        with pytest.raises(CodecUnavailableError, match=expected):
            VTMCodec(encoder_path=fake, cfg=cfg_file).check_available()
    vtm_as_vvenc = make_fake(tmp_path, "vvencFFapp", "ok", banner=VTM_BANNER)
    with pytest.raises(CodecUnavailableError, match="not the VVenC encoder"):
        VVenCCodec(encoder_path=vtm_as_vvenc).identity()
    text_file = tmp_path / "EncoderAppText"
    text_file.write_text("not a program\n")
    text_file.chmod(0o755)
    with pytest.raises(CodecUnavailableError, match="cannot be run"):
        VTMCodec(encoder_path=text_file, cfg=cfg_file).check_available()


def test_version_mismatch_warns_or_fails_under_strict(tmp_path, cfg_file):
    fake = make_fake(tmp_path, "EncoderAppStatic", "ok", banner=VTM_BANNER.replace("12.0", "23.4"))
    loose = VTMCodec(encoder_path=fake, cfg=cfg_file, expected_version="12.0")
    ident = loose.identity()
    assert ident["version"] == "23.4" and "12.0" in ident["version_warning"]
    assert "version_warning" not in VTMCodec(encoder_path=fake, cfg=cfg_file).identity()
    with pytest.raises(CodecUnavailableError, match="strict_version"):
        VTMCodec(encoder_path=fake, cfg=cfg_file, expected_version="12.0", strict_version=True).identity()
    matching = make_fake(tmp_path, "EncoderAppStatic", "exit")
    assert "version_warning" not in VTMCodec(encoder_path=matching, cfg=cfg_file, expected_version="12.0",
                                             strict_version=True).identity()


def test_identity_ignores_the_binary_path_and_follows_the_cfg(tmp_path, cfg_file):
    first = make_fake(tmp_path / "a", "EncoderAppStatic", "ok")
    second = make_fake(tmp_path / "b", "EncoderAppStatic", "ok")
    other_cfg = tmp_path / "b" / "encoder_intra_vtm.cfg"
    other_cfg.write_bytes(cfg_file.read_bytes())
    ident = VTMCodec(encoder_path=first, cfg=cfg_file).identity()
    assert ident == VTMCodec(encoder_path=second, cfg=other_cfg).identity()
    assert str(tmp_path) not in json.dumps(ident)
    assert "{cfg}" in ident["options"] and "{qp}" in ident["options"]
    changed = tmp_path / "changed.cfg"
    changed.write_text("IntraPeriod : 1\nQP : 22\n")
    assert VTMCodec(encoder_path=first, cfg=changed).identity()["cfg_sha256"] != ident["cfg_sha256"]
    assert VTMCodec(encoder_path=first, cfg=cfg_file, extra_options=["--SEIDecodedPictureHash=1"]).identity() != ident
    vvenc = make_fake(tmp_path, "vvencFFapp", "ok", banner=VVENC_BANNER)
    assert VVenCCodec(encoder_path=vvenc).identity() != VVenCCodec(encoder_path=vvenc, preset="fast").identity()


# ---------------------------------------------------------------- encoding through fakes


def test_encode_runs_in_a_temp_dir_and_records_the_command(tmp_path, cfg_file, golden):
    fake = make_fake(tmp_path, "EncoderAppStatic", "ok", source=golden / "tiles_336x208_qp41.bin")
    codec = vtm(fake, cfg_file, tmp_path, keep_logs="always")
    coded = codec.encode(small_frame(), 41, label="img7/c5")
    assert coded.bitstream == (golden / "tiles_336x208_qp41.bin").read_bytes()
    assert coded.command[0] == str(fake) and coded.command[-2:] == ["-o", os.devnull]
    assert coded.command[coded.command.index("-q") + 1] == "41"
    assert coded.command[coded.command.index("-c") + 1] == str(cfg_file)
    assert coded.codec["encoder"] == str(fake) and coded.codec["banner"].startswith("VVCSoftware")
    assert coded.codec["version"] == "12.0" and coded.encode_s > 0
    (call,) = calls(fake)
    assert Path(call["cwd"]).parent == tmp_path / "work", "the encoder must run inside the per-call temp dir"
    assert call["args"] == coded.command[1:]
    assert_clean(tmp_path)
    (kept,) = (tmp_path / "logs").iterdir()
    assert "img7_c5_qp41" in kept.name and "fake codec running" in kept.read_text()


def test_encoder_writes_the_input_picture_it_was_given(tmp_path, cfg_file, golden):
    """The raw file handed to the encoder holds the frame's samples (16-bit little-endian)."""
    spy = tmp_path / "spy.py"
    spy.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\nprint({VTM_BANNER!r})\n"
                   "if '--help' in args: sys.exit(0)\n"
                   f"shutil.copyfile(args[args.index('-i') + 1], {str(tmp_path / 'seen.yuv')!r})\n"
                   f"shutil.copyfile({str(golden / 'tiles_336x208_qp49.bin')!r}, args[args.index('-b') + 1])\n")
    spy.chmod(0o755)
    frame = small_frame()
    vtm(spy, cfg_file, tmp_path).encode(frame, 49, label="spy")
    assert (tmp_path / "seen.yuv").read_bytes() == frame_to_bytes(frame)
    assert frame_to_bytes(frame) == frame.luma.astype("<u2").tobytes()


@pytest.mark.parametrize("mode, reason", [
    ("exit", "exited with status 3"),
    ("crash", "killed by signal SIGSEGV"),
    ("empty", "empty bitstream"),
    ("nofile", "wrote no bitstream"),
    ("garbage", "does not decode"),
])
def test_encoder_failures_name_picture_qp_command_and_log(tmp_path, cfg_file, mode, reason):
    fake = make_fake(tmp_path, "EncoderAppStatic", mode)
    codec = vtm(fake, cfg_file, tmp_path)
    with pytest.raises(CodecError) as err:
        codec.encode(small_frame(), 43, label="img3/c4")
    message = str(err.value)
    assert reason in message
    assert "img3/c4" in message and "QP 43" in message and str(fake) in message and "-q 43" in message
    (kept,) = (tmp_path / "logs").iterdir()
    assert str(kept) in message and kept.name.startswith("FAILED_vtm_img3_c4_qp43")
    assert "fake codec running in mode " + mode in kept.read_text()
    assert_clean(tmp_path)
    if mode == "exit":
        assert "unknown option" in message, "the end of the encoder log is quoted in the error"


def test_truncated_and_foreign_bitstreams_are_caught(tmp_path, cfg_file, golden):
    truncated = make_fake(tmp_path, "EncoderAppStatic", "truncated", source=golden / "tiles_336x208_qp41.bin")
    with pytest.raises(CodecError, match="truncated"):
        vtm(truncated, cfg_file, tmp_path).encode(small_frame(), 41, label="t")
    foreign = make_fake(tmp_path, "EncoderAppStatic", "ok", source=golden / "odd_271x400_qp49.bin")
    with pytest.raises(CodecError) as err:
        vtm(foreign, cfg_file, tmp_path).encode(small_frame(), 49, label="f")
    assert "271x400" in str(err.value) and "336x208" in str(err.value)
    assert_clean(tmp_path)


def test_hang_is_killed_with_its_children(tmp_path, cfg_file):
    fake = make_fake(tmp_path, "EncoderAppStatic", "hang")
    codec = vtm(fake, cfg_file, tmp_path, timeout_s=1.5)
    # the fake would sleep 300 s and then exit without a bitstream (a different error): this message can only
    # come from the timeout, so no wall-clock bound is needed (one would fail on a loaded machine)
    with pytest.raises(CodecError, match=r"no result after 1.5 s \(timeout_s\)") as err:
        codec.encode(small_frame(), 45, label="slow")
    assert "QP 45" in str(err.value)
    child = int((fake.parent / f"{fake.name}.calls.child").read_text())
    deadline = time.monotonic() + 120  # a bound on waiting for the kernel, not on the codec's speed
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the encoder's child process must be killed with it"
    assert_clean(tmp_path)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def test_invalid_requests(tmp_path, cfg_file):
    fake = make_fake(tmp_path, "EncoderAppStatic", "ok")
    codec = vtm(fake, cfg_file, tmp_path)
    with pytest.raises(CodecError, match="outside 0..63"):
        codec.encode(small_frame(), 70, label="q")
    odd420 = Frame((np.zeros((9, 8), np.uint16), np.zeros((5, 4), np.uint16), np.zeros((5, 4), np.uint16)), 10, "420")
    with pytest.raises(CodecError, match="even width and height"):
        codec.encode(odd420, 41, label="odd")
    with pytest.raises(ValueError, match="decoder must be"):
        VTMCodec(decoder="ffmpeg")
    with pytest.raises(ValueError, match="preset"):
        VVenCCodec(preset="medium --qpa 1")
    assert calls(fake) == []


def test_vvenc_drives_vvencffapp_with_intra_qp_offset_after_preset(tmp_path, golden):
    fake = make_fake(tmp_path, "vvencFFapp", "ok", banner=VVENC_BANNER, source=golden / "odd_271x400_qp41_vvenc.266")
    (tmp_path / "work").mkdir()
    codec = VVenCCodec(encoder_path=fake, preset="slow", tmp_dir=tmp_path / "work", expected_version="1.14")
    coded = codec.encode(small_frame(400, 271), 41, label="v")
    args = coded.command[1:]
    assert args[:3] == ["--preset", "slow", "--IntraQPOffset=0"]
    assert args[args.index("-s") + 1] == "271x400" and args[args.index("-q") + 1] == "41"
    assert coded.codec["version"] == "1.14.0" and "version_warning" not in coded.codec
    assert_clean(tmp_path)


# ---------------------------------------------------------------- decoding through a decoder binary


def test_binary_decoder_paths(tmp_path, cfg_file, golden):
    reference = np.load(golden / "odd_271x400_qp41.dec.npy")
    raw = tmp_path / "decoded.yuv"
    raw.write_bytes(reference.astype("<u2").tobytes())
    encoder = make_fake(tmp_path, "EncoderAppStatic", "ok")
    spec = FrameSpec(400, 271)
    stream = (golden / "odd_271x400_qp41.bin").read_bytes()

    good = make_fake(tmp_path, "DecoderAppStatic", "decode_ok", banner=VTM_DEC_BANNER, source=raw)
    codec = VTMCodec(encoder_path=encoder, decoder_path=good, cfg=cfg_file, decoder="binary")
    assert np.array_equal(codec.decode(stream, spec, label="d").luma, reference)
    (call,) = calls(good)
    assert call["args"][call["args"].index("-d") + 1] == "10"
    # auto: PyAV cannot decode garbage, so the decoder binary is asked next
    auto = VTMCodec(encoder_path=encoder, decoder_path=good, cfg=cfg_file, decoder="auto")
    assert np.array_equal(auto.decode(b"\x00\x00\x01garbage", spec).luma, reference)

    short = make_fake(tmp_path, "DecoderAppStatic", "decode_short", banner=VTM_DEC_BANNER, source=raw)
    with pytest.raises(CodecError, match="another picture"):
        VTMCodec(encoder_path=encoder, decoder_path=short, cfg=cfg_file, decoder="binary").decode(stream, spec)
    failing = make_fake(tmp_path, "DecoderAppStatic", "exit", banner=VTM_DEC_BANNER)
    with pytest.raises(CodecError, match="exited with status 3"):
        VTMCodec(encoder_path=encoder, decoder_path=failing, cfg=cfg_file, decoder="binary").decode(stream, spec)
    not_decoder = make_fake(tmp_path, "DecoderAppX", "decode_ok", banner=VTM_BANNER, source=raw)
    with pytest.raises(CodecUnavailableError, match="not the decoder"):
        VTMCodec(encoder_path=encoder, decoder_path=not_decoder, cfg=cfg_file, decoder="binary").decode(stream, spec)
    with pytest.raises(CodecUnavailableError, match="no decoder binary"):
        VVenCCodec(encoder_path=encoder, decoder="binary").decode(stream, spec)


def test_signal_names_are_readable():
    from vcm_eval.codecs.external import _signal_name

    assert _signal_name(int(signal.SIGKILL)).startswith("SIGKILL")


def test_420_pictures_for_the_image_anchor(tmp_path, cfg_file, golden):
    """A whole 4:2:0 picture goes to the encoder as Y, Cb, Cr planes with --InputChromaFormat=420, and a
    4:2:0 decoder output comes back as three planes."""
    rng = np.random.default_rng(1)
    frame = Frame((rng.integers(0, 1024, (16, 24)).astype(np.uint16),
                   rng.integers(0, 1024, (8, 12)).astype(np.uint16),
                   rng.integers(0, 1024, (8, 12)).astype(np.uint16)), 10, "420")
    spy = tmp_path / "spy420.py"
    spy.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\nprint({VTM_BANNER!r})\n"
                   "if '--help' in args: sys.exit(0)\n"
                   f"shutil.copyfile(args[args.index('-i') + 1], {str(tmp_path / 'seen420.yuv')!r})\n"
                   f"shutil.copyfile({str(golden / 'tiles_336x208_qp49.bin')!r}, args[args.index('-b') + 1])\n")
    spy.chmod(0o755)
    coded = vtm(spy, cfg_file, tmp_path, verify=False).encode(frame, 37, label="rgb")
    assert "--InputChromaFormat=420" in coded.command
    assert (tmp_path / "seen420.yuv").read_bytes() == frame_to_bytes(frame)
    raw = tmp_path / "dec420.yuv"
    raw.write_bytes(frame_to_bytes(frame))
    decoder = make_fake(tmp_path, "DecoderAppStatic", "decode_ok", banner=VTM_DEC_BANNER, source=raw)
    codec = VTMCodec(encoder_path=spy, decoder_path=decoder, cfg=cfg_file, decoder="binary")
    back = codec.decode(coded.bitstream, frame, label="rgb")
    assert back.chroma_format == "420"
    assert all(np.array_equal(a, b) for a, b in zip(back.planes, frame.planes, strict=True))


def test_codecs_pickle_for_worker_processes(tmp_path, cfg_file):
    import pickle

    fake = make_fake(tmp_path, "EncoderAppStatic", "ok")
    codec = VTMCodec(encoder_path=fake, cfg=cfg_file, timeout_s=12, decoder="pyav")
    clone = pickle.loads(pickle.dumps(codec))
    assert clone.identity() == codec.identity() and clone.timeout_s == 12 and clone.decoder == "pyav"


@pytest.mark.parametrize("shape", [(10, 15), (15, 20), (8, 64), (16, 16)])
def test_x265_codes_pictures_smaller_than_its_minimum(shape):
    # a level packed from a few channel components can be 10x15; libx265 itself refuses sides under 16
    from vcm_eval.codecs.x265 import X265Codec

    rng = np.random.default_rng(1)
    picture = (rng.integers(0, 1024, size=shape)).astype(np.uint16)
    codec = X265Codec()
    coded = codec.encode(Frame.gray(picture, 10), 0)
    decoded = codec.decode(coded.bitstream, FrameSpec(*shape))
    assert decoded.luma.shape == shape
    assert np.abs(decoded.luma.astype(int) - picture).max() <= 8  # QP 0: near-lossless
