#!/usr/bin/env python
"""Benchmark: the learned entry (proposals/learned_fusion/) against both anchors on the embedded CTC.

Runs the main job (C-layer anchor, image anchor, ``proposal=learned_fusion``; 100 pictures, x265 for the
anchors) and reports the BD-rate and BD-mAP@0.5 (pchip) of the learned entry against each anchor, the R-P
points of every entry, the learned entry's encode/decode time per picture (the network's coding path on one
thread: analysis, hyperprior, range coding / decoding, synthesis) and its model size::

    python benchmarks/bench_learned.py                          # ctc=embedded, 100 pictures
    python benchmarks/bench_learned.py ctc.num_images=20 --out /tmp/learned.md

The store is ``paths.store`` of ``--store`` (default ``outputs/store``, the main job's), so anchor results of
earlier runs are reused; the R-P plot of all entries is the run's ``rd_curve.png`` (copied to ``--plot``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

import vcm_eval
from proposals.learned_fusion import checkpoint_path, count_parameters, load_checkpoint
from vcm_eval.cli import run
from vcm_eval.evaluation.summary import format_bd

ENTRY = "learned_fusion"


def bd_value(bd: pd.DataFrame, test: str, anchor: str, column: str = "bd_rate_pchip") -> float:
    row = bd[(bd["test"] == test) & (bd["anchor"] == anchor)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def bd_reason(bd: pd.DataFrame, test: str, anchor: str) -> str:
    row = bd[(bd["test"] == test) & (bd["anchor"] == anchor)]
    if not len(row) or "reason" not in row or pd.isna(row["reason"].iloc[0]):
        return ""
    return str(row["reason"].iloc[0])


def model_size(rate_points: list[int], weights_dir: str | None) -> str:
    sizes, params = [], None
    for i in rate_points:
        path = checkpoint_path(weights_dir, i)
        net, _ = load_checkpoint(path)
        params = count_parameters(net)
        sizes.append(path.stat().st_size / 1e6)
    return f"{params} parameters, {min(sizes):.2f}-{max(sizes):.2f} MB per checkpoint (CDF tables included)"


def report(outcome, wall_s: float, rate_points: list[int], weights_dir: str | None) -> str:
    summary, bd, per_image = outcome.summary, outcome.bd, outcome.per_image
    ref = summary[summary["entry"] == "uncompressed"].iloc[0]
    lines = [f"### ctc=embedded ({int(ref['num_images'])} pictures, wall {wall_s:.0f} s)", "",
             f"uncompressed mAP@0.5 {ref['map_50']:.4f}, mAP@[.5:.95] {ref['map_50_95']:.4f}", "",
             "| comparison | BD-rate (pchip) | BD-mAP@0.5 (pchip) | note |", "|---|---|---|---|"]
    for test, anchor in ((ENTRY, "image"), (ENTRY, "c_layer"), ("c_layer", "image")):
        lines.append(f"| {test} vs {anchor} | {format_bd(bd_value(bd, test, anchor), ' %')} | "
                     f"{format_bd(bd_value(bd, test, anchor, 'bd_map_pchip'), ' pt')} | "
                     f"{bd_reason(bd, test, anchor)} |")
    lines += ["", "| entry | rate point / QP | bpp | mAP@0.5 | mAP@[.5:.95] |", "|---|---|---|---|---|"]
    coded = summary[summary["qp"].notna()].sort_values(["entry", "qp"])
    for r in coded.itertuples():
        lines.append(f"| {r.entry} | {int(r.qp)} | {r.avg_bpp:.4f} | {r.map_50 * 100:.2f} | {r.map_50_95 * 100:.2f} |")
    learned = per_image[per_image["entry"] == ENTRY]
    fresh = learned[learned["encode_s"] > 0]
    enc = f"{fresh['encode_s'].mean() * 1000:.0f} ms" if len(fresh) else "n/a (all from the store)"
    dec = learned["decode_s"].mean() * 1000
    nn1, nn2 = learned["nn_part_1_s"].mean() * 1000, learned["nn_part_2_s"].mean() * 1000
    lines += ["", f"learned_fusion per picture: encode {enc}, decode {dec:.0f} ms (coding path on one thread; the "
                  f"model's halves not included: nn_part_1 {nn1:.0f} ms, nn_part_2 {nn2:.0f} ms)",
              f"model size: {model_size(rate_points, weights_dir)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. ctc.num_images=20)")
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_learned"), help="run folder")
    parser.add_argument("--store", type=Path, default=Path("outputs/store"))
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--plot", type=Path, help="copy the R-P plot of all entries here")
    args = parser.parse_intermixed_args(argv)
    cfg = vcm_eval.compose(*[
        "ctc=embedded", f"proposal={ENTRY}", "tracking=none", "progress=false", f"paths.store={args.store}",
        *args.overrides])
    start = time.perf_counter()
    outcome = run(cfg, args.root / "run")
    wall = time.perf_counter() - start
    rate_points = list(cfg.proposal[ENTRY].rate_points)
    text = report(outcome, wall, rate_points, cfg.proposal[ENTRY].weights_dir)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.plot:
        shutil.copyfile(args.root / "run" / "rd_curve.png", args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
