"""conf/codec/vtm.yaml and vvenc.yaml: build the codecs, take paths from the command line, conf/local
(``codec_paths``) or the environment, and the paper CTC's version."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.codecs.base import CodecUnavailableError
from vcm_eval.codecs.vtm import VTMCodec
from vcm_eval.codecs.vvenc import VVenCCodec

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def _no_user_codecs(monkeypatch):
    for var in ("VTM_DIR", "VTM_ENCODER", "VTM_DECODER", "VTM_CFG", "VVENC_DIR", "VVENC_ENCODER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


def build(option: str, **root) -> object:
    """Instantiate conf/codec/<option>.yaml as the ``codec`` node of a config holding ``root``."""
    cfg = OmegaConf.create({**root, "codec": OmegaConf.load(CONF / "codec" / f"{option}.yaml")})
    return instantiate(cfg.codec, _convert_="all")


def test_defaults_build_without_a_binary_and_fail_clearly_on_use():
    vtm = build("vtm")
    assert isinstance(vtm, VTMCodec) and vtm.vtm_dir is None and vtm.expected_version is None
    assert vtm.decoder == "auto" and vtm.timeout_s == 3600 and vtm.verify
    assert str(vtm.log_dir) == "outputs/codec_logs"
    with pytest.raises(CodecUnavailableError, match="codec=vvenc or codec=x265"):
        vtm.check_available()
    vvenc = build("vvenc")
    assert isinstance(vvenc, VVenCCodec) and vvenc.preset == "medium" and vvenc.threads == 1
    with pytest.raises(CodecUnavailableError, match="VVENC_DIR"):
        vvenc.check_available()


def test_path_precedence_local_file_then_environment(monkeypatch):
    monkeypatch.setenv("VTM_DIR", "/from/env")
    monkeypatch.setenv("VVENC_ENCODER", "/from/env/vvencFFapp")
    assert build("vtm").vtm_dir == "/from/env"
    assert build("vvenc").encoder_path == "/from/env/vvencFFapp"
    local = {"codec_paths": {"vtm_dir": "/from/local", "vtm_cfg": "/from/local/ai.cfg", "vvenc_dir": "/v"}}
    vtm = build("vtm", **local)
    assert (vtm.vtm_dir, vtm.cfg) == ("/from/local", "/from/local/ai.cfg")
    assert build("vvenc", **local).vvenc_dir == "/v"


def test_expected_version_follows_the_ctc():
    assert build("vtm", ctc={"codec_version": "12.0"}).expected_version == "12.0"
    assert build("vvenc", ctc={"codec_version": "12.0"}).expected_version is None


def test_paper_ctc_selects_vtm_12():
    cfg = vcm_eval.compose("ctc=paper", "+codec_paths.vtm_dir=/opt/VTM", config_dir=CONF)
    codec = instantiate(cfg.codec, _convert_="all")
    assert isinstance(codec, VTMCodec)
    assert codec.expected_version == "12.0" and codec.vtm_dir == "/opt/VTM"
