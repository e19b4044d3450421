"""The P-layer split point and the P-layer anchor (``anchor=p_layer``).

* every model's P-layer split is exact: ``decode(to_split(encode(x), "p"))`` equals the unsplit detections
  bit for bit (embedded torchvision model, vcm_eval's Faster R-CNN and Mask R-CNN);
* the P-layer anchor with the ``lossless`` codec leaves only the 10-bit quantiser's error, which moves
  detections as little as it does through the C-layer anchor;
* the sweep runs ``anchor=[c_layer,p_layer]`` end to end, with BD of each anchor against the other and
  per-image rows of the P-layer anchor; the C-layer entries' identities (and cache keys) are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rcnn_support import GOLDEN_SIZE, golden_image, seeded_model, seeded_weights
from test_pipeline import compose_cfg

from anchors.c_layer import CLayerAnchor
from anchors.p_layer import PLayerAnchor
from proposals.compensation import CompensationProposal
from vcm_eval.cli import run
from vcm_eval.codecs import LosslessCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.data.synthetic import CLASS_NAMES, generate_image
from vcm_eval.features import dequantize, quantize
from vcm_eval.features.quantize import QuantParams
from vcm_eval.models.base import split_of
from vcm_eval.models.detectron2_backend import Detectron2SplitModel, detectron2_available
from vcm_eval.models.embedded import EmbeddedArch, EmbeddedDetector, build_embedded_model, build_network
from vcm_eval.store import Store, content_key
from vcm_eval.types import Detections


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """One generated synthetic set for this module's sweeps."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def random_model() -> EmbeddedDetector:
    """Seeded, untrained weights: ~100 detections per picture to compare (as tests/test_embedded_model.py)."""
    torch.manual_seed(0)
    return EmbeddedDetector(build_network(EmbeddedArch(), len(CLASS_NAMES)), CLASS_NAMES, EmbeddedArch(), "random")


@pytest.fixture(scope="module")
def shipped_model() -> EmbeddedDetector:
    return build_embedded_model()


def _assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.classes, b.classes)
    if a.masks is not None or b.masks is not None:
        np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize("shape", [(320, 424), (331, 320)])
def test_embedded_p_split_equals_unsplit_forward(random_model, shape):
    image = np.random.default_rng(shape[0]).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    c = random_model.encode(image)
    p = random_model.to_split(c, "p")
    assert split_of(p) == "p" and p.meta == c.meta
    # the FPN's outputs have the laterals' shapes: P-layer pictures are as large as C-layer pictures
    for k in (2, 3, 4, 5):
        assert p.layers[f"p{k}"].shape == c.layers[f"c{k}"].shape and p.layers[f"p{k}"].dtype == np.float32
    _assert_same(random_model.decode(p), random_model.detect_unsplit(image))
    assert random_model.to_split(c, "c") is c and random_model.to_split(p, "p") is p


def test_split_errors_name_the_levels(random_model):
    c = random_model.encode(np.zeros((320, 320, 3), dtype=np.uint8))
    p = random_model.to_split(c, "p")
    with pytest.raises(ValueError, match="cannot be carried back"):
        random_model.to_split(p, "c")
    with pytest.raises(ValueError, match="unknown split point 'q'"):
        random_model.to_split(c, "q")
    with pytest.raises(ValueError, match=r"all be C-layers \(c2..c5\) or all P-layers"):
        random_model.decode(c.replace_layers({**c.layers, "p2": p.layers["p2"]}))
    with pytest.raises(ValueError, match="lack level p3"):
        random_model.decode(p.replace_layers({k: v for k, v in p.layers.items() if k != "p3"}))
    with pytest.raises(ValueError, match="level p4 has shape"):
        random_model.decode(p.replace_layers({**p.layers, "p4": p.layers["p4"][:, :-1]}))
    with pytest.raises(ValueError, match="P-layers"):
        PLayerAnchor(rate_points=[41], levels=["p5", "c4"])


@pytest.mark.parametrize("key", ["r50", "mask_r50"])
def test_rcnn_p_split_equals_detect_exactly(key, tmp_path_factory):
    model = seeded_model(key, tmp_path_factory)
    image = np.random.default_rng(0).integers(0, 256, size=(150, 230, 3), dtype=np.uint8)
    c = model.encode(image)
    p = model.to_split(c, "p")
    assert sorted(p.layers) == ["p2", "p3", "p4", "p5"]  # P6 is the receiver's: max_pool(P5)
    stages = model.run_stages(image)
    for name, arr in p.layers.items():
        np.testing.assert_array_equal(arr, stages.p_layers[name][0].numpy())
    _assert_same(model.decode(p), model.detect(image))


@pytest.mark.skipif(not detectron2_available()[0], reason="detectron2 is not importable")
def test_detectron2_p_split_is_its_own_fpn_and_decodes_as_its_c_split(tmp_path_factory):
    real = Detectron2SplitModel("faster_rcnn_R_50_FPN_3x", seeded_weights("r50", tmp_path_factory), *GOLDEN_SIZE)
    image = golden_image("chelsea")
    c = real.encode(image)
    p = real.to_split(c, "p")
    assert sorted(p.layers) == ["p2", "p3", "p4", "p5"]
    stages = real.stage_arrays(image)  # Detectron2's own FPN forward, laterals and outputs in one call
    for k in (2, 3, 4, 5):
        np.testing.assert_array_equal(p.layers[f"p{k}"], stages[f"p{k}"][0])
    _assert_same(real.decode(p), real.decode(c))


def _coder(tmp_path: Path) -> CachedCodec:
    return CachedCodec(LosslessCodec(), Store(tmp_path / "store"))


def test_lossless_p_layer_anchor_leaves_only_the_quantiser_error(shipped_model, tmp_path):
    coder = _coder(tmp_path)
    anchors = (CLayerAnchor(rate_points=[32]), PLayerAnchor(rate_points=[32]))
    for index in range(3):
        image = generate_image(0, "val", index)[0]
        c = shipped_model.encode(image)
        reference = shipped_model.detect(image)
        confident = int((reference.scores > 0.5).sum())
        assert confident > 0
        for anchor in anchors:
            features = shipped_model.to_split(c, anchor.split)
            coded = anchor.encode(features, 32, coder, label=f"val {index}")
            assert sorted(coded.levels) == sorted(features.layers)
            reconstruction = anchor.decode(coded, coder)
            for level, record in coded.levels.items():
                params = QuantParams(**record.quant)
                expected = dequantize(quantize(features.layers[level], params), params)
                np.testing.assert_array_equal(reconstruction.layers[level], expected)
            # 10-bit quantisation (PSNR ~71 dB per level) moves the confident detections by hundredths of a pixel
            dets = shipped_model.decode(reconstruction)
            np.testing.assert_array_equal(dets.classes[:confident], reference.classes[:confident])
            np.testing.assert_allclose(dets.boxes[:confident], reference.boxes[:confident], atol=0.1)
            np.testing.assert_allclose(dets.scores[:confident], reference.scores[:confident], atol=1e-3)


def test_the_split_point_is_part_of_the_identity_and_the_cache_keys():
    c_identity = CLayerAnchor(name="c_layer", rate_points=[41]).identity()
    assert c_identity["split"] == CompensationProposal(rate_points=[41]).identity()["split"] == "c"
    p_identity = PLayerAnchor(rate_points=[41]).identity()
    assert p_identity["class"] == "anchors.p_layer.PLayerAnchor" and p_identity["split"] == "p"
    assert p_identity["levels"] == ["p5", "p4", "p3", "p2"]
    clayers, codec = "0" * 64, {"name": "x265"}
    assert content_key("coded", clayers, c_identity, codec, 41) != content_key("coded", clayers, p_identity, codec, 41)


def test_sweep_with_both_feature_anchors(tmp_path, data_root):
    plain = run(compose_cfg(tmp_path, data_root, "anchor=[c_layer]"), tmp_path / "plain")
    both = run(compose_cfg(tmp_path, data_root, "anchor=[c_layer,p_layer]"), tmp_path / "both")
    summary, per_image, bd = both.summary, both.per_image, both.bd
    assert set(summary["entry"]) == {"uncompressed", "c_layer", "p_layer"}
    assert set(zip(bd["anchor"], bd["test"])) == {("c_layer", "p_layer"), ("p_layer", "c_layer")}
    rows = per_image[per_image["entry"] == "p_layer"]
    assert len(rows) == 3 * 2 and rows["qp"].tolist().count(32) == 3
    for level in ("p2", "p3", "p4", "p5"):
        assert (rows[f"bits_{level}"] > 0).all() and (rows[f"qp_{level}"] == rows["qp"]).all()
        assert rows[f"psnr_{level}"].notna().all()
    np.testing.assert_array_equal(rows[[f"bits_p{k}" for k in (2, 3, 4, 5)]].sum(axis=1) + rows["side_info_bits"],
                                  rows["num_bits"])
    assert not any(c.startswith("topdown_psnr_p") for c in per_image.columns)
    assert rows.filter(like="bits_c").isna().all().all()
    coded = summary[summary["entry"] == "p_layer"].sort_values("qp")
    assert coded["avg_bpp"].is_monotonic_decreasing and coded["map_50"].between(0, 1).all()
    # the C-layer anchor's results in the same store are the earlier run's, reused (same cache keys)
    c_rows = per_image[per_image["entry"] == "c_layer"]
    assert not c_rows["computed_now"].any()
    columns = list(plain.summary.columns)  # the P-layer anchor adds its own levels' columns, empty for c_layer
    alone, together = (table.loc[table["entry"] == "c_layer", columns].reset_index(drop=True)
                       for table in (plain.summary, summary))
    pd.testing.assert_frame_equal(alone, together)


def test_sweep_p_layer_anchor_with_lossless_codec_is_near_uncompressed(tmp_path, data_root):
    outcome = run(compose_cfg(tmp_path, data_root, "codec=lossless", "anchor=[p_layer]"), tmp_path / "run")
    summary = outcome.summary
    reference = float(summary.loc[summary["entry"] == "uncompressed", "map_50"].iloc[0])
    coded = summary[summary["entry"] == "p_layer"]
    assert len(coded) == 2 and (coded["avg_bpp"] > 0).all()
    np.testing.assert_allclose(coded["map_50"], reference, atol=0.01)
