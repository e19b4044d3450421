#!/usr/bin/env python
"""Benchmark: what a sweep needs of disk, memory and time under each C-layer retention policy.

    python benchmarks/bench_scale.py --pictures 100                       # the README's main job, 100 pictures
    python benchmarks/bench_scale.py 'anchor=[c_layer]' proposal=none --pictures 1000 --policies until_done
    python benchmarks/bench_scale.py --pictures 100 --memory 512 0        # with and without worker memory

Each combination of ``--pictures``, ``--policies`` (``store.keep_features``) and ``--memory``
(``store.feature_memory_mb``) runs ``python -m vcm_eval`` as a new user would, from an empty store (the
synthetic pictures are made first, outside the timing), while this script samples every
``--interval`` seconds: the resident memory of the main process and of its largest worker process
(with their children, e.g. an encoder), and the bytes under ``store/clayers``. Reported per run: wall
time of the command, peak C-layer bytes, final store bytes per kind (apparent sizes), the peak memories
(the main process's also up to the end of the sweep, before scoring and the report files), and the
C-layer loads the sweep logged (store reads against worker memory). Results are appended to
``<out>/results.jsonl`` (every sample to the run's ``samples.csv``) and printed as a Markdown table
(docs/scale.md has the measured ones).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from vcm_eval.store import Store

REPO = Path(__file__).resolve().parents[1]
LOADS = re.compile(r"C-layers: (\d+) loads by tasks of (\d+) picture\(s\), (\d+) from the store")


def rss_with_children(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def make_pictures(pictures: int, overrides: list[str], data_root: Path) -> None:
    """Build the data set once, so that no timed run pays for making the synthetic pictures."""
    code = ("import sys; import vcm_eval; from vcm_eval.build import build; "
            "cfg = vcm_eval.compose(*sys.argv[1:]); "
            "build(cfg.dataset, expect=object, what='dataset').records()")
    done = subprocess.run([sys.executable, "-c", code, f"dataset.size={pictures}", f"ctc.num_images={pictures}",
                           f"paths.data_root={data_root}", *overrides], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"bench_scale: making the {pictures} pictures under {data_root} failed: {last}")


def measure(pictures: int, policy: str, memory_mb: float, workers: int, overrides: list[str], out: Path,
            data_root: Path, interval: float) -> dict:
    root = out / f"{pictures}-{policy}-mem{memory_mb:g}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    command = [sys.executable, "-m", "vcm_eval", f"ctc.num_images={pictures}", f"dataset.size={pictures}",
               f"store.keep_features={policy}", f"store.feature_memory_mb={memory_mb:g}",
               f"executor.workers={workers}", f"paths.data_root={data_root}", f"paths.store={root}/store",
               f"paths.output_root={root}", f"hydra.run.dir={root}/run", "tracking=none", "progress=false",
               *overrides]
    log = (root / "sweep.log").open("w")
    store = Store(root / "store")
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    main = psutil.Process(child.pid)
    peak = {"clayers": 0, "main_rss": 0, "main_rss_sweep": 0, "worker_rss": 0}
    in_sweep = True  # until the sweep logs its C-layer loads; scoring and the report files come after
    samples = (root / "samples.csv").open("w")
    samples.write("t_s,phase,main_rss_bytes,largest_worker_rss_bytes,clayers_bytes\n")
    while child.poll() is None:
        main_rss = worker_rss = 0
        try:
            main_rss = main.memory_info().rss
            worker_rss = max([0, *(rss_with_children(p) for p in main.children())])
        except psutil.Error:
            pass
        clayers = store.disk_usage(["clayers"]).get("clayers", 0)
        in_sweep = in_sweep and "C-layers: " not in (root / "sweep.log").read_text(errors="replace")
        peak["main_rss"] = max(peak["main_rss"], main_rss)
        if in_sweep:
            peak["main_rss_sweep"] = max(peak["main_rss_sweep"], main_rss)
        peak["worker_rss"] = max(peak["worker_rss"], worker_rss)
        peak["clayers"] = max(peak["clayers"], clayers)
        samples.write(f"{time.perf_counter() - start:.1f},{'sweep' if in_sweep else 'after'},"
                      f"{main_rss},{worker_rss},{clayers}\n")
        time.sleep(interval)
    samples.close()
    wall = time.perf_counter() - start
    log.close()
    text = (root / "sweep.log").read_text()
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}); see {root / 'sweep.log'}")
    loads = LOADS.search(text)
    final = store.disk_usage()
    return {"pictures": pictures, "policy": policy, "feature_memory_mb": memory_mb, "workers": workers,
            "overrides": overrides, "wall_s": round(wall, 1), "peak_clayers_bytes": peak["clayers"],
            "final_bytes": final, "final_total_bytes": sum(final.values()),
            "peak_main_rss_bytes": peak["main_rss"], "peak_main_rss_sweep_bytes": peak["main_rss_sweep"],
            "peak_worker_rss_bytes": peak["worker_rss"],
            "clayer_loads": int(loads.group(1)) if loads else None,
            "clayer_store_reads": int(loads.group(3)) if loads else None,
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg_1min_at_end": os.getloadavg()[0]}


def table(rows: list[dict]) -> str:
    mb = 1e6
    lines = ["| pictures | keep_features | worker memory | wall | C-layers peak | store final | of it C-layers | "
             "main RSS peak (in the sweep) | worker RSS peak | C-layer store reads / loads |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['pictures']} | {r['policy']} | {r['feature_memory_mb']:g} MB | {r['wall_s'] / 60:.1f} min | "
            f"{r['peak_clayers_bytes'] / mb:.0f} MB | {r['final_total_bytes'] / mb:.0f} MB | "
            f"{r['final_bytes'].get('clayers', 0) / mb:.0f} MB | {r['peak_main_rss_bytes'] / mb:.0f} MB "
            f"({r.get('peak_main_rss_sweep_bytes', 0) / mb:.0f} MB) | "
            f"{r['peak_worker_rss_bytes'] / mb:.0f} MB | {r['clayer_store_reads']} / {r['clayer_loads']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of every run (default: proposal=compensation)")
    parser.add_argument("--pictures", type=int, nargs="+", default=[100])
    parser.add_argument("--policies", nargs="+", default=["all", "until_done"], choices=["all", "until_done"],
                        help="store.keep_features values (Hydra overrides go before the options)")
    parser.add_argument("--memory", type=float, nargs="+", default=[512.0], help="store.feature_memory_mb values")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_scale")
    parser.add_argument("--data-root", type=Path, default=REPO / "outputs" / "bench_scale" / "data")
    args = parser.parse_args(argv)
    overrides = args.overrides or ["proposal=compensation"]
    rows = []
    for pictures in args.pictures:
        make_pictures(pictures, [o for o in overrides if o.startswith(("ctc=", "dataset"))], args.data_root)
        for policy in args.policies:
            for memory_mb in args.memory:
                print(f"{pictures} pictures, keep_features={policy}, feature_memory_mb={memory_mb:g} ...",
                      flush=True)
                row = measure(pictures, policy, memory_mb, args.workers, overrides, args.out, args.data_root,
                              args.interval)
                with (args.out / "results.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
