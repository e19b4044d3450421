"""tools/code_picture.py, run as a user would (a subprocess), with x265 (needs no external binary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from vcm_eval.codecs.base import FrameSpec
from vcm_eval.codecs.x265 import X265Codec
from vcm_eval.codecs.yuv import psnr

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "code_picture.py"


def run_tool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=REPO)


def picture(height: int = 96, width: int = 160) -> np.ndarray:
    rng = np.random.default_rng(3)
    base = np.add.outer(np.arange(height) * 5, np.arange(width) * 3) % 1024
    return np.clip(base + rng.integers(-20, 20, (height, width)), 0, 1023).astype(np.uint16)


def test_codes_a_raw_yuv_picture_with_x265(tmp_path):
    source = picture()
    raw = tmp_path / "feat.yuv"
    source.astype("<u2").tofile(raw)
    out = tmp_path / "out"
    result = run_tool(str(raw), "--width", "160", "--height", "96", "--codec", "x265", "--qp", "32",
                      "--out-dir", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    bitstream = (out / "feat_x265_qp32.265").read_bytes()
    decoded = np.fromfile(out / "feat_x265_qp32.dec.yuv", dtype="<u2").reshape(96, 160)
    assert report["bytes"] == len(bitstream) and report["bits"] == 8 * len(bitstream)
    assert report["bpp"] == 8 * len(bitstream) / (160 * 96)
    # the files on disk are what the codec makes of them
    again = X265Codec().decode(bitstream, FrameSpec(96, 160))
    assert np.array_equal(again.luma, decoded)
    assert report["psnr_db"] == psnr(source, decoded, peak=1023)
    assert 25 < report["psnr_db"] < 60 and report["identity"]["name"] == "x265"


def test_table_output_and_npy_input(tmp_path):
    source = picture(64, 64)
    np.save(tmp_path / "c5.npy", source)
    result = run_tool(str(tmp_path / "c5.npy"), "--codec", "x265", "--qp", "37", "--set", "preset=fast",
                      "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    decoded = np.load(tmp_path / "c5_x265_qp37.dec.npy")
    assert decoded.shape == (64, 64)
    num_bytes = (tmp_path / "c5_x265_qp37.265").stat().st_size
    assert f"{num_bytes} bytes = {8 * num_bytes} bits" in result.stdout
    assert f"PSNR       {psnr(source, decoded):.4f} dB (peak 1023)" in result.stdout


def test_clear_errors(tmp_path):
    raw = tmp_path / "bad.yuv"
    raw.write_bytes(b"\x00" * 100)
    result = run_tool(str(raw), "--width", "16", "--height", "16", "--qp", "30")
    assert result.returncode == 2 and "one 16x16 4:0:0 10-bit picture has 512" in result.stderr
    np.save(tmp_path / "hot.npy", np.full((8, 8), 4000, np.uint16))
    result = run_tool(str(tmp_path / "hot.npy"), "--qp", "30")
    assert result.returncode == 2 and "outside 0..1023" in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VTM_", "VVENC_"))}
    env["PATH"] = "/usr/bin:/bin"
    np.save(tmp_path / "ok.npy", picture(16, 16))
    result = run_tool(str(tmp_path / "ok.npy"), "--codec", "vtm", "--qp", "41", env=env)
    assert result.returncode == 2 and "VTM_DIR" in result.stderr and "codec=x265" in result.stderr
    result = run_tool(str(tmp_path / "ok.npy"), "--codec", "x265", "--qp", "30", "--set", "colour=blue")
    assert result.returncode == 2 and "colour" in result.stderr
