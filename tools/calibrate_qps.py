#!/usr/bin/env python
"""Choose a CTC's QPs: sweep each anchor over a wide QP grid and pick the ones that span the paper's range.

The paper's feature QPs take X101-FPN from near its uncompressed mAP down to about two thirds of it (77 % to
52 % mAP@0.5 on OpenImages). This tool runs the anchors of a CTC over a grid of QPs on its first pictures
(one ``python -m vcm_eval`` sweep, so everything lands in the store and a later run reuses it), prints mAP
against QP relative to the uncompressed mAP, and proposes, per anchor, ``--count`` QPs evenly spaced from
the lowest QP whose relative mAP is at most ``--top`` (near uncompressed) to the highest QP whose relative
mAP is still at least ``--bottom`` (about two thirds)::

    python tools/calibrate_qps.py ctc.num_images=50                      # the embedded CTC
    python tools/calibrate_qps.py ctc=embedded_shapes ctc.num_images=50 --features 30:51:3

Write the chosen QPs, with the table, into the CTC's YAML (``conf/ctc/*.yaml``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import vcm_eval
from vcm_eval.cli import run


def qp_grid(text: str) -> list[int]:
    """``"22:48:2"`` -> [22, 24, ..., 46] (start:stop:step, stop excluded) or ``"30,35,40"``."""
    if ":" in text:
        start, stop, step = (int(v) for v in text.split(":"))
        return list(range(start, stop, step))
    return [int(v) for v in text.split(",")]


def propose(curve: pd.Series, reference: float, *, top: float, bottom: float, count: int) -> list[int]:
    """``count`` QPs evenly spaced between the first QP at or below ``top`` x reference and the last QP at or
    above ``bottom`` x reference (``curve``: mAP indexed by QP, any order). Empty when the grid misses either.
    """
    rel = curve.sort_index() / reference
    high_quality = rel.index[rel <= top]
    low_quality = rel.index[rel >= bottom]
    if not len(high_quality) or not len(low_quality):
        return []
    first, last = int(high_quality.min()), int(low_quality.max())
    if last <= first:
        return []
    return sorted({int(round(q)) for q in np.linspace(first, last, count)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (ctc=..., ctc.num_images=50, ...)")
    parser.add_argument("--features", default="22:52:3", help="feature QP grid (start:stop:step or a,b,c)")
    parser.add_argument("--image", default="22:52:3", help="image anchor QP grid")
    parser.add_argument("--top", type=float, default=0.98, help="relative mAP of the highest-quality QP")
    parser.add_argument("--bottom", type=float, default=0.65, help="relative mAP of the lowest-quality QP")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    args = parser.parse_intermixed_args(argv)  # Hydra overrides may come before or after the options

    features, image = qp_grid(args.features), qp_grid(args.image)
    overrides = ["anchor=[c_layer,image]", "proposal=none", "tracking=none", "bd.min_points=2",
                 f"ctc.qps.features=[{','.join(map(str, features))}]",
                 f"ctc.qps.image=[{','.join(map(str, image))}]", *args.overrides]
    cfg = vcm_eval.compose(*overrides)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run(cfg, args.out or Path(tmp) / "run")
    summary = outcome.summary
    metric = "map_50" if "map_50" in summary else [c for c in summary if c.startswith("map")][0]
    reference = float(summary.loc[summary["entry"] == "uncompressed", metric].iloc[0])
    print(f"\nuncompressed {metric}: {reference:.4f} on {cfg.ctc.num_images} pictures")
    for entry in ("c_layer", "image"):
        rows = summary[summary["entry"] == entry].sort_values("qp")
        curve = rows.set_index("qp")[metric]
        print(f"\n{entry}: QP, bpp, {metric}, relative")
        for r in rows.itertuples():
            print(f"  {int(r.qp):3d} {r.avg_bpp:9.4f} {getattr(r, metric):.4f} {getattr(r, metric) / reference:6.3f}")
        chosen = propose(curve, reference, top=args.top, bottom=args.bottom, count=args.count)
        print(f"  proposed QPs: {chosen or 'none (widen the grid)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
