#!/usr/bin/env python
"""Benchmark: the embedded video CTC under AI, LD and RA, against both anchors, and what inter coding saves.

One ``ctc=embedded_video`` run per coding condition (the C-layer anchor, the image anchor of remote inference
and the compensation; x265 through PyAV), all on one store, so the C-layers are extracted once. Then, per
sequence and per class (static / panning camera):

- BD-rate of every entry against both anchors under each condition (pchip, mAP@0.5); under LD and RA the QPs are
  the CTC's lowered by ``--inter-shift`` (8 for features, 6 for the image), where the curves cover the accuracy
  range of the AI ones;
- the bit saving of inter over intra coding at equal mAP: BD-rate of ``<entry>@LD`` and ``<entry>@RA`` against
  ``<entry>@AI``, for the C-layers and for the video;
- MOTA/IDF1 of SORT on the uncompressed detections and on the anchors' (a ``ctc.task=tracking`` run, from the
  store);
- wall time against sequence length: one sequence coded by the C-layer anchor under LD with 16 and 64 frames,
  each from an empty store, in one process.

Writes ``report.md``, ``bd.csv`` (every BD row), ``summary.csv`` (every coded sequence) and ``facts.json`` to
``--out`` (``benchmarks/results_video/embedded_video``; docs/video.md quotes it)::

    python benchmarks/bench_video.py                      # the whole CTC: 8 sequences x 64 frames
    python benchmarks/bench_video.py --sequences 2 --frames 16 --out /tmp/video_small
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

import vcm_eval
from vcm_eval.build import build
from vcm_eval.data.sequences import SequenceDataset
from vcm_eval.evaluation.sequences import bd_by_sequence
from vcm_eval.evaluation.summary import format_bd
from vcm_eval.machine import cpu_fingerprint

CONDITIONS = ("AI", "LD", "RA")


def compose(root: Path, sequences: int, frames: int, *overrides: str):
    return vcm_eval.compose(
        "ctc=embedded_video", f"ctc.num_sequences={sequences}", f"ctc.num_frames={frames}",
        f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={root}/data", "tracking=none",
        "progress=true", *overrides)


def shifted(qps: list[int], shift: int) -> str:
    return "[" + ",".join(str(q - shift) for q in qps) + "]"


def qp_overrides(root: Path, sequences: int, frames: int, mode: str, shifts: tuple[int, int]) -> list[str]:
    """The CTC's QPs under AI; under LD and RA lowered by ``shifts`` (features, image), so that the inter-coded
    curves span the same accuracy as the intra ones and the BD-rate of inter over intra is measured where they
    overlap (x265 codes P/B pictures at higher QPs than the I picture, and features lose accuracy faster)."""
    if mode == "AI":
        return []
    qps = compose(root, sequences, frames).ctc.qps
    return [f"ctc.qps.features={shifted(list(qps.features), shifts[0])}",
            f"ctc.qps.image={shifted(list(qps.image), shifts[1])}"]


def run_condition(root: Path, sequences: int, frames: int, mode: str, extra: list[str], shifts: tuple[int, int]):
    cfg = compose(root, sequences, frames, "anchor=[c_layer,image]", "proposal=compensation",
                  f"ctc.condition.mode={mode}", *qp_overrides(root, sequences, frames, mode, shifts), *extra)
    start = time.perf_counter()
    outcome = vcm_eval.run(cfg, root / "runs" / f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"{mode}: {time.perf_counter() - start:.0f} s", flush=True)
    return outcome


def inter_over_intra(summaries: dict[str, pd.DataFrame], entries: list[str], metric: str) -> pd.DataFrame:
    """BD-rate of each entry under LD and RA against the same entry under AI, per sequence and class."""
    tagged = []
    for mode, summary in summaries.items():
        part = summary.copy()
        coded = part["qp"].notna()
        part.loc[coded, "entry"] = part.loc[coded, "entry"] + "@" + mode
        part.loc[coded, "role"] = "anchor" if mode == "AI" else "proposal"
        tagged.append(part if mode == "AI" else part[coded])
    combined = pd.concat(tagged, ignore_index=True)
    rows = []
    for entry in entries:
        table = bd_by_sequence(combined, [f"{entry}@AI"], [f"{entry}@{m}" for m in CONDITIONS], metric,
                               min_points=4, min_overlap=0.1, saturation_tolerance=0.005)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def growth(root: Path, extra: list[str]) -> dict:
    """Wall time of the C-layer anchor on one sequence under LD, 16 vs 64 frames, each from an empty store."""
    out, extra = {}, [o for o in extra if not o.startswith("executor")]  # one process, whatever the runs used
    for frames in (16, 64):
        folder = root / f"growth-{frames}"
        shutil.rmtree(folder, ignore_errors=True)
        cfg = compose(folder, 1, frames, "anchor=[c_layer]", "proposal=none", "ctc.condition.mode=LD",
                      "executor=local", "progress=false", f"paths.data_root={root}/data", *extra)
        build(cfg.dataset, expect=SequenceDataset, what="dataset").sequences()  # generate it outside the timing
        start = time.perf_counter()
        vcm_eval.run(cfg, folder / "run")
        out[frames] = time.perf_counter() - start
    out["ratio"] = out[64] / out[16]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (codec=..., executor=...)")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--root", type=Path, default=Path("outputs/bench_video"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results_video/embedded_video"))
    parser.add_argument("--no-growth", action="store_true", help="skip the wall time against length")
    parser.add_argument("--inter-shift", type=int, nargs=2, default=[8, 6], metavar=("FEATURES", "IMAGE"),
                        help="how much lower the LD/RA QPs are than the AI ones (features, image)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    shifts = tuple(args.inter_shift)
    outcomes = {mode: run_condition(args.root, args.sequences, args.frames, mode, args.overrides, shifts)
                for mode in CONDITIONS}
    metric = outcomes["AI"].metric
    summaries = {mode: o.summary.assign(condition=mode) for mode, o in outcomes.items()}
    bd = pd.concat([o.bd.assign(condition=mode) for mode, o in outcomes.items()], ignore_index=True)
    inter = inter_over_intra({m: o.summary for m, o in outcomes.items()}, ["c_layer", "compensation", "image"],
                             metric).assign(condition="inter vs AI")
    tracking_cfg = compose(args.root, args.sequences, args.frames, "anchor=[c_layer,image]", "proposal=none",
                           "ctc.task=tracking", "ctc.condition.mode=LD",
                           *qp_overrides(args.root, args.sequences, args.frames, "LD", shifts), *args.overrides)
    tracking = vcm_eval.run(tracking_cfg, args.root / "runs" / f"tracking-{time.strftime('%Y%m%d-%H%M%S')}")
    growth_s = None if args.no_growth else growth(args.root / "growth", args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    all_bd = pd.concat([bd, inter], ignore_index=True)
    all_bd.to_csv(args.out / "bd.csv", index=False)
    pd.concat(summaries.values(), ignore_index=True).to_csv(args.out / "summary.csv", index=False)
    tracking.summary.to_csv(args.out / "tracking_summary.csv", index=False)
    reference = tracking.summary[tracking.summary["entry"] == "uncompressed"]
    facts = {"sequences": args.sequences, "frames": args.frames, "overrides": args.overrides,
             "inter_qp_shift": {"features": shifts[0], "image": shifts[1]},
             "cpu": cpu_fingerprint(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
             "wall_s": time.perf_counter() - started, "growth_s": growth_s,
             "uncompressed_mota_mean": float(reference["mota"].mean()),
             "uncompressed_idf1_mean": float(reference["idf1"].mean())}
    (args.out / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
    (args.out / "report.md").write_text(report(all_bd, tracking.summary, facts, metric))
    print(report(all_bd, tracking.summary, facts, metric))
    return 0


def report(bd: pd.DataFrame, tracking: pd.DataFrame, facts: dict, metric: str) -> str:
    cpu = facts["cpu"]
    lines = [f"# Embedded video CTC: {facts['sequences']} sequences x {facts['frames']} frames "
             f"({cpu.get('cpu')} {cpu.get('torch_cpu_capability')}, {facts['date']})", "",
             "BD-rate per class (pchip on mAP@0.5; mean of the class's sequences; 'k of n' sequences had a finite "
             "figure):", "", "| condition | class | test | anchor | BD-rate | BD-mAP | sequences |",
             "|---|---|---|---|---|---|---|"]
    classes = bd[bd["scope"] == "class"]
    for r in classes.itertuples():
        lines.append(f"| {r.condition} | {r.seq_class} | {r.test} | {r.anchor} | {format_bd(r.bd_rate_pchip, ' %')} | "
                     f"{format_bd(r.bd_map_pchip, ' pt')} | {r.sequences} |")
    lines += ["", "Tracking (SORT on each coded sequence's detections, LD), mean over sequences:", "",
              "| entry | QP | MOTA | IDF1 | mAP@0.5 |", "|---|---|---|---|---|"]
    means = tracking.assign(qp=tracking["qp"].fillna(-1)).groupby(["entry", "qp"], sort=False)[
        ["mota", "idf1", "map_50"]].mean().reset_index()
    for r in means.itertuples():
        qp = "" if r.qp < 0 else int(r.qp)
        lines.append(f"| {r.entry} | {qp} | {r.mota:.3f} | {r.idf1:.3f} | {r.map_50:.3f} |")
    if facts.get("growth_s"):
        g = facts["growth_s"]
        lines += ["", f"Wall time, one sequence, C-layer anchor, LD, empty store, one process: 16 frames "
                      f"{g[16]:.1f} s, 64 frames {g[64]:.1f} s (x{g['ratio']:.2f} for 4x the frames)."]
    lines += ["", f"Whole benchmark: {facts['wall_s'] / 60:.1f} min. Figures may move in the last digits on other "
                  "CPUs."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
