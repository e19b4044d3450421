"""tools/calibrate_qps.py: the proposed QPs span near-uncompressed to about two thirds of the mAP."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

TOOL = Path(__file__).resolve().parents[1] / "tools" / "calibrate_qps.py"
spec = importlib.util.spec_from_file_location("calibrate_qps", TOOL)
calibrate_qps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibrate_qps)


def test_grid():
    assert calibrate_qps.qp_grid("22:31:3") == [22, 25, 28]
    assert calibrate_qps.qp_grid("30,35") == [30, 35]


def test_proposal_spans_the_relative_range():
    curve = pd.Series({22: 0.80, 26: 0.795, 30: 0.78, 34: 0.74, 38: 0.66, 42: 0.55, 46: 0.40})
    # relative to 0.80: 1.0, 0.994, 0.975, 0.925, 0.825, 0.6875, 0.5
    assert calibrate_qps.propose(curve, 0.80, top=0.98, bottom=0.65, count=5) == [30, 33, 36, 39, 42]
    assert calibrate_qps.propose(curve, 0.80, top=0.98, bottom=0.65, count=3) == [30, 36, 42]
    # a grid that never leaves the near-uncompressed range proposes nothing
    assert calibrate_qps.propose(curve[curve > 0.79], 0.80, top=0.98, bottom=0.65, count=5) == []
