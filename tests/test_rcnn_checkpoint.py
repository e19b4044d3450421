"""Checkpoint loading: missing files, foreign architectures, key mismatches, formats, Hydra configs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from rcnn_support import seeded_weights

from vcm_eval.models.base import WeightsError
from vcm_eval.models.rcnn import ZOO, FasterRCNNFPN, build_zoo_model, get_zoo_config
from vcm_eval.models.rcnn.checkpoint import load_state, read_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFS = sorted((REPO_ROOT / "conf" / "model").glob("faster_rcnn_*.yaml"))


@pytest.fixture(scope="module")
def r50_state(tmp_path_factory):
    return read_checkpoint(seeded_weights("r50", tmp_path_factory))


@pytest.fixture(scope="module")
def r50_net():
    return FasterRCNNFPN(get_zoo_config("faster_rcnn_R_50_FPN_3x"))


def test_missing_or_unset_weights_name_the_zoo_file(tmp_path):
    for weights in (None, tmp_path / "absent.pkl"):
        with pytest.raises(WeightsError) as err:
            build_zoo_model("faster_rcnn_X_101_32x8d_FPN_3x", weights)
        msg = str(err.value)
        assert "model_final_68b088.pkl" in msg and "model.weights" in msg and "VCM_EVAL_X101_FPN_3X_WEIGHTS" in msg
    with pytest.raises(WeightsError, match="model_final_280758.pkl"):
        build_zoo_model("faster_rcnn_R_50_FPN_3x", tmp_path / "absent.pkl")


def test_unknown_zoo_name():
    with pytest.raises(ValueError, match="known: faster_rcnn_R_50_FPN_1x"):
        build_zoo_model("retinanet_R_50_FPN_3x", None)


@pytest.mark.parametrize("conf", MODEL_CONFS, ids=[p.stem for p in MODEL_CONFS])
def test_hydra_model_configs_without_weights_fail_clearly(conf, monkeypatch):
    from hydra.utils import instantiate

    cfg = OmegaConf.load(conf)
    assert cfg.zoo_name == conf.stem and conf.stem in ZOO
    monkeypatch.delenv(ZOO[conf.stem].weights_env, raising=False)
    with pytest.raises(Exception) as err:  # Hydra wraps the builder's exception
        instantiate(cfg, _convert_="all")
    cause = err.value if isinstance(err.value, WeightsError) else err.value.__cause__
    assert isinstance(cause, WeightsError)
    assert ZOO[conf.stem].weights_file in str(cause)


def test_hydra_config_reads_weights_from_the_environment(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    conf = REPO_ROOT / "conf" / "model" / "faster_rcnn_R_50_FPN_3x.yaml"
    monkeypatch.setenv("VCM_EVAL_R50_FPN_3X_WEIGHTS", os.fspath(tmp_path / "from-env.pkl"))
    with pytest.raises(Exception) as err:
        instantiate(OmegaConf.load(conf), _convert_="all")
    assert "from-env.pkl does not exist" in str(err.value)


def test_checkpoint_of_another_architecture_is_refused(tmp_path_factory):
    with pytest.raises(WeightsError) as err:
        build_zoo_model("faster_rcnn_X_101_32x8d_FPN_3x", seeded_weights("r50", tmp_path_factory))
    msg = str(err.value)
    assert "does not fit faster_rcnn_X_101_32x8d_FPN_3x" in msg
    assert "ResNet-50" in msg and "1 groups x 64 wide" in msg
    assert "Missing keys" in msg and "Shape mismatches" in msg and "model_final_68b088.pkl" in msg


def test_missing_and_unexpected_keys_are_listed(r50_state, r50_net):
    state = dict(r50_state)
    del state["roi_heads.box_predictor.bbox_pred.bias"]
    state["roi_heads.mask_head.predictor.weight"] = torch.zeros(80, 256, 1, 1)
    with pytest.raises(WeightsError) as err:
        load_state(r50_net, state, source="edited.pkl")
    msg = str(err.value)
    assert "Missing keys (1): roi_heads.box_predictor.bbox_pred.bias" in msg
    assert "Unexpected keys (1): roi_heads.mask_head.predictor.weight" in msg
    assert "Mask R-CNN" in msg


def test_keys_detectron2_ignores_are_ignored(r50_state, r50_net):
    state = dict(r50_state)
    state["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    state["pixel_std"] = torch.ones(3, 1, 1)
    for i in range(5):
        state[f"proposal_generator.anchor_generator.cell_anchors.{i}"] = torch.zeros(3, 4)
    load_state(r50_net, state, source="zoo-like.pkl")
    assert torch.equal(r50_net.roi_heads.box_predictor.cls_score.weight,
                       r50_state["roi_heads.box_predictor.cls_score.weight"])


def test_pth_checkpoints_load_like_pkl(r50_state, r50_net, tmp_path):
    path = tmp_path / "model_final.pth"
    torch.save({"model": {f"module.{k}": v for k, v in r50_state.items()}, "iteration": 270000}, path)
    state = read_checkpoint(path)
    assert state.keys() == r50_state.keys()
    assert all(torch.equal(state[k], r50_state[k]) for k in state)
    load_state(r50_net, state, source=str(path))
    for name, value in r50_net.state_dict().items():
        assert torch.equal(value, r50_state[name]), name


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


@pytest.mark.parametrize("payload, expected", [
    (b"\x00garbage that is no pickle", "cannot read this weights file"),
    (pickle.dumps({"model": {"a": _Evil()}}), "refusing to load"),
    (pickle.dumps([1, 2, 3]), "holds no state dict"),
    (pickle.dumps({"blobs": {"conv1_w": np.zeros(3, np.float32)}}), "Caffe2/Detectron1"),
    (pickle.dumps({"model": {"backbone.x": "text"}, "__author__": "x"}), "not a float array"),
])
def test_unreadable_checkpoints(tmp_path, payload, expected):
    path = tmp_path / "weights.pkl"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match=expected):
        read_checkpoint(path, get_zoo_config("faster_rcnn_R_50_FPN_3x"))


def test_torchvision_state_dict_is_described(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save({"body.conv1.weight": torch.zeros(64, 3, 7, 7), "fpn.inner_blocks.0.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a Detectron2 ResNet-FPN model"):
        build_zoo_model("faster_rcnn_R_50_FPN_3x", path)
