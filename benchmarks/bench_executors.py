#!/usr/bin/env python
"""Benchmark: the same sweep under executor=local, pool and dask on this machine.

    python benchmarks/bench_executors.py                       # the embedded CTC, anchor + compensation
    python benchmarks/bench_executors.py --workers 2 ctc.num_images=20

Each executor starts from an empty store (nothing cached), so every task really runs. Reported per
executor: sweep wall time (executor start-up, planning, every task, loading the results; not the
data set generation, scoring or report files), the sum of the
tasks' own run times, the speed-up against ``local``, and the scheduling overhead

    overhead = 1 - sum(task run time) / (workers x sweep wall time)

the share of the workers' time not spent inside a task (start-up of worker processes, model loading,
queueing, transfers, idle tails). Targets for 2 workers: speed-up >= 1.8, overhead <= 5 %.

Where the time goes: ``task_cpu_s`` is the CPU time the worker processes used while they ran the tasks
(``cpu_s`` of per_image.csv: all threads of the process, libx265's included, and waited-for children such
as VTM); ``task_s - task_cpu_s`` is time a task waited for a core another process held; ``main_cpu_s`` is
the CPU time of this process (the driver, and for a Dask LocalCluster its scheduler) and ``workers_cpu_s``
that of the worker processes (and their children) that ended during the run. On a machine with as many
cores as workers, every CPU second the driver, the scheduler or the workers spend outside tasks is taken
from the tasks.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate

import vcm_eval
from vcm_eval.cli import run


def one(executor: str, workers: int, overrides: list[str], root: Path) -> dict:
    extra = [] if executor == "local" else [f"executor.workers={workers}"]
    cfg = vcm_eval.compose(*[
        f"executor={executor}", *extra, "tracking=none", "progress=false", "proposal=compensation",
        f"paths.output_root={root}", f"paths.store={root}/store", *overrides])
    start = time.perf_counter()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome = run(cfg, root / "run")
    total = time.perf_counter() - start
    own_after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    provenance = json.loads((root / "run" / "provenance.json").read_text())
    sweep_s = provenance["sweep_s"]
    task_s = float(pd.to_numeric(outcome.per_image["run_s"], errors="coerce").fillna(0).sum())
    task_cpu_s = float(pd.to_numeric(outcome.per_image["cpu_s"], errors="coerce").fillna(0).sum())
    n = 1 if executor == "local" else workers
    return {"executor": f"{executor}" + ("" if executor == "local" else f" x{workers}"), "workers": n,
            "sweep_s": sweep_s, "total_s": total, "task_s": task_s, "task_cpu_s": task_cpu_s,
            "main_cpu_s": _cpu(own_after) - _cpu(own), "workers_cpu_s": _cpu(children_after) - _cpu(children),
            "rows_run": int(outcome.per_image["run_s"].notna().sum()), "overhead": 1.0 - task_s / (n * sweep_s)}


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. ctc.num_images=20)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executors", nargs="*", default=["local", "pool", "dask"])
    parser.add_argument("--data-root", type=Path, help="where the synthetic set is (default: a temporary folder)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = [f"paths.data_root={args.data_root or Path(tmp) / 'data'}"]
        instantiate(vcm_eval.compose(*data + args.overrides).dataset)  # generate once
        for executor in args.executors:
            rows.append(one(executor, args.workers, data + args.overrides, Path(tmp) / executor))
            print(f"{rows[-1]['executor']}: sweep {rows[-1]['sweep_s']:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    local = table.loc[table["executor"] == "local", "sweep_s"]
    if len(local):
        table["speedup"] = float(local.iloc[0]) / table["sweep_s"]
    pd.set_option("display.width", 160)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
