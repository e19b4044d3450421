"""The C-layer anchor and the compensation proposal on synthetic C-layers, with test codecs.

The compensation identity (DESIGN.md section 1): with compensation, each compensated level's
top-down map carries only its own coding error, ``T^k - Tk = -Ek``; the anchor's error accumulates,
``T^k - Tk = -(Ek + up(E(k+1)) + up(up(E(k+2))) ...)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import NoiseCodec

from anchors.c_layer import CLayerAnchor
from proposals.compensation import CompensationProposal
from vcm_eval.codecs import LosslessCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.evaluation.bitrate import feature_side_info_bits
from vcm_eval.features import dequantize, quantize, top_down_sums, upsample_nearest
from vcm_eval.features.quantize import QuantParams
from vcm_eval.methods import CodedFeatures
from vcm_eval.store import Store
from vcm_eval.types import SplitFeatures, SplitMeta

LEVELS = ("c5", "c4", "c3", "c2")


def make_features(channels: int = 16, size: int = 32, seed: int = 0) -> SplitFeatures:
    rng = np.random.default_rng(seed)
    layers = {}
    for level, stride in zip(LEVELS, (32, 16, 8, 4)):
        h = size * 4 // stride
        smooth = rng.normal(size=(channels, h, h)).cumsum(axis=1).cumsum(axis=2) / h
        layers[level] = smooth.astype(np.float32)
    return SplitFeatures(layers, SplitMeta((size * 4 - 3, size * 4 - 5), (size * 4 - 3, size * 4 - 5),
                                           (size * 4, size * 4)))


@pytest.fixture
def coder_for(tmp_path):
    return lambda codec: CachedCodec(codec, Store(tmp_path / "store"))


def test_lossless_reconstruction_is_the_quantised_input(coder_for):
    feats = make_features()
    anchor = CLayerAnchor(name="c_layer", rate_points=[30])
    coder = coder_for(LosslessCodec())
    coded = anchor.encode(feats, 30, coder, label="t")
    recon = anchor.decode(coded, coder)
    for level in LEVELS:
        params = QuantParams(**coded.levels[level].quant)
        np.testing.assert_array_equal(recon.layers[level], dequantize(quantize(feats.layers[level], params), params))
    assert coded.side_info_bits == feature_side_info_bits(4) == 4 * 64 + 32
    assert coded.num_bits == sum(8 * lv.num_bytes for lv in coded.levels.values()) + coded.side_info_bits


def test_compensation_with_lossless_codec_only_quantisation_error_remains(coder_for):
    feats = make_features()
    proposal = CompensationProposal(name="compensation", rate_points=[30], compensated_levels=["c4", "c3", "c2"])
    coder = coder_for(LosslessCodec())
    recon = proposal.decode(proposal.encode(feats, 30, coder, label="t"), coder)
    reference, decoded = top_down_sums(feats.layers), top_down_sums(recon.layers)
    for level in LEVELS:
        step = (recon.layers[level].max() - recon.layers[level].min()) / 1023
        assert np.abs(decoded[level] - reference[level]).max() <= step / 2 + 1e-4


def _level_errors(proposal, coded: CodedFeatures, feats: SplitFeatures, coder) -> dict[str, np.ndarray]:
    """E_k = C'_k - dec(enc(C'_k)), recomputed from the inputs the proposal coded."""
    errors, previous = {}, None
    for level in LEVELS:
        coded_input = feats.layers[level]
        if level in getattr(proposal, "compensated_levels", []) and previous is not None:
            coded_input = coded_input + upsample_nearest(previous, coded_input.shape[1:])
        recon = proposal.decode_level(coded.levels[level], coder, label="t")
        errors[level] = previous = coded_input - recon
    return errors


def test_compensation_identity_each_level_carries_only_its_own_error(coder_for):
    feats = make_features(seed=3)
    coder = coder_for(NoiseCodec(amplitude=20))
    proposal = CompensationProposal(name="compensation", rate_points=[40])  # paper default: c4, c3
    anchor = CLayerAnchor(name="c_layer", rate_points=[40])
    reference = top_down_sums(feats.layers)

    coded_p = proposal.encode(feats, 40, coder, label="t")
    errors_p = _level_errors(proposal, coded_p, feats, coder)
    decoded_p = top_down_sums(proposal.decode(coded_p, coder).layers)
    for level in ("c5", "c4", "c3"):
        np.testing.assert_allclose(decoded_p[level] - reference[level], -errors_p[level], atol=2e-4)
    # c2 is not compensated: it carries its own error and C3's.
    carried = errors_p["c2"] + upsample_nearest(errors_p["c3"], errors_p["c2"].shape[1:])
    np.testing.assert_allclose(decoded_p["c2"] - reference["c2"], -carried, atol=2e-4)

    coded_a = anchor.encode(feats, 40, coder, label="t")
    errors_a = _level_errors(anchor, coded_a, feats, coder)
    decoded_a = top_down_sums(anchor.decode(coded_a, coder).layers)
    accumulated = None
    for level in LEVELS:
        accumulated = errors_a[level] if accumulated is None else \
            errors_a[level] + upsample_nearest(accumulated, errors_a[level].shape[1:])
        np.testing.assert_allclose(decoded_a[level] - reference[level], -accumulated, atol=2e-4)
    # and the point of the paper: compensated levels end up closer to the uncoded pyramid
    for level in ("c4", "c3"):
        mse_p = np.mean((decoded_p[level] - reference[level]) ** 2)
        mse_a = np.mean((decoded_a[level] - reference[level]) ** 2)
        assert mse_p < mse_a


def test_anchor_and_proposal_share_the_coarsest_encode(coder_for):
    feats = make_features(seed=5)
    codec = NoiseCodec(amplitude=6)
    coder = coder_for(codec)
    CLayerAnchor(name="c_layer", rate_points=[35]).encode(feats, 35, coder, label="t")
    assert codec.calls == 4
    coded = CompensationProposal(name="compensation", rate_points=[35]).encode(feats, 35, coder, label="t")
    # c5 and c2 are coded unchanged by both (c2 is not compensated by default); c4 and c3 are new pictures.
    assert codec.calls == 6
    assert coded.levels["c5"].from_cache and coded.levels["c2"].from_cache
    assert not coded.levels["c4"].from_cache


def test_coded_features_round_trip_through_json(coder_for):
    import json

    feats = make_features()
    coder = coder_for(LosslessCodec())
    coded = CompensationProposal(name="compensation", rate_points=[30]).encode(feats, 30, coder, label="t")
    again = CodedFeatures.from_dict(json.loads(json.dumps(coded.to_dict())))
    assert again == coded


def test_bad_compensation_config_is_refused():
    with pytest.raises(ValueError, match="not among the coded levels"):
        CompensationProposal(name="x", rate_points=[1], compensated_levels=["c7"])
    with pytest.raises(ValueError, match="coded first"):
        CompensationProposal(name="x", rate_points=[1], compensated_levels=["c5"])
    with pytest.raises(ValueError, match="no rate points"):
        CLayerAnchor(name="x", rate_points=[])


def test_entry_identity_ignores_name_and_qps_but_not_method():
    a = CompensationProposal(name="a", rate_points=[1, 2]).identity()
    b = CompensationProposal(name="b", rate_points=[3]).identity()
    c = CompensationProposal(name="a", rate_points=[1, 2], compensated_levels=["c4", "c3", "c2"]).identity()
    assert a == b and a != c
    assert a["compensated_levels"] == ["c4", "c3"]


class RecordingCodec(NoiseCodec):
    """A NoiseCodec that records the QP of every picture it is asked to code, by level."""

    def __init__(self) -> None:
        super().__init__(4)
        self.qps: dict[str, list[int]] = {}

    def encode(self, frame, qp, *, label=""):
        level = next(lv for lv in LEVELS if f" {lv} " in label)
        self.qps.setdefault(level, []).append(qp)
        return super().encode(frame, qp, label=label)


@pytest.mark.parametrize("cls", [CLayerAnchor, CompensationProposal])
def test_per_level_qp_offsets_reach_the_codec_and_the_records(coder_for, cls):
    codec = RecordingCodec()
    entry = cls(name="e", rate_points=[40], qp_offsets={"c2": -3, "c5": 2})
    coded = entry.encode(make_features(), 40, coder_for(codec), label="image 1")
    assert codec.qps == {"c5": [42], "c4": [40], "c3": [40], "c2": [37]}
    assert {lv: rec.qp for lv, rec in coded.levels.items()} == {"c5": 42, "c4": 40, "c3": 40, "c2": 37}
    assert CodedFeatures.from_dict(coded.to_dict()).levels["c2"].qp == 37
    assert entry.identity()["qp_offsets"] == {"c2": -3, "c5": 2}


def test_zero_offsets_code_what_no_offsets_code_and_share_its_identity():
    # the identity is part of every coded/detection cache key: offsets of 0 must not split the cache
    plain = CLayerAnchor(name="c_layer", rate_points=[41]).identity()
    assert plain["class"] == "anchors.c_layer.CLayerAnchor" and plain["split"] == "c"
    for offsets in ({}, {"c2": 0, "c4": 0}):
        assert CLayerAnchor(name="c_layer", rate_points=[41], qp_offsets=offsets).identity() == plain
    assert CLayerAnchor(name="c_layer", rate_points=[41], qp_offsets={"c2": 1}).identity() != plain
    with pytest.raises(ValueError, match="c6"):
        CLayerAnchor(rate_points=[41], qp_offsets={"c6": 1})
