"""Every option of every config group composes and builds (or fails with the message a user needs).

Plug-ins that silently fail to register are the commonest complaint about evaluation frameworks;
here every ``_target_`` is built, so a renamed class or a broken YAML fails the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.build import build
from vcm_eval.cli import CONFIG_DIR, build_entries
from vcm_eval.codecs.base import CodecUnavailableError, VideoCodec
from vcm_eval.data.base import DetectionDataset
from vcm_eval.data.sequences import SequenceDataset
from vcm_eval.executors.base import Executor
from vcm_eval.methods import CodingEntry
from vcm_eval.models.base import SplitModel, WeightsError

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str):
    return vcm_eval.compose(*list(overrides))


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch, tmp_path):
    for var in ("VTM_DIR", "VTM_ENCODER", "VTM_DECODER", "VTM_CFG", "VVENC_DIR", "VVENC_ENCODER",
                "VCM_EVAL_OIV6_ANNOTATIONS", "VCM_EVAL_OIV6_IMAGES", "VCM_EVAL_COCO_ANNOTATIONS",
                "VCM_EVAL_COCO_IMAGES", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("VCM_EVAL_OUTPUT", str(tmp_path))


def test_default_config_is_the_embedded_ctc():
    cfg = compose_cfg()
    assert cfg.ctc.name == "embedded" and cfg.codec._target_.endswith("X265Codec")
    assert cfg.model._target_.endswith("build_embedded_model") and list(cfg.anchor) == ["c_layer", "image"]
    assert not cfg.proposal and cfg.executor._target_.endswith("PoolExecutor")


def test_paper_ctc_pins_dataset_model_codec_and_qps():
    cfg = compose_cfg("ctc=paper", "proposal=compensation")
    assert cfg.ctc.num_images == 1000 and list(cfg.ctc.qps.features) == [41, 43, 45, 47, 49]
    assert cfg.dataset._target_.endswith("OpenImagesDataset")
    assert cfg.model.zoo_name == "faster_rcnn_X_101_32x8d_FPN_3x" and cfg.codec._target_.endswith("VTMCodec")
    assert cfg.codec.expected_version == "12.0"
    assert list(cfg.proposal.compensation.rate_points) == [41, 43, 45, 47, 49]
    # the command line still wins over what the CTC pins
    assert compose_cfg("ctc=paper", "codec=vvenc").codec._target_.endswith("VVenCCodec")


@pytest.mark.parametrize("option", options("codec"))
def test_every_codec_builds(option):
    codec = build(compose_cfg(f"codec={option}").codec, expect=VideoCodec, what="codec")
    if option in ("vtm", "vvenc"):  # no binary here: refused before any coding, with the way out
        with pytest.raises(CodecUnavailableError, match="codec=x265"):
            codec.check_available()
    else:
        codec.check_available()
        assert codec.identity()["name"] == codec.name


@pytest.mark.parametrize("anchor", options("anchor"))
@pytest.mark.parametrize("proposal", options("proposal"))
def test_every_entry_builds(anchor, proposal):
    specs = build_entries(compose_cfg(f"anchor=[{anchor}]", f"proposal={proposal}"))
    assert all(isinstance(s.entry, CodingEntry) for s in specs)
    assert [s.role for s in specs] == ["anchor"] + (["proposal"] if proposal != "none" else [])


def test_entry_lists_select_several():
    specs = build_entries(compose_cfg("anchor=[c_layer,image]", "proposal=[compensation]"))
    assert [s.entry.name for s in specs] == ["c_layer", "image", "compensation"]
    image = specs[1].entry
    assert image.rate_points == list(compose_cfg().ctc.qps.image)


def test_an_entry_without_target_is_refused():
    cfg = compose_cfg("+proposal.broken.name=broken")
    with pytest.raises(ValueError, match="has no _target_"):
        build_entries(cfg)


def test_a_target_of_the_wrong_type_is_refused():
    cfg = compose_cfg("+proposal.odd._target_=collections.OrderedDict")
    with pytest.raises(TypeError, match="collections.OrderedDict builds OrderedDict"):
        build_entries(cfg)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_builds_or_names_the_weights_to_fetch(option):
    cfg = compose_cfg(f"model={option}")
    node = OmegaConf.to_container(cfg.model, resolve=True)
    if option == "embedded":
        model = build(node, expect=SplitModel, what="model")
        assert model.class_names and model.identity()["weights_sha256"]
    else:
        with pytest.raises(WeightsError, match=r"model_final_\w+\.pkl"):
            build(node, expect=SplitModel, what="model")


@pytest.mark.parametrize("option", options("dataset"))
def test_every_dataset_builds_or_says_what_to_set(option, tmp_path):
    small = {"synthetic": ["dataset.size=2"],
             "embedded_video": ["dataset.num_sequences=1", "dataset.num_frames=2", "dataset.height=64",
                                "dataset.width=96"]}
    cfg = compose_cfg(f"dataset={option}", f"paths.data_root={tmp_path}", "ctc.num_images=2", *small.get(option, []))
    if option == "synthetic":
        dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
        assert len(dataset.records()) == 2
    elif option == "embedded_video":
        dataset = build(cfg.dataset, expect=SequenceDataset, what="dataset")
        assert [r.num_frames for r in dataset.sequences()] == [2]
    elif option in ("sfu_hw", "tvd"):  # sequence sets: read when the sweep asks for their sequences
        with pytest.raises(FileNotFoundError) as info:
            build(cfg.dataset, expect=SequenceDataset, what="dataset").sequences()
        assert "dataset.root" in str(info.value)
    else:
        with pytest.raises((FileNotFoundError, ValueError)) as info:
            build(cfg.dataset, expect=DetectionDataset, what="dataset")
        assert "VCM_EVAL_" in str(info.value) or "dataset." in str(info.value)


@pytest.mark.parametrize("option", ["local", "pool"])
def test_local_executors_build(option):
    with build(compose_cfg(f"executor={option}", "executor.workers=1" if option == "pool" else "executor=local")
               .executor, expect=Executor, what="executor") as executor:
        assert executor.submit(sum, [1, 2]) is not None


def test_tracking_options_compose():
    assert compose_cfg("tracking=none").tracking.enabled is False
    cfg = compose_cfg()
    assert cfg.tracking.tracking_uri == "sqlite:///mlflow.db" and cfg.tracking.experiment == "vcm_eval-embedded"
