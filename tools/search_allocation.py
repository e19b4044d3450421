#!/usr/bin/env python
"""Choose a feature entry's rate allocation and sample methods by BD-rate on tuning pictures, not the CTC's.

Coordinate descent over a small grid: starting from the entry's YAML (``--entry c_layer`` or a proposal),
each round visits every coordinate in turn — the number of channel components per level, per-level QP
offsets, the quantiser's range, downsampling of C2 — evaluates every value of that coordinate with the others
fixed (one ``python -m vcm_eval`` sweep per coordinate, on the tuning pictures, against the plain C-layer
anchor), and keeps the value with the lowest BD-rate (pchip, the CTC's headline metric). A candidate whose
BD-rate is NaN (its curve does not overlap enough of the anchor's mAP range, or is not monotonic) is never
chosen. Then the **span** phase chooses the entry's rate points: a shift of every base QP and the step
between them (``base[0] + shift + i * step``), so that its curve covers as much of the anchor's mAP range as
it can (coverage = the share of the anchor's [min, max] mAP that the entry's [min, max] overlaps), taking
among those within ``--span-slack`` of the best coverage the one with the lowest BD-rate. BD-rate is only
computed where the curves overlap, so an entry that never reaches the anchor's low-mAP end would be judged on
a part of the range; the span phase is what makes its figure cover the range the anchor is judged on. Every
sweep goes through the store, so a value tried before costs nothing and an interrupted search resumes by
running the same command.

The tuning pictures are the synthetic ``tune`` split (neither the detector's training pictures nor the
CTC's): the tool refuses ``dataset.split=val``. It prints each coordinate's table as it goes, writes every
candidate it tried to ``--table`` (CSV) and the best entry as a proposal YAML (``--out``) that
``python -m vcm_eval proposal=<name>`` runs on the CTC::

    python tools/search_allocation.py --name klt_search --images 40                  # -> conf/proposal/klt_search.yaml
    python tools/search_allocation.py --entry compensation --name comp_search --coordinates offsets,span
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

import vcm_eval
from vcm_eval.cli import CONFIG_DIR, run
from vcm_eval.resolvers import shifted_qps

LEVELS = ("c2", "c3", "c4", "c5")
ANCHOR_TARGET = "anchors.c_layer.CLayerAnchor"
CHAIN_TARGET = "proposals.feature_chain.FeatureChainEntry"
#: What each coordinate may take (a grid small enough for a round to take minutes on a laptop).
GRID: dict[str, list[Any]] = {
    "offset": [-6, -4, -2, 0, 2, 4],
    "components": [1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
    "range": [("minmax",), ("percentile", 0.01, 99.99), ("percentile", 0.1, 99.9), ("sigma", 6.0)],
    "downsample": [1, 2],
    "shift": [-4, -2, 0, 2, 4, 6],
    "step": [2, 3],
}
#: ``span`` is the final phase (shift x step), not a coordinate of the descent.
COORDINATE_GROUPS = ("components", "offsets", "range", "downsample", "span")


def set_option(spec: dict, coordinate: str, value: Any) -> dict:
    """A copy of the entry ``spec`` (its YAML body as a dict) with one coordinate set.

    Coordinates: ``offset:<level>``, ``components:<level>`` (turns the KLT on), ``range``,
    ``downsample:<level>``, ``shift`` (added to every rate point), ``step`` (between rate points).
    """
    spec = copy.deepcopy(spec)
    kind, _, level = coordinate.partition(":")
    if kind == "offset":
        offsets = dict(spec.get("qp_offsets") or {})
        offsets[level] = int(value)
        spec["qp_offsets"] = {k: v for k, v in sorted(offsets.items()) if v} or None
    elif kind == "components":
        transform = dict(spec.get("transform") or {"kind": "klt", "basis": "embedded"})
        components = dict(transform.get("components") or {})
        components[level] = int(value)
        transform["components"] = dict(sorted(components.items()))
        spec["transform"] = transform
    elif kind == "range":
        quantizer = {k: v for k, v in dict(spec.get("quantizer") or {}).items()
                     if k not in ("range", "low", "high", "k")}
        if value[0] == "percentile":
            quantizer.update(range="percentile", low=float(value[1]), high=float(value[2]))
        elif value[0] == "sigma":
            quantizer.update(range="sigma", k=float(value[1]))
        spec["quantizer"] = quantizer or None
    elif kind == "downsample":
        factors = dict(spec.get("downsample") or {})
        factors[level] = int(value)
        spec["downsample"] = {k: v for k, v in sorted(factors.items()) if v != 1} or None
    elif kind == "shift":
        spec["_shift"] = int(value)
    elif kind == "step":
        spec["_step"] = int(value)
    else:
        raise ValueError(f"unknown coordinate {coordinate!r}")
    return spec


def current_value(spec: dict, coordinate: str) -> Any:
    """The value ``spec`` has at ``coordinate`` (the default when unset)."""
    kind, _, level = coordinate.partition(":")
    if kind == "offset":
        return int((spec.get("qp_offsets") or {}).get(level, 0))
    if kind == "components":
        return int(((spec.get("transform") or {}).get("components") or {}).get(level, 32))
    if kind == "range":
        q = spec.get("quantizer") or {}
        if q.get("range") == "percentile":
            return ("percentile", float(q["low"]), float(q["high"]))
        if q.get("range") == "sigma":
            return ("sigma", float(q["k"]))
        return ("minmax",)
    if kind == "downsample":
        return int((spec.get("downsample") or {}).get(level, 1))
    if kind == "step":
        return spec.get("_step")
    return int(spec.get("_shift", 0))


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["shift=0,2", "offset=-2,0"]`` -> GRID with those values replaced (integer coordinates only)."""
    grid = {k: list(v) for k, v in GRID.items()}
    for item in items:
        key, _, values = item.partition("=")
        if key not in grid or key == "range" or not values:
            raise ValueError(f"--grid takes KEY=V1,V2 with KEY in {[k for k in GRID if k != 'range']}, got {item!r}")
        grid[key] = [int(v) for v in values.split(",")]
    return grid


def coordinates(groups: Iterable[str], levels: Iterable[str]) -> list[str]:
    out = []
    for group in groups:
        if group == "offsets":
            out += [f"offset:{lv}" for lv in levels]
        elif group == "components":
            out += [f"components:{lv}" for lv in levels]
        elif group == "downsample":
            out += ["downsample:c2"]
        elif group == "range":
            out.append(group)
        elif group == "span":
            continue
        else:
            raise ValueError(f"unknown coordinate group {group!r}; choose from {list(COORDINATE_GROUPS)}")
    return out


def entry_node(spec: dict, name: str, base_qps: list[int]) -> dict:
    """The YAML body of a candidate: ``spec`` with its name and its rate points: ``base_qps`` shifted by
    ``_shift``, or, with a ``_step``, ``base_qps[0] + _shift + i * _step``."""
    node = {k: v for k, v in spec.items() if k not in ("_shift", "_step")}
    node["name"] = name
    node["rate_points"] = rate_points(spec, base_qps)
    return node


def rate_points(spec: dict, base_qps: list[int]) -> list[int]:
    return shifted_qps(base_qps, int(spec.get("_shift", 0)), spec.get("_step"))


class Evaluator:
    """Runs candidate entries on the tuning pictures (one sweep per batch) and remembers every result."""

    def __init__(self, cfg: DictConfig, base_qps: list[int], workdir: Path, quiet: bool = True) -> None:
        self.cfg, self.base_qps, self.workdir, self.quiet = cfg, base_qps, workdir, quiet
        self.results: dict[str, dict] = {}
        self.batches = 0

    @staticmethod
    def key(spec: dict) -> str:
        return json.dumps(spec, sort_keys=True, default=list)

    def evaluate(self, specs: list[dict]) -> list[dict]:
        todo = [s for s in specs if self.key(s) not in self.results]
        unique = list({self.key(s): s for s in todo}.values())
        if unique:
            self.batches += 1
            cfg = copy.deepcopy(self.cfg)
            OmegaConf.set_struct(cfg, False)
            cfg.proposal = {f"cand{i}": entry_node(s, f"cand{i}", self.base_qps) for i, s in enumerate(unique)}
            out = self.workdir / f"batch{self.batches:03d}"
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink) if self.quiet else contextlib.nullcontext():
                outcome = run(cfg, out)
            bd, summary = outcome.bd, outcome.summary
            metric = "map_50" if "map_50" in summary.columns else [c for c in summary if c.startswith("map_")][0]
            anchor_map = summary.loc[summary["entry"] == "c_layer", metric]
            lo, hi = float(anchor_map.min()), float(anchor_map.max())
            for i, spec in enumerate(unique):
                name = f"cand{i}"
                row = bd[(bd["test"] == name) & (bd["anchor"] == "c_layer")]
                rows = summary[summary["entry"] == name].sort_values("qp")
                value = float(row["bd_rate_pchip"].iloc[0]) if len(row) else math.nan
                self.results[self.key(spec)] = {
                    "bd_rate": value, "bd_map": float(row["bd_map_pchip"].iloc[0]) if len(row) else math.nan,
                    "reason": str(row["reason"].iloc[0]) if len(row) else "",
                    "bpp": [round(float(b), 4) for b in rows["avg_bpp"]],
                    "map": [round(float(m), 4) for m in rows[metric]],
                    "coverage": coverage(lo, hi, float(rows[metric].min()), float(rows[metric].max())),
                }
        return [self.results[self.key(s)] for s in specs]


def coverage(anchor_lo: float, anchor_hi: float, lo: float, hi: float) -> float:
    """Share of the anchor's accuracy range ``[anchor_lo, anchor_hi]`` that ``[lo, hi]`` overlaps."""
    if anchor_hi <= anchor_lo:
        return 0.0
    return round(max(0.0, min(hi, anchor_hi) - max(lo, anchor_lo)) / (anchor_hi - anchor_lo), 4)


def score(result: dict) -> float:
    """What the search minimises: BD-rate against the C-layer anchor; NaN (no valid comparison) never wins."""
    value = result["bd_rate"]
    return value if math.isfinite(value) else math.inf


def describe(spec: dict) -> str:
    parts = []
    if spec.get("qp_offsets"):
        parts.append("offsets " + ",".join(f"{k}{v:+d}" for k, v in spec["qp_offsets"].items()))
    if spec.get("transform"):
        parts.append("klt " + ",".join(f"{k}={v}" for k, v in spec["transform"].get("components", {}).items()))
    if spec.get("quantizer"):
        parts.append("quantizer " + ",".join(f"{k}={v}" for k, v in spec["quantizer"].items()))
    if spec.get("downsample"):
        parts.append("downsample " + ",".join(f"{k}/{v}" for k, v in spec["downsample"].items()))
    if spec.get("_shift") or spec.get("_step"):
        parts.append(f"QPs shifted {int(spec.get('_shift', 0)):+d}" +
                     (f", step {spec['_step']}" if spec.get("_step") else ""))
    return "; ".join(parts) or "(the entry as it is)"


def descend(start: dict, coords: list[str], evaluator: Evaluator, rounds: int,
            log: Callable[[str], None] = print, grid: dict[str, list[Any]] | None = None) -> tuple[dict, dict]:
    """Coordinate descent from ``start`` over ``grid`` (default :data:`GRID`): returns the best spec and its
    result."""
    grid = grid or GRID
    best = start
    best_result = evaluator.evaluate([best])[0]
    log(f"start: BD-rate {best_result['bd_rate']:+.2f} % ({describe(best)})")
    for round_no in range(1, rounds + 1):
        improved = False
        for coordinate in coords:
            kind = coordinate.partition(":")[0]
            values = grid[kind]
            candidates = [set_option(best, coordinate, v) for v in values]
            started = time.perf_counter()
            results = evaluator.evaluate(candidates)
            log(f"round {round_no}, {coordinate} ({time.perf_counter() - started:.0f} s):")
            for value, result in zip(values, results):
                mark = "*" if value == current_value(best, coordinate) else " "
                log(f"  {mark} {str(value):>28}: BD-rate {result['bd_rate']:+8.2f} %  bpp {result['bpp']}  "
                    f"mAP {result['map']}" + (f"  ({result['reason']})" if result["reason"] else ""))
            i = min(range(len(values)), key=lambda j: score(results[j]))
            if score(results[i]) < score(best_result) - 1e-9:
                best, best_result, improved = candidates[i], results[i], True
                log(f"  -> {coordinate} = {values[i]}: BD-rate {best_result['bd_rate']:+.2f} %")
        if not improved:
            break
    return best, best_result


def level_qps(spec: dict, base_qps: list[int]) -> list[int]:
    """Every QP a level of ``spec`` is coded at: its rate points plus each level's offset."""
    offsets = [0, *(spec.get("qp_offsets") or {}).values()]
    return [q + o for q in rate_points(spec, base_qps) for o in offsets]


def span(best: dict, best_result: dict, evaluator: Evaluator, slack: float, grid: dict[str, list[Any]],
         log: Callable[[str], None] = print, max_qp: int = 51) -> tuple[dict, dict]:
    """Choose the rate points of ``best``: every (shift, step) of ``grid`` that keeps every level's QP in
    ``0..max_qp``; the candidates whose BD-rate is valid and whose coverage is within ``slack`` of the best
    coverage compete on BD-rate."""
    candidates = [set_option(set_option(best, "shift", shift), "step", step)
                  for step in grid["step"] for shift in grid["shift"]]
    candidates = [c for c in candidates if 0 <= min(level_qps(c, evaluator.base_qps))
                  and max(level_qps(c, evaluator.base_qps)) <= max_qp]
    started = time.perf_counter()
    results = evaluator.evaluate(candidates)
    log(f"span ({time.perf_counter() - started:.0f} s): rate points by coverage of the anchor's mAP range")
    for spec, result in zip(candidates, results):
        log(f"    QPs {rate_points(spec, evaluator.base_qps)}: coverage {result['coverage']:.2f}  BD-rate "
            f"{result['bd_rate']:+8.2f} %  bpp {result['bpp']}  mAP {result['map']}")
    pool = [(s, r) for s, r in zip(candidates, results) if math.isfinite(r["bd_rate"])]
    if best_result.get("coverage") is not None and math.isfinite(best_result["bd_rate"]):
        pool.append((best, best_result))
    if not pool:
        return best, best_result
    top = max(r["coverage"] for _, r in pool)
    spec, result = min(((s, r) for s, r in pool if r["coverage"] >= top - slack), key=lambda sr: sr[1]["bd_rate"])
    log(f"  -> QPs {rate_points(spec, evaluator.base_qps)}: coverage {result['coverage']:.2f}, "
        f"BD-rate {result['bd_rate']:+.2f} %")
    return spec, result


def proposal_yaml(name: str, spec: dict, base_qps: list[int], header: str, *, follows_ctc: bool = False) -> str:
    """The proposal file ``conf/proposal/<name>.yaml``: the best spec under its name, with what led to it.
    With ``follows_ctc`` (the starting entry's rate points were the CTC's), the rate points are written as
    ``${vcm_eval.shifted_qps:${ctc.qps.features},shift[,step]}``, so that another CTC shifts its own QPs."""
    node = entry_node(spec, name, base_qps)
    node["bit_depth"] = "${ctc.bit_depth}"
    if follows_ctc:
        shift, step = int(spec.get("_shift", 0)), spec.get("_step")
        node["rate_points"] = (f"${{vcm_eval.shifted_qps:${{ctc.qps.features}},{shift}"
                               + (f",{int(step)}}}" if step is not None else "}"))
    body = yaml.safe_dump({name: node}, sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (codec=..., model=...)")
    parser.add_argument("--entry", default="c_layer", help="starting entry: an anchor or proposal YAML name")
    parser.add_argument("--name", default="searched", help="name of the proposal written")
    parser.add_argument("--images", type=int, default=40, help="tuning pictures (the first N of the tune split)")
    parser.add_argument("--coordinates", default=",".join(COORDINATE_GROUPS),
                        help=f"comma-separated groups of {list(COORDINATE_GROUPS)}")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the coordinates (stops early)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="replace a coordinate's values, e.g. --grid shift=0,2,4 (offset, components, "
                             "downsample, shift, step)")
    parser.add_argument("--max-qp", type=int, default=51, help="the codec's largest QP (x265 51, VVC 63)")
    parser.add_argument("--span-slack", type=float, default=0.05,
                        help="span phase: coverage within this of the best competes on BD-rate")
    parser.add_argument("--out", type=Path, help="proposal YAML (default conf/proposal/<name>.yaml)")
    parser.add_argument("--table", type=Path, help="CSV of every candidate tried (default next to --out)")
    parser.add_argument("--workdir", type=Path, help="run folders of the sweeps (default: a temporary one)")
    args = parser.parse_intermixed_args(argv)

    overrides = ["dataset.split=tune", f"ctc.num_images={args.images}", "anchor=[c_layer]", "proposal=none",
                 "tracking=none", "progress=false", *args.overrides]
    cfg = vcm_eval.compose(*overrides)
    group = "anchor" if (Path(CONFIG_DIR) / "anchor" / f"{args.entry}.yaml").is_file() else "proposal"
    entry_cfg = vcm_eval.compose(*[*overrides, f"{group}=[{args.entry}]"])
    if cfg.dataset.get("split") == "val":
        parser.exit(2, "search_allocation: error: dataset.split=val holds the CTC's pictures; tune on "
                       "dataset.split=tune (the default)\n")
    body = OmegaConf.to_container(entry_cfg[group][args.entry], resolve=True)
    follows_ctc = OmegaConf.to_container(entry_cfg[group][args.entry])["rate_points"] == "${ctc.qps.features}"
    base_qps = [int(q) for q in body.pop("rate_points")]
    if body.get("_target_") == ANCHOR_TARGET:
        body["_target_"] = CHAIN_TARGET  # the plain anchor has no sample methods; its chain entry has them all
    body.pop("name", None)
    try:
        coords = coordinates(args.coordinates.split(","), body.get("levels", LEVELS))
        grid = parse_grid(args.grid)
    except ValueError as exc:
        parser.exit(2, f"search_allocation: error: {exc}\n")
    out = args.out or Path(CONFIG_DIR) / "proposal" / f"{args.name}.yaml"
    table = args.table or out.with_suffix(".search.csv")
    print(f"search: {args.entry} on {args.images} pictures of {cfg.dataset.get('split')} "
          f"({cfg.ctc.name} CTC's codec and model), base QPs {base_qps}, coordinates {coords}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = Evaluator(cfg, base_qps, args.workdir or Path(tmp))
        started = time.perf_counter()
        say = lambda text: print(text, flush=True)  # noqa: E731
        best, result = descend(body, coords, evaluator, args.rounds, log=say, grid=grid)
        if "span" in args.coordinates.split(","):
            best, result = span(best, result, evaluator, args.span_slack, grid, log=say, max_qp=args.max_qp)
    rows = [{"candidate": describe(json.loads(k)), **{kk: (json.dumps(v) if isinstance(v, list) else v)
                                                       for kk, v in r.items()}, "spec": k}
            for k, r in evaluator.results.items()]
    table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).sort_values("bd_rate").to_csv(table, index=False)
    header = (f"Found by tools/search_allocation.py ({time.strftime('%Y-%m-%d')}): coordinate descent from the "
              f"{args.entry} entry\nover {coords},\non the first {args.images} pictures of the synthetic tune split "
              f"(not the CTC's), {len(evaluator.results)} candidates,\n{time.perf_counter() - started:.0f} s. "
              f"BD-rate against the C-layer anchor there: {result['bd_rate']:+.2f} % "
              f"(BD-mAP {result['bd_map']:+.2f} pt).\nEvery candidate: {table}\nChosen: {describe(best)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(proposal_yaml(args.name, best, base_qps, header, follows_ctc=follows_ctc))
    result_qps = rate_points(best, base_qps)
    print(f"\nbest: {describe(best)}, QPs {result_qps}: BD-rate {result['bd_rate']:+.2f} % on the tuning pictures\n"
          f"wrote {out} (run it: python -m vcm_eval proposal={args.name}) and {table}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nsearch_allocation: interrupted; nothing was written. Every picture the sweeps coded is kept in the "
              "store (paths.store), so the same command runs again without re-encoding them.", file=sys.stderr)
        sys.exit(130)
