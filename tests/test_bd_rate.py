"""BD-rate / BD-mAP: known values, and NaN with a reason for ill-posed curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vcm_eval.evaluation.bd_rate import Curve, bd_accuracy, bd_rate

QPS = [41, 43, 45, 47, 49]
# Table 1 of the paper (rounded values as printed).
ANCHOR = Curve.of(QPS, [0.81, 0.42, 0.24, 0.14, 0.09], [0.77, 0.74, 0.69, 0.60, 0.52])
PROPOSED = Curve.of(QPS, [1.19, 0.70, 0.42, 0.26, 0.16], [0.82, 0.78, 0.76, 0.73, 0.68])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_curve_against_itself_is_zero(method):
    assert bd_rate(ANCHOR, ANCHOR, method=method).value == pytest.approx(0.0, abs=1e-9)
    assert bd_accuracy(ANCHOR, ANCHOR, method=method).value == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("factor,expected", [(0.5, -50.0), (2.0, 100.0), (0.8, -20.0)])
def test_scaled_rate_gives_the_scale(factor, expected):
    test = Curve.of(ANCHOR.qps, [r * factor for r in ANCHOR.rates], list(ANCHOR.accuracies))
    assert bd_rate(ANCHOR, test, method="pchip").value == pytest.approx(expected, abs=1e-6)


def test_paper_table_1_pchip():
    # DESIGN.md: from the rounded Table 1 values, pchip BD-rate is about -29.6 %.
    result = bd_rate(ANCHOR, PROPOSED, method="pchip")
    assert result.valid and result.value == pytest.approx(-29.6, abs=0.05)
    assert result.overlap == pytest.approx((0.77 - 0.68) / (0.82 - 0.52))


def test_constant_accuracy_shift_gives_bd_map():
    test = Curve.of(ANCHOR.qps, list(ANCHOR.rates), [a + 0.02 for a in ANCHOR.accuracies])
    assert bd_accuracy(ANCHOR, test).value == pytest.approx(2.0, abs=1e-9)


def test_order_of_points_does_not_matter():
    shuffled = Curve.of([45, 41, 49, 43, 47], [0.24, 0.81, 0.09, 0.42, 0.14], [0.69, 0.77, 0.52, 0.74, 0.60])
    assert shuffled == ANCHOR


def test_non_monotonic_curve_is_nan_with_reason():
    bumpy = Curve.of(QPS, [0.81, 0.42, 0.24, 0.14, 0.09], [0.77, 0.70, 0.72, 0.60, 0.52])
    result = bd_rate(ANCHOR, bumpy)
    assert math.isnan(result.value) and "accuracy decreases from QP 45" in result.reason
    assert math.isnan(bd_accuracy(ANCHOR, bumpy).value)


def test_rate_not_increasing_is_nan_with_reason():
    odd = Curve.of(QPS, [0.81, 0.42, 0.50, 0.14, 0.09], [0.77, 0.74, 0.69, 0.60, 0.52])
    result = bd_rate(ANCHOR, odd)
    assert math.isnan(result.value) and "rate does not increase" in result.reason


def test_non_overlapping_curves_are_nan_with_reason():
    far = Curve.of(ANCHOR.qps, list(ANCHOR.rates), [a + 0.5 for a in ANCHOR.accuracies])
    result = bd_rate(ANCHOR, far)
    assert math.isnan(result.value) and "overlap" in result.reason and result.overlap == 0.0


def test_too_few_points_is_nan_with_reason():
    short = Curve.of(QPS[:3], list(ANCHOR.rates[:3]), list(ANCHOR.accuracies[:3]))
    result = bd_rate(ANCHOR, short)
    assert math.isnan(result.value) and "3 points, need 4" in result.reason


def test_flat_accuracy_blocks_bd_rate_but_not_bd_map():
    flat = Curve.of(QPS, [0.81, 0.42, 0.24, 0.14, 0.09], [0.77, 0.74, 0.74, 0.60, 0.52])
    assert "flat" in bd_rate(ANCHOR, flat).reason
    assert bd_accuracy(ANCHOR, flat).valid


def test_bd_table_compares_every_entry_with_every_anchor():
    from vcm_eval.evaluation.summary import bd_table

    rows = []
    for entry, curve in (("a", ANCHOR), ("b", PROPOSED), ("img", Curve.of(ANCHOR.qps, [r / 3 for r in ANCHOR.rates],
                                                                          list(ANCHOR.accuracies)))):
        for qp, rate, acc in zip(curve.qps, curve.rates, curve.accuracies):
            rows.append({"entry": entry, "qp": qp, "avg_bpp": rate, "map_50": acc})
    table = bd_table(pd.DataFrame(rows), ["a", "img"], ["a", "b", "img"], "map_50")
    assert list(zip(table["anchor"], table["test"])) == [("a", "b"), ("a", "img"), ("img", "a"), ("img", "b")]
    assert table.loc[1, "bd_rate_pchip"] == pytest.approx(100 * (1 / 3 - 1))
    assert table.loc[2, "bd_rate_pchip"] == pytest.approx(200.0)
    assert np.isfinite(table["bd_rate_cubic"]).all() and (table["reason"] == "").all()
