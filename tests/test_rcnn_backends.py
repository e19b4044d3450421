"""The real Detectron2 backend: agrees with vcm_eval's implementation where installed, clear error otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from rcnn_support import GOLDEN_SIZE, box_tolerance, golden_image, seeded_model, seeded_weights, tolerance

from vcm_eval.models.detectron2_backend import Detectron2SplitModel, Detectron2UnavailableError, detectron2_available

AVAILABLE, REASON = detectron2_available()


@pytest.mark.skipif(AVAILABLE, reason=f"detectron2 {REASON} is installed; the absent case cannot be checked")
def test_constructing_without_detectron2_is_a_clear_error(tmp_path):
    with pytest.raises(Detectron2UnavailableError, match="vcm_eval.models.rcnn.build_zoo_model"):
        Detectron2SplitModel("faster_rcnn_R_50_FPN_3x", tmp_path / "w.pkl")


@pytest.mark.skipif(not AVAILABLE, reason=f"detectron2 is not importable ({REASON})")
@pytest.mark.parametrize("key", ["r50", "x101"])
def test_backends_agree(key, tmp_path_factory):
    ours = seeded_model(key, tmp_path_factory)
    real = Detectron2SplitModel(ours.cfg.zoo_name, seeded_weights(key, tmp_path_factory), *GOLDEN_SIZE)
    image = golden_image("chelsea")
    f_ours, f_real = ours.encode(image), real.encode(image)
    assert f_ours.meta == f_real.meta
    # each backend is within tolerance() of the golden arrays, so within twice of each other
    def twice(tensor: str) -> dict[str, float]:
        return {k: 2 * v for k, v in tolerance(key, tensor).items()}

    for level in f_ours.layers:
        np.testing.assert_allclose(f_ours.layers[level], f_real.layers[level], **twice(level))
    # Each decoder on the other's C-layers: the split interface is interchangeable.
    for feats in (f_ours, f_real):
        a, b = ours.decode(feats), real.decode(feats)
        assert len(a) == len(b)
        dist = np.abs(a.boxes[:, None, :] - b.boxes[None]).max(axis=2)
        dist[a.classes[:, None] != b.classes[None, :]] = np.inf
        idx = dist.argmin(axis=1)
        assert dist[np.arange(len(idx)), idx].max() < 2 * box_tolerance(key, "pred_boxes")
        np.testing.assert_allclose(a.scores, b.scores[idx], **twice("scores"))
