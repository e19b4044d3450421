"""Training-free sample methods of the feature entries (vcm_eval/features/chain.py) and the saturated-curve BD
rule: each method inverts from the record alone, counts its side information, and is off by default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_entries import LEVELS, make_features

import vcm_eval.models.embedded as embedded
from anchors.c_layer import CLayerAnchor
from proposals.compensation import CompensationProposal
from proposals.feature_chain import FeatureChainEntry
from vcm_eval.codecs import LosslessCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.evaluation.bd_rate import Curve, bd_accuracy, bd_rate, saturated_part
from vcm_eval.evaluation.bitrate import feature_side_info_bits
from vcm_eval.features.chain import ChainOptions, basis_path, encode_samples
from vcm_eval.features.quantize import clipped_fraction, min_max_params, quantize, range_params
from vcm_eval.features.resample import downsample_mean, upsample_bilinear
from vcm_eval.features.transform import (
    LevelStatistics,
    components_for_energy,
    from_components,
    load_bases,
    save_bases,
    to_components,
)
from vcm_eval.methods import CodedFeatures
from vcm_eval.store import Store


@pytest.fixture
def basis_file(tmp_path):
    """A basis fitted on other features than the ones coded (as the shipped one is fitted on tune pictures)."""
    stats = {}
    for seed in (10, 11, 12):
        for level, layer in make_features(seed=seed).layers.items():
            stats.setdefault(level, LevelStatistics(layer.shape[0])).add(layer)
    path = tmp_path / "basis.npz"
    save_bases(path, stats, {"note": "test"})
    return path


def test_default_chain_is_the_anchors_min_max_quantiser():
    x = make_features().layers["c3"]
    q, params, record = encode_samples("c3", x, ChainOptions(), 10)
    np.testing.assert_array_equal(q, quantize(x, min_max_params(x, 10)))
    assert params == [min_max_params(x, 10)] and record == {}
    assert ChainOptions.of(None, None, None).is_default and ChainOptions.of({}, {}, {}).is_default


def test_default_options_code_what_the_anchor_codes(tmp_path):
    plain = FeatureChainEntry(rate_points=[41]).identity()
    assert plain["samples"] == {} and plain["split"] == "c"
    assert FeatureChainEntry(rate_points=[41], quantizer=None, transform=None, downsample={"c2": 1}).identity() == plain
    assert FeatureChainEntry(rate_points=[41], downsample={"c2": 2}).identity() != plain
    coder = CachedCodec(LosslessCodec(), Store(tmp_path / "s"))
    feats = make_features()
    a = CLayerAnchor(rate_points=[30]).encode(feats, 30, coder)
    b = FeatureChainEntry(rate_points=[30], quantizer={"range": "minmax"}).encode(feats, 30, coder)
    timing = ("encode_s", "decode_s", "from_cache")
    for level in LEVELS:
        first, second = a.to_dict()["levels"][level], b.to_dict()["levels"][level]
        assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in second.items()
                                                                       if k not in timing}
        assert first["samples"] is None and first["side_info_bits"] == 0
    assert a.side_info_bits == feature_side_info_bits(4)


def test_klt_components_round_trip_and_order_by_energy(basis_file):
    bases, info = load_bases(basis_file)
    x = make_features(seed=3).layers["c2"]
    basis = bases["c2"]
    full = from_components(to_components(x, basis, basis.channels), basis)
    np.testing.assert_allclose(full, x, atol=1e-4)
    assert np.all(np.diff(basis.variances) <= 1e-12)
    errors = [np.mean((from_components(to_components(x, basis, k), basis) - x) ** 2) for k in (2, 8, 16)]
    assert errors[0] > errors[1] > errors[2]
    assert 1 <= components_for_energy(basis, 0.9) <= basis.channels
    assert len(info["sha256"]) == 64


def test_channel_selection_keeps_the_widest_channels_and_fills_the_rest_with_the_mean(basis_file):
    bases, _ = load_bases(basis_file, "select")
    basis = bases["c3"]
    x = make_features(seed=3).layers["c3"]
    y = to_components(x, basis, 4)
    kept = np.argmax(basis.vectors[:, :4], axis=0)
    np.testing.assert_allclose(y, x[kept] - basis.mean[kept, None, None], atol=1e-5)
    recon = from_components(y, basis)
    np.testing.assert_allclose(recon[kept], x[kept], atol=1e-5)
    dropped = sorted(set(range(x.shape[0])) - set(kept))
    np.testing.assert_allclose(recon[dropped], np.broadcast_to(basis.mean[dropped, None, None], recon[dropped].shape),
                               atol=1e-5)


def test_resampling_halves_and_restores_shapes():
    x = np.arange(2 * 8 * 12, dtype=np.float32).reshape(2, 8, 12)
    small = downsample_mean(x, 2)
    assert small.shape == (2, 4, 6) and small[0, 0, 0] == np.mean(x[0, :2, :2])
    assert downsample_mean(x[:, :7, :11], 2).shape == (2, 4, 6)
    assert upsample_bilinear(small, (8, 12)).shape == (2, 8, 12)
    flat = np.full((1, 3, 5), 2.5, np.float32)
    np.testing.assert_array_equal(upsample_bilinear(flat, (6, 10)), np.full((1, 6, 10), 2.5, np.float32))
    ramp = np.tile(np.arange(4, dtype=np.float32), (1, 4, 1))
    np.testing.assert_allclose(upsample_bilinear(ramp, (4, 8))[0, 0, 1:7], [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])


def test_clipped_ranges_are_narrower_and_count_what_they_clip():
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, size=(4, 32, 32)).astype(np.float32)
    full = range_params(x, 10)
    pct = range_params(x, 10, method="percentile", low=1, high=99)
    sig = range_params(x, 10, method="sigma", k=3)
    assert full.minimum < pct.minimum < pct.maximum < full.maximum
    assert full.minimum <= sig.minimum < sig.maximum <= full.maximum
    assert clipped_fraction(x, full) == 0.0
    assert 0.015 < clipped_fraction(x, pct) < 0.025
    with pytest.raises(ValueError, match="unknown quantiser range"):
        range_params(x, 10, method="median")


@pytest.mark.parametrize("options", [
    {"quantizer": {"range": "percentile", "low": 0.5, "high": 99.5}},
    {"quantizer": {"per_channel": True}},
    {"quantizer": {"zscore": True, "range": "sigma", "k": 4}},
    {"transform": {"kind": "klt", "components": {"c2": 6, "c3": 8}}},
    {"transform": {"kind": "select", "components": {"c2": 10}}},
    {"downsample": {"c2": 2, "c3": 2}},
    {"transform": {"kind": "klt", "components": {"c2": 6}}, "downsample": {"c2": 2},
     "quantizer": {"per_channel": True}},
])
@pytest.mark.parametrize("cls", [FeatureChainEntry, CompensationProposal])
def test_methods_decode_from_the_record_alone_and_count_their_side_information(tmp_path, basis_file, options, cls):
    if "transform" in options:
        options = {**options, "transform": {**options["transform"], "basis": str(basis_file)}}
    coder = CachedCodec(LosslessCodec(), Store(tmp_path / "s"))
    feats = make_features()
    entry = cls(name="e", rate_points=[30], **options)
    coded = entry.encode(feats, 30, coder, label="image 7")
    # what the receiver gets: the records (through JSON) and the bitstreams; a fresh entry object decodes them
    received = CodedFeatures.from_dict(coded.to_dict())
    recon = cls(name="e", rate_points=[30], **options).decode(received, coder)
    for level in LEVELS:
        assert recon.layers[level].shape == feats.layers[level].shape
        record = coded.levels[level]
        assert math.isfinite(record.psnr_db) and record.psnr_db > 15, (level, record.psnr_db)
    extra = sum(r.side_info_bits for r in coded.levels.values())
    assert coded.side_info_bits == feature_side_info_bits(4) + extra
    if options.get("quantizer", {}).get("per_channel"):
        assert coded.levels["c5"].side_info_bits == 15 * 64 + (8 if "transform" in options else 0)
    if options.get("quantizer", {}).get("zscore"):
        assert coded.levels["c5"].side_info_bits == 16 * 64
    if "transform" in options:
        k = options["transform"]["components"]["c2"]
        assert coded.levels["c2"].geometry["channels"] == k and coded.levels["c2"].samples["components"] == k
        assert entry.identity()["samples"]["transform"]["basis_sha256"] == load_bases(basis_file)[1]["sha256"]
    if "downsample" in options:
        assert coded.levels["c2"].geometry["tile_h"] == feats.layers["c2"].shape[1] // 2
    if options.get("quantizer", {}).get("range") == "percentile":
        assert 0 < coded.levels["c2"].samples["clipped_fraction"] < 0.02


def test_a_record_from_another_basis_is_refused(tmp_path, basis_file):
    coder = CachedCodec(LosslessCodec(), Store(tmp_path / "s"))
    entry = FeatureChainEntry(rate_points=[30],
                              transform={"kind": "klt", "basis": str(basis_file), "components": {"c2": 4}})
    coded = entry.encode(make_features(), 30, coder)
    coded.levels["c2"].samples["basis_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="channel basis"):
        entry.decode(coded, coder)


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="c7"):
        FeatureChainEntry(rate_points=[30], downsample={"c7": 2})
    with pytest.raises(ValueError, match="unknown sample-method options"):
        FeatureChainEntry(rate_points=[30], quantizer={"rnage": "sigma"})
    with pytest.raises(ValueError, match="transform"):
        FeatureChainEntry(rate_points=[30], transform={"components": {"c2": 4}})
    with pytest.raises(FileNotFoundError, match="fit_channel_basis"):
        FeatureChainEntry(rate_points=[30], transform={"kind": "klt", "basis": "/nonexistent/b.npz"}).identity()


def test_the_shipped_basis_loads_and_matches_the_embedded_model():
    bases, info = load_bases(basis_path("embedded"))
    assert sorted(bases) == ["c2", "c3", "c4", "c5"] and all(b.channels == 32 for b in bases.values())
    shipped = json.loads((Path(embedded.__file__).parent / "weights" / "embedded.json").read_text())
    assert info["model"]["weights_sha256"] == shipped["sha256"]
    assert info["dataset"]["split"] == "tune"


# --- saturated curves -------------------------------------------------------------------------------------

ANCHOR = Curve.of([44, 42, 40, 38, 36], [0.26, 0.38, 0.53, 0.73, 1.0], [0.66, 0.77, 0.83, 0.88, 0.91])


def test_a_curve_dipping_within_the_tolerance_at_its_top_gets_a_figure_and_a_reason():
    test = Curve.of([44, 42, 40, 38, 36, 34], [0.1, 0.15, 0.22, 0.32, 0.46, 0.66],
                    [0.70, 0.80, 0.86, 0.90, 0.9756, 0.9748])
    strict = bd_rate(ANCHOR, test)
    assert math.isnan(strict.value) and "decreases" in strict.reason
    result = bd_rate(ANCHOR, test, saturation_tolerance=0.005)
    assert result.valid and result.value < 0
    assert "saturated above QP 36" in result.reason and "QP 34" in result.reason
    assert bd_accuracy(ANCHOR, test, saturation_tolerance=0.005).valid


def test_a_real_dip_still_gives_nan():
    deep = Curve.of([44, 42, 40, 38, 36], [0.1, 0.15, 0.22, 0.32, 0.46], [0.70, 0.80, 0.86, 0.90, 0.85])
    assert math.isnan(bd_rate(ANCHOR, deep, saturation_tolerance=0.005).value)
    middle = Curve.of([44, 42, 40, 38, 36], [0.1, 0.15, 0.22, 0.32, 0.46], [0.70, 0.80, 0.79, 0.90, 0.92])
    assert math.isnan(bd_rate(ANCHOR, middle, saturation_tolerance=0.05).value)
    trimmed, note = saturated_part(middle, 0.05)
    assert trimmed == middle and note == ""


def test_fit_channel_basis_tool_fits_on_tune_pictures_only(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import fit_channel_basis

    out = tmp_path / "b.npz"
    assert fit_channel_basis.main([f"paths.data_root={tmp_path}/data", "dataset.size=2", "--images", "2",
                                   "--out", str(out)]) == 0
    bases, info = load_bases(out)
    assert sorted(bases) == ["c2", "c3", "c4", "c5"] and info["pictures"] == 2
    assert sorted(p.name for p in (tmp_path / "data" / "synthetic").glob("*/*")) == ["tune-2"]
    with pytest.raises(SystemExit):
        fit_channel_basis.main([f"paths.data_root={tmp_path}/data", "dataset.split=val", "--images", "1",
                                "--out", str(tmp_path / "v.npz")])
