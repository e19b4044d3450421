"""Shared, per-process-cached fixtures data for the ``test_rcnn_*`` files.

The seeded checkpoints are regenerated from ``../shared/golden/detectron2`` with its own generator
(imported from its path), checked against the sha256 recorded there, and written once per test
session under pytest's temporary folder; models are built once per process and size.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from vcm_eval.data.images import read_image
from vcm_eval.models.rcnn import RCNNSplitModel, build_zoo_model

#: golden key -> (zoo name, spec file, stem scale), as golden_index.json describes them.
GOLDEN_MODELS = {
    "r50": ("faster_rcnn_R_50_FPN_3x", "spec_faster_rcnn_R_50_FPN_3x.json", 2.0**-6),
    "x101": ("faster_rcnn_X_101_32x8d_FPN_3x", "spec_faster_rcnn_X_101_32x8d_FPN_3x.json", 1.0),
    # Mask R-CNN (golden README, "Mask R-CNN"): sha256 in config_mask_<model>.json, like the others
    "mask_r50": ("mask_rcnn_R_50_FPN_3x", "spec_mask_rcnn_R_50_FPN_3x.json", 2.0**-6),
    "mask_x101": ("mask_rcnn_X_101_32x8d_FPN_3x", "spec_mask_rcnn_X_101_32x8d_FPN_3x.json", 1.0),
}
#: Mask R-CNN golden key -> (its golden picture, the Faster R-CNN key whose tolerance() its shared tensors use)
GOLDEN_MASK_CASES = {"mask_r50": ("astronaut", "r50"), "mask_x101": ("chelsea", "x101")}
GOLDEN_IMAGES = ("astronaut", "chelsea")
GOLDEN_SIZE = (320, 533)

_weights: dict[str, Path] = {}
_models: dict[tuple, RCNNSplitModel] = {}


def golden_dir() -> Path:
    """``../shared/golden/detectron2``; skips the calling test when it is absent."""
    return shared_path("golden", "detectron2")


@lru_cache(maxsize=1)
def generator():
    """The golden folder's ``seeded_checkpoint`` module, imported from its path."""
    spec = importlib.util.spec_from_file_location("seeded_checkpoint", golden_dir() / "seeded_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_weights(key: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the seeded checkpoint ``key`` (r50 / x101), generated once per session."""
    if key not in _weights:
        gen = generator()
        zoo_name, spec, stem_scale = GOLDEN_MODELS[key]
        ckpt = gen.build_checkpoint(gen.load_spec(str(golden_dir() / spec)), seed=0, stem_scale=stem_scale)
        recorded = json.loads((golden_dir() / f"config_{key}.json").read_text())["weights"]["sha256"]
        assert gen.checkpoint_digest(ckpt) == recorded, f"regenerated {key} weights differ from the golden ones"
        path = tmp_path_factory.mktemp("rcnn_weights") / f"seeded_{key}.pkl"
        gen.write_pkl(ckpt, str(path))
        _weights[key] = path
    return _weights[key]


def seeded_model(key: str, tmp_path_factory: pytest.TempPathFactory, size: tuple[int, int] = GOLDEN_SIZE
                 ) -> RCNNSplitModel:
    """The zoo model of golden key ``key`` with seeded weights at test size ``size``, built once."""
    cache_key = (key, size)
    if cache_key not in _models:
        _models[cache_key] = build_zoo_model(GOLDEN_MODELS[key][0], seeded_weights(key, tmp_path_factory), *size)
    return _models[cache_key]


@cache
def golden_image(name: str) -> np.ndarray:
    """A golden input picture as RGB uint8 (the golden run read the same PNG as BGR with cv2)."""
    image = read_image(golden_dir() / f"{name}.png")
    image.setflags(write=False)
    return image


@cache
def golden_arrays(key: str, image: str) -> dict[str, np.ndarray]:
    with np.load(golden_dir() / f"golden_{key}_{image}.npz") as data:
        return {k: data[k] for k in data.files}


SPREAD_RECORD = Path(__file__).with_name("golden_spread.json")
#: tolerance = MARGIN x the worst spread recorded (tests/test_rcnn_parity.py says why)
MARGIN = 2.0
#: floors for tensors the record shows bit-exact everywhere: two float32 ulps relative, 1e-6 absolute
FLOOR = {"atol": 1e-6, "rtol": 2.4e-7}


@cache
def tolerance(model: str, tensor: str) -> dict[str, float]:
    """``assert_allclose`` keywords for ``tensor`` of ``model``: MARGIN x the recorded worst spread."""
    worst = json.loads(SPREAD_RECORD.read_text())["worst"][model][tensor]
    return {"atol": max(FLOOR["atol"], MARGIN * worst["abs_small"]),
            "rtol": max(FLOOR["rtol"], MARGIN * worst["rel_large"])}


def box_tolerance(model: str, tensor: str) -> float:
    """Max-abs distance (px) under which a box matches its golden box: the allclose bound at the largest
    coordinate the golden pictures have (533 px)."""
    tol = tolerance(model, tensor)
    return tol["atol"] + tol["rtol"] * 533


@cache
def golden_mask_arrays(key: str) -> dict[str, np.ndarray]:
    """``golden_mask_<r50|x101>_<picture>.npz`` of Mask R-CNN key ``key`` (mask_r50 / mask_x101), with the
    pasted masks unpacked to ``pred_masks`` (N, H, W) bool and a full-channel ``c2`` where the file has it."""
    model = key.removeprefix("mask_")
    with np.load(golden_dir() / f"golden_mask_{model}_{GOLDEN_MASK_CASES[key][0]}.npz") as data:
        out = {k: data[k] for k in data.files}
    shape = tuple(int(v) for v in out["pred_masks_shape"])
    out["pred_masks"] = np.unpackbits(out.pop("pred_masks_packed"), count=int(np.prod(shape))
                                      ).reshape(shape).astype(bool)
    return out


def assert_detections_match(stages, gold: dict[str, np.ndarray], key: str) -> None:
    """Final instances of ``stages`` (StageOutputs) against the golden ones: 100, matched one to one by class
    and box in original and resized coordinates, boxes and scores within ``tolerance(key, ...)``, sorted."""
    from vcm_eval.models.rcnn.parity import match_instances

    dets = stages.detections
    assert len(dets) == len(gold["scores"]) == 100
    for boxes, name in ((dets.boxes, "pred_boxes"), (stages.heads["boxes"].numpy(), "boxes_resized")):
        idx, dist = match_instances(boxes, dets.classes, gold[name], gold["pred_classes"])
        assert len(set(idx.tolist())) == len(idx), "two golden detections matched the same one"
        np.testing.assert_array_less(dist, box_tolerance(key, name))
        np.testing.assert_array_equal(dets.classes[idx], gold["pred_classes"])
        np.testing.assert_allclose(boxes[idx], gold[name], **tolerance(key, name))
        np.testing.assert_allclose(dets.scores[idx], gold["scores"], **tolerance(key, "scores"))
    assert np.all(np.diff(dets.scores) <= 0), "detections must come sorted by descending score"
