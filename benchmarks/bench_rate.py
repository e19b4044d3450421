#!/usr/bin/env python
"""Benchmark: the training-free feature entries side by side on a CTC, in one run, against both anchors.

Entries (all coded with the CTC's codec at the rate points shown):

- the C-layer anchor and the image anchor (the references), the paper's compensation, and its variants
  (C2 compensated too, C2 with half the error, ranges kept to the original map's);
- each method of the searched entry alone (``--searched``, a YAML written by ``tools/search_allocation.py``):
  its QP offsets, its channel transform, its quantiser range, its downsampling — each with the searched
  entry's rate points;
- the searched entry itself (the best combination), and the compensation on top of it.

It prints (and writes with ``--out``) BD-rate and BD-mAP against both anchors, encode and decode time per
picture, the rate-accuracy table and the bits per level of the best entry against the anchor (a plot with
``--plot``)::

    python benchmarks/bench_rate.py --searched conf/proposal/klt_search.yaml --out docs/rate_bench.md
    python benchmarks/bench_rate.py --searched conf/proposal/klt_search.yaml codec=vvenc ctc.num_images=50 \
        --entries compensation best

Runs share the store under ``--root`` (default ``outputs/bench_embedded``, which the CTC benchmark fills),
so anchors and entries measured before are not coded again.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.evaluation.summary import format_bd

LEVELS = ("c2", "c3", "c4", "c5")
METHOD_KEYS = ("qp_offsets", "transform", "quantizer", "downsample")


def entries(searched: dict, base: dict, compensation: dict) -> dict[str, dict]:
    """Every entry of the comparison by name, as YAML bodies."""
    out = {"compensation": compensation,
           "comp_c2": {**compensation, "compensated_levels": ["c4", "c3", "c2"]},
           "comp_c2_half": {**compensation, "compensated_levels": ["c4", "c3", "c2"], "error_scale": {"c2": 0.5}},
           "comp_keep_range": {**compensation, "keep_range": True}}
    if searched:
        qps = searched["rate_points"]
        for key in METHOD_KEYS:
            if searched.get(key):
                out[f"only_{key}"] = {**base, key: copy.deepcopy(searched[key]), "rate_points": qps}
        out["best"] = {**base, **{k: copy.deepcopy(searched.get(k)) for k in METHOD_KEYS}, "rate_points": qps}
        out["best_compensated"] = {**compensation, **{k: copy.deepcopy(searched.get(k)) for k in METHOD_KEYS},
                                   "rate_points": qps}
    for name, body in out.items():
        body["name"] = name
    return out


def bd_value(bd: pd.DataFrame, test: str, anchor: str, column: str) -> float:
    row = bd[(bd["test"] == test) & (bd["anchor"] == anchor)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def timing(per_image: pd.DataFrame, entry: str) -> tuple[float, float]:
    """Mean encode and decode seconds per picture and rate point, over the rows coded in this run."""
    rows = per_image[per_image["entry"] == entry]
    fresh = rows[~rows["from_cache"].astype(bool)] if "from_cache" in rows else rows
    enc = float(fresh["encode_s"].mean()) if len(fresh) else float("nan")
    dec = float(rows["decode_s"].mean()) if "decode_s" in rows and len(rows) else float("nan")
    return enc, dec


def report(summary: pd.DataFrame, bd: pd.DataFrame, per_image: pd.DataFrame, names: list[str], wall_s: float) -> str:
    ref = summary[summary["entry"] == "uncompressed"].iloc[0]
    lines = [f"{int(ref['num_images'])} pictures, uncompressed mAP@0.5 {ref['map_50']:.4f}, wall {wall_s:.0f} s", "",
             "| entry | BD-rate vs C-layer | BD-mAP vs C-layer | BD-rate vs image | BD-mAP vs image | "
             "encode ms | decode ms | notes |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        if name == "c_layer":
            continue
        cells = [format_bd(bd_value(bd, name, a, c), u) for a in ("c_layer", "image")
                 for c, u in (("bd_rate_pchip", " %"), ("bd_map_pchip", " pt"))]
        enc, dec = timing(per_image, name)
        notes = "; ".join(str(r) for r in bd[(bd["test"] == name)]["reason"] if isinstance(r, str) and r)
        lines.append(f"| {name} | {' | '.join(cells)} | {enc * 1000:.0f} | {dec * 1000:.0f} | {notes} |")
    lines += ["", "| entry | QP | bpp | mAP@0.5 | " + " | ".join(f"kbit {lv}" for lv in LEVELS) + " |",
              "|---|---|---|---|" + "---|" * len(LEVELS)]
    coded = summary[summary["qp"].notna()]
    for name in names:
        for r in coded[coded["entry"] == name].sort_values("qp").itertuples():
            bits = " | ".join(f"{getattr(r, f'bits_{lv}', float('nan')) / 1000:.1f}" for lv in LEVELS)
            lines.append(f"| {name} | {int(r.qp)} | {r.avg_bpp:.4f} | {r.map_50 * 100:.2f} | {bits} |")
    return "\n".join(lines)


def level_plot(summary: pd.DataFrame, path: Path, entries_: tuple[str, str] = ("c_layer", "best")) -> Path:
    """Bits per level at every rate point: the anchor's bars beside the best entry's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name in zip(axes, entries_):
        rows = summary[summary["entry"] == name].sort_values("qp")
        bottom = None
        for level in LEVELS:
            values = rows[f"bits_{level}"].to_numpy() / 1000
            ax.bar([str(int(q)) for q in rows["qp"]], values, bottom=bottom, label=level)
            bottom = values if bottom is None else bottom + values
        ax.set_title(f"{name}: kbit per picture by level")
        ax.set_xlabel("QP (base)")
    axes[0].set_ylabel("kbit / picture")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the run (codec=vvenc, ctc.num_images=50)")
    parser.add_argument("--searched", type=Path, help="proposal YAML written by tools/search_allocation.py")
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_embedded"))
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--plot", type=Path, help="bits-per-level plot of the best entry against the anchor")
    parser.add_argument("--entries", nargs="*", help="run only these of the compared entries (anchors always run)")
    args = parser.parse_intermixed_args(argv)

    cfg = vcm_eval.compose(*[
        "anchor=[c_layer,image]", "proposal=compensation", "tracking=none", "progress=true",
        f"paths.output_root={args.root}", f"paths.store={args.root}/store", f"paths.data_root={args.root}/data",
        *args.overrides])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # the anchor's settings under the entry that adds the sample methods (the plain anchor has none)
    base = {k: v for k, v in resolved["anchor"]["c_layer"].items() if k != "name"}
    base["_target_"] = "proposals.feature_chain.FeatureChainEntry"
    compensation = {k: v for k, v in resolved["proposal"]["compensation"].items() if k != "name"}
    searched = {}
    if args.searched:
        searched = next(iter(yaml.safe_load(args.searched.read_text()).values()))
    bodies = entries(searched, base, compensation)
    if args.entries:
        unknown = sorted(set(args.entries) - set(bodies))
        if unknown:
            parser.exit(2, f"bench_rate: error: unknown entries {unknown}; choose from {sorted(bodies)}\n")
        bodies = {name: body for name, body in bodies.items() if name in args.entries}
    OmegaConf.set_struct(cfg, False)
    cfg.proposal = bodies
    start = time.perf_counter()
    outcome = run(cfg, args.root / "runs" / f"rate-{time.strftime('%Y%m%d-%H%M%S')}")
    wall = time.perf_counter() - start
    names = ["c_layer", "image", *bodies]
    text = report(outcome.summary, outcome.bd, outcome.per_image, names, wall)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.plot and "best" in bodies:
        print(f"plot: {level_plot(outcome.summary, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
