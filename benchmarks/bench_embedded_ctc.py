#!/usr/bin/env python
"""Benchmark: the embedded CTC against the real CTC's proportions, for the natural and the old shapes set.

For each CTC (default: ``embedded`` and ``embedded_shapes``) it runs the main job (C-layer anchor, image
anchor and the paper's compensation at every QP, x265 unless overridden) and reports what decides whether
the test bed behaves like the real CTC: the C-layer anchor's BD-rate against the image anchor (the real
CTC: about +200 %), the compensation's BD-rate against both anchors, the uncompressed mAP, and the bits per
level at every QP::

    python benchmarks/bench_embedded_ctc.py                       # both CTCs, 100 pictures each
    python benchmarks/bench_embedded_ctc.py --ctcs embedded ctc.num_images=20

Runs share the store under ``--root`` (default ``outputs/bench_embedded``), so a repeated run only reports.
Wall times are of the run as it happened (an empty store computes everything).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.evaluation.summary import format_bd

LEVELS = ("c2", "c3", "c4", "c5")


def one(ctc: str, overrides: list[str], root: Path) -> dict:
    cfg = vcm_eval.compose(*[
        f"ctc={ctc}", "proposal=compensation", "tracking=none", "progress=false",
        f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={root}/data", *overrides])
    start = time.perf_counter()
    outcome = run(cfg, root / "runs" / ctc)
    return {"ctc": ctc, "wall_s": time.perf_counter() - start, "summary": outcome.summary, "bd": outcome.bd}


def bd_value(bd: pd.DataFrame, test: str, anchor: str, column: str = "bd_rate_pchip") -> float:
    row = bd[(bd["test"] == test) & (bd["anchor"] == anchor)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def report(result: dict) -> str:
    summary, bd = result["summary"], result["bd"]
    ref = summary[summary["entry"] == "uncompressed"].iloc[0]
    lines = [f"### ctc={result['ctc']} ({int(ref['num_images'])} pictures, wall {result['wall_s']:.0f} s)", "",
             f"uncompressed mAP@0.5 {ref['map_50']:.4f}, mAP@[.5:.95] {ref['map_50_95']:.4f}", "",
             "| comparison | BD-rate (pchip) | BD-mAP@0.5 (pchip) |", "|---|---|---|"]
    for test, anchor in (("c_layer", "image"), ("compensation", "c_layer"), ("compensation", "image"),
                         ("image", "c_layer")):
        lines.append(f"| {test} vs {anchor} | {format_bd(bd_value(bd, test, anchor), ' %')} | "
                     f"{format_bd(bd_value(bd, test, anchor, 'bd_map_pchip'), ' pt')} |")
    lines += ["", "| entry | QP | bpp | mAP@0.5 | " + " | ".join(f"kbit {lv}" for lv in LEVELS) + " |",
              "|---|---|---|---|" + "---|" * len(LEVELS)]
    coded = summary[summary["qp"].notna()].sort_values(["entry", "qp"])
    for r in coded.itertuples():
        bits = " | ".join(f"{getattr(r, f'bits_{lv}', float('nan')) / 1000:.1f}" for lv in LEVELS)
        lines.append(f"| {r.entry} | {int(r.qp)} | {r.avg_bpp:.4f} | {r.map_50 * 100:.2f} | {bits} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (e.g. ctc.num_images=20)")
    parser.add_argument("--ctcs", nargs="*", default=["embedded", "embedded_shapes"])
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_embedded"))
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_intermixed_args(argv)
    sections = [report(one(ctc, args.overrides, args.root)) for ctc in args.ctcs]
    text = "\n\n".join(sections)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
