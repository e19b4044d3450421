"""tools/feature_rank.py: the effective rank of a level is what its construction allows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

TOOL = Path(__file__).resolve().parents[1] / "tools" / "feature_rank.py"
spec = importlib.util.spec_from_file_location("feature_rank", TOOL)
feature_rank = importlib.util.module_from_spec(spec)
spec.loader.exec_module(feature_rank)


def test_effective_rank_counts_components_up_to_the_energy():
    lam = np.array([50.0, 30.0, 15.0, 4.0, 0.9, 0.1])  # sum 100
    assert feature_rank.effective_rank(lam, 0.95) == 3
    assert feature_rank.effective_rank(lam, 0.99) == 4
    assert feature_rank.effective_rank(lam, 0.999) == 5
    assert feature_rank.effective_rank(lam[::-1], 0.99) == 4  # order does not matter
    assert feature_rank.effective_rank(np.zeros(3), 0.99) == 0


def test_a_1x1_convolution_from_fewer_channels_has_their_rank():
    rng = np.random.default_rng(0)
    stats = feature_rank.LevelStatistics(16)
    weight, bias = rng.normal(size=(16, 5)), rng.normal(size=(16, 1, 1))
    for _ in range(3):
        inputs = rng.normal(size=(5, 12, 9))
        stats.add(np.einsum("oc,chw->ohw", weight, inputs) + bias)  # (16, 12, 9) of rank 5, shifted
    lam = stats.eigenvalues()
    assert feature_rank.effective_rank(lam, 0.999999) == 5
    full = feature_rank.LevelStatistics(16)
    full.add(rng.normal(size=(16, 40, 40)))
    assert feature_rank.effective_rank(full.eigenvalues(), 0.99) >= 15
