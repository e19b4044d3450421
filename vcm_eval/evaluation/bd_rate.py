"""BD-rate and BD-mAP between two rate–accuracy curves, with the checks that make them meaningful.

The numbers come from the ``bjontegaard`` package (FAU-LMS): ``method="pchip"`` is the piecewise
cubic Hermite interpolation of the JVET/VCM CTC spreadsheets; ``"cubic"`` is the classic
Bjontegaard cubic-polynomial fit (VCEG-M33). BD-rate interpolates log10(rate) over accuracy and
averages the difference over the accuracy range both curves cover::

    BD-rate = (10 ** mean_{m in overlap}(log10 R_test(m) - log10 R_anchor(m)) - 1) * 100 %

BD-mAP interpolates accuracy over log10(rate) and averages the difference over the common rate range.

A fit on an ill-posed curve is never reported: before computing, each curve must have at least
``min_points`` points, rate strictly increasing as QP decreases, and accuracy increasing with rate
(strictly for BD-rate, whose interpolation runs over accuracy); the curves must overlap on the
integration axis by at least ``min_overlap`` of their joint range. Otherwise the value is NaN and
``reason`` says why.

**Saturated curves.** At its highest rates a curve may stop gaining accuracy and, by the metric's noise, lose
a little (mAP 0.9756 at QP 38, 0.9748 at QP 35). When every point above the curve's most accurate one lies
within ``saturation_tolerance`` of it, those points are dropped and the figure is computed on the monotone
part (:func:`saturated_part`), provided ``min_points`` remain; the ``reason`` column says which points were
dropped, so this never happens silently. A larger dip, or one before the peak, is a real non-monotonic
curve and still gives NaN with its reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import bjontegaard
import numpy as np


@dataclass(frozen=True)
class Curve:
    """Rate–accuracy points of one entry: QPs, rates (bpp) and accuracies (mAP, a fraction)."""

    qps: tuple[int, ...]
    rates: tuple[float, ...]
    accuracies: tuple[float, ...]

    @classmethod
    def of(cls, qps: Sequence[int], rates: Sequence[float], accuracies: Sequence[float]) -> Curve:
        if not len(qps) == len(rates) == len(accuracies):
            raise ValueError("a curve needs as many QPs, rates and accuracies")
        order = np.argsort(np.asarray(qps))[::-1]  # descending QP = ascending rate, if the codec behaves
        return cls(tuple(int(qps[i]) for i in order), tuple(float(rates[i]) for i in order),
                   tuple(float(accuracies[i]) for i in order))


@dataclass(frozen=True)
class BDResult:
    """One BD comparison: value (percent for BD-rate, mAP points x 100 for BD-mAP) or NaN with a reason."""

    value: float
    reason: str = ""
    overlap: float = math.nan

    @property
    def valid(self) -> bool:
        return not math.isnan(self.value)


def curve_problems(curve: Curve, *, min_points: int = 4, strict_accuracy: bool) -> list[str]:
    """Why a curve cannot be fitted; empty when it can."""
    problems = []
    if len(curve.qps) < min_points:
        problems.append(f"{len(curve.qps)} points, need {min_points}")
        return problems
    rates, accs = np.asarray(curve.rates), np.asarray(curve.accuracies)
    if not np.all(np.isfinite(rates)) or not np.all(np.isfinite(accs)) or np.any(rates <= 0):
        problems.append("non-finite or non-positive values")
        return problems
    for i in range(1, len(rates)):
        if rates[i] <= rates[i - 1]:
            problems.append(f"rate does not increase from QP {curve.qps[i - 1]} ({rates[i - 1]:.4g}) "
                            f"to QP {curve.qps[i]} ({rates[i]:.4g})")
        if accs[i] < accs[i - 1] or (strict_accuracy and accs[i] == accs[i - 1]):
            word = "decreases" if accs[i] < accs[i - 1] else "is flat"
            problems.append(f"accuracy {word} from QP {curve.qps[i - 1]} ({accs[i - 1]:.4f}) "
                            f"to QP {curve.qps[i]} ({accs[i]:.4f})")
    return problems


def saturated_part(curve: Curve, tolerance: float) -> tuple[Curve, str]:
    """The curve up to its most accurate point when every higher-rate point is within ``tolerance`` of it.

    With accuracies ``a_0..a_n`` in increasing rate and ``p`` the first index of their maximum: if
    ``a_p - a_j <= tolerance`` for every ``j > p``, returns points ``0..p`` and a note naming the dropped QPs;
    otherwise (or with nothing above ``p``) the curve unchanged and an empty note.
    """
    accs = np.asarray(curve.accuracies)
    if len(accs) == 0 or tolerance <= 0:
        return curve, ""
    peak = int(np.argmax(accs))
    if peak == len(accs) - 1 or float(np.max(accs[peak] - accs[peak + 1:])) > tolerance:
        return curve, ""
    dropped = ", ".join(f"QP {q} ({a:.4f})" for q, a in zip(curve.qps[peak + 1:], curve.accuracies[peak + 1:]))
    note = (f"saturated above QP {curve.qps[peak]} ({accs[peak]:.4f}): {dropped} within {tolerance:g} of it, "
            f"left out")
    return Curve(curve.qps[: peak + 1], curve.rates[: peak + 1], curve.accuracies[: peak + 1]), note


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    joint = max(a.max(), b.max()) - min(a.min(), b.min())
    if joint <= 0:
        return 0.0
    return float(max(0.0, min(a.max(), b.max()) - max(a.min(), b.min())) / joint)


def _compare(anchor: Curve, test: Curve, *, kind: str, method: str, min_points: int,
             min_overlap: float, saturation_tolerance: float = 0.0) -> BDResult:
    strict = kind == "rate"
    reasons, notes = [], []
    curves = {}
    for label, curve in (("anchor", anchor), ("test", test)):
        if curve_problems(curve, min_points=min_points, strict_accuracy=strict):
            trimmed, note = saturated_part(curve, saturation_tolerance)
            if note and len(trimmed.qps) >= min_points:
                curve = trimmed
                notes.append(f"{label}: {note}")
        curves[label] = curve
        problems = curve_problems(curve, min_points=min_points, strict_accuracy=strict)
        if problems:
            reasons.append(f"{label}: " + "; ".join(problems))
    if reasons:
        return BDResult(math.nan, " | ".join(reasons))
    anchor, test = curves["anchor"], curves["test"]
    if kind == "rate":
        overlap = _overlap(np.asarray(anchor.accuracies), np.asarray(test.accuracies))
        axis = "mAP"
    else:
        overlap = _overlap(np.log10(anchor.rates), np.log10(test.rates))
        axis = "log-rate"
    if overlap <= 0 or overlap < min_overlap:
        return BDResult(math.nan, " | ".join([*notes, f"curves overlap on {overlap:.0%} of the joint {axis} "
                                                      f"range (need {min_overlap:.0%})"]), overlap)
    fn = bjontegaard.bd_rate if kind == "rate" else bjontegaard.bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap is checked above, with our own threshold
        value = fn(list(anchor.rates), list(anchor.accuracies), list(test.rates), list(test.accuracies),
                   method=method, require_matching_points=False, min_overlap=0.0)
    value = float(value) if kind == "rate" else float(value) * 100.0
    if not math.isfinite(value):
        return BDResult(math.nan, " | ".join([*notes, f"{method} fit gave {value}"]), overlap)
    return BDResult(value, " | ".join(notes), overlap)


def bd_rate(anchor: Curve, test: Curve, *, method: str = "pchip", min_points: int = 4,
            min_overlap: float = 0.1, saturation_tolerance: float = 0.0) -> BDResult:
    """BD-rate of ``test`` against ``anchor`` in percent (negative = fewer bits for the same mAP)."""
    return _compare(anchor, test, kind="rate", method=method, min_points=min_points, min_overlap=min_overlap,
                    saturation_tolerance=saturation_tolerance)


def bd_accuracy(anchor: Curve, test: Curve, *, method: str = "pchip", min_points: int = 4,
                min_overlap: float = 0.1, saturation_tolerance: float = 0.0) -> BDResult:
    """BD-mAP of ``test`` against ``anchor`` in mAP percentage points (positive = more accurate at equal rate)."""
    return _compare(anchor, test, kind="accuracy", method=method, min_points=min_points, min_overlap=min_overlap,
                    saturation_tolerance=saturation_tolerance)
