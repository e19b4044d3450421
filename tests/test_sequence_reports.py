"""Rate in kbps, per-sequence summaries and BD-rate per sequence and per class (vcm_eval.evaluation.sequences)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vcm_eval.evaluation.sequences import bd_by_sequence, kilobits_per_second, summarize_sequences


def test_kbps_is_bits_per_second_of_the_sequence_played_at_its_frame_rate():
    assert kilobits_per_second(64_000, 64, 32.0) == pytest.approx(32.0)  # 1000 bits a frame, 32 frames a second
    with pytest.raises(ValueError, match="frames and a frame rate"):
        kilobits_per_second(1, 0, 30.0)


def rows_for(sequences: dict[str, str], entries: dict[str, float]) -> pd.DataFrame:
    """Per (sequence, entry, QP) rows: an entry with scale s spends s times the anchor's bits at each QP."""
    rows = []
    for sequence, seq_class in sequences.items():
        rows.append({"entry": "uncompressed", "role": "reference", "sequence": sequence, "seq_class": seq_class,
                     "qp": None, "num_bits": None, "num_frames": 10, "frame_rate": 25.0, "width": 64, "height": 48})
        for entry, scale in entries.items():
            for qp in (30, 34, 38, 42):
                rows.append({"entry": entry, "role": "anchor" if entry == "anchor" else "proposal",
                             "sequence": sequence, "seq_class": seq_class, "qp": qp,
                             "num_bits": scale * 2.0 ** ((50 - qp) / 3.0) * 1000, "num_frames": 10,
                             "frame_rate": 25.0, "width": 64, "height": 48, "encode_s": 0.5})
    return pd.DataFrame(rows)


def accuracy(entry: str, qp: int | None, sequence: str) -> dict[str, float]:
    return {"map_50": 0.9 if qp is None else 0.9 - 0.01 * (qp - 30)}  # the same accuracy at each QP


def test_summary_gives_kbps_and_bpp_of_every_sequence():
    summary = summarize_sequences(rows_for({"s1": "A"}, {"anchor": 1.0}), accuracy)
    coded = summary[summary["qp"] == 30].iloc[0]
    assert coded["kbps"] == pytest.approx(coded["num_bits"] * 25.0 / 10 / 1000)
    assert coded["avg_bpp"] == pytest.approx(coded["num_bits"] / (10 * 64 * 48))
    assert math.isnan(summary[summary["entry"] == "uncompressed"]["kbps"].iloc[0])
    assert summary["encode_s"].fillna(0).sum() == pytest.approx(4 * 0.5)


def test_bd_rate_per_sequence_and_the_class_mean():
    rows = rows_for({"s1": "A", "s2": "A", "s3": "B"}, {"anchor": 1.0, "half": 0.5})
    summary = summarize_sequences(rows, accuracy)
    bd = bd_by_sequence(summary, ["anchor"], ["anchor", "half"], "map_50", min_points=4)
    per_sequence = bd[bd["scope"] == "sequence"]
    assert set(per_sequence["sequence"]) == {"s1", "s2", "s3"}
    # half the bits at the same accuracy everywhere: -50 %
    np.testing.assert_allclose(per_sequence["bd_rate_pchip"], -50.0, atol=1e-6)
    classes = bd[bd["scope"] == "class"].set_index("seq_class")
    assert classes.loc["A", "bd_rate_pchip"] == pytest.approx(-50.0) and classes.loc["A", "sequences"] == "2 of 2"
    assert classes.loc["B", "sequences"] == "1 of 1"


def test_a_class_mean_over_fewer_sequences_says_so():
    rows = rows_for({"s1": "A", "s2": "A"}, {"anchor": 1.0, "half": 0.5})
    rows = rows[~((rows["sequence"] == "s2") & (rows["entry"] == "half") & (rows["qp"] > 34))]  # 2 points: no BD
    bd = bd_by_sequence(summarize_sequences(rows, accuracy), ["anchor"], ["anchor", "half"], "map_50", min_points=4)
    row = bd[bd["scope"] == "class"].iloc[0]
    assert row["sequences"] == "1 of 2" and row["bd_rate_pchip"] == pytest.approx(-50.0) and "s2" in row["reason"]
