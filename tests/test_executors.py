"""The same sweep on every executor gives the same numbers; faults lose and double nothing.

Uses the embedded model on 2-3 synthetic pictures and test codecs from ``fakes`` (no codec cost), so
the work is the framework's own: scheduling, the store, retries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from vcm_eval.cli import CONFIG_DIR, run

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["entry", "qp", "num_bits", "avg_bpp", "map_50", "map_50_95"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def overrides(root: Path, data_root: Path, *extra: str) -> list[str]:
    out = [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={data_root}",
           "progress=false", "dataset.size=4", "ctc.num_images=3", "ctc.qps.features=[30,40]",
           "bd.min_points=2", "tracking=none", "proposal=compensation", "codec._target_=fakes.NoiseCodec",
           "+codec.amplitude=6", "~codec.preset", "~codec.extra_params"]
    return out + list(extra)


def compose_cfg(*args: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(args))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("local")
    return run(compose_cfg(*overrides(root, data_root, "executor=local")), root / "run").summary


def _same(summary: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(summary[COLUMNS].reset_index(drop=True),
                                  reference[COLUMNS].reset_index(drop=True), check_dtype=False)


def test_pool_gives_the_local_results(tmp_path, data_root, reference):
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=pool", "executor.workers=2")),
                  tmp_path / "run")
    _same(outcome.summary, reference)
    assert outcome.per_image["run_s"].notna().all() and (outcome.per_image["queue_s"] >= 0).all()


def test_dask_local_cluster_gives_the_local_results(tmp_path, data_root, reference):
    pytest.importorskip("distributed")
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=dask", "executor.workers=2")),
                  tmp_path / "run")
    _same(outcome.summary, reference)
    assert outcome.per_image["run_s"].notna().all()
    assert outcome.per_image["worker"].nunique() == 2  # both workers of the local cluster took tasks


def test_fsspec_store_url_gives_the_local_results(tmp_path, data_root, reference):
    # memory:// goes through fsspec like s3:// or gs:// would (one process only, so executor=local)
    fsspec = pytest.importorskip("fsspec")
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=local",
                                         "paths.store=memory://vcm-eval-test-store")), tmp_path / "run")
    _same(outcome.summary, reference)
    assert fsspec.filesystem("memory").exists("/vcm-eval-test-store/coded")


def _kill_one_worker_when_busy(executor_holder: dict, stop: threading.Event) -> None:
    """Wait until the sweep's Dask workers are busy, then SIGKILL one worker process."""
    while not stop.is_set():
        executor = executor_holder.get("executor")
        if executor is not None:
            processing = executor.client.processing()
            busy = [w for w, tasks in processing.items() if tasks]
            if busy:
                pids = executor.client.run(os.getpid, workers=[busy[0]])
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                executor_holder["killed"] = busy[0]
                return
        time.sleep(0.05)


def test_dask_worker_killed_mid_sweep_loses_and_doubles_nothing(tmp_path, data_root, reference, monkeypatch):
    pytest.importorskip("distributed")
    from vcm_eval.executors import dask as dask_executor

    holder: dict = {}
    original_init = dask_executor.DaskExecutor.__init__

    def spying_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        holder["executor"] = self

    monkeypatch.setattr(dask_executor.DaskExecutor, "__init__", spying_init)
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_worker_when_busy, args=(holder, stop), daemon=True)
    killer.start()
    cfg = compose_cfg(*overrides(tmp_path, data_root, "executor=dask", "executor.workers=2",
                                 "codec._target_=fakes.SlowCodec", "+codec.delay=0.3"))
    try:
        outcome = run(cfg, tmp_path / "run")
    finally:
        stop.set()
        killer.join(5)
    assert "killed" in holder, "no worker was busy long enough to be killed"
    _same(outcome.summary, reference)
    # one object per key: nothing doubled, no temporary files left by the killed worker
    leftovers = [p for p in (tmp_path / "store").rglob(".tmp-*")]
    assert len(leftovers) <= 1  # at most the file the killed worker was writing


def test_pool_worker_killed_mid_sweep_is_resubmitted(tmp_path, data_root, reference, monkeypatch):
    from vcm_eval.executors import pool as pool_executor

    holder: dict = {}
    original_submit = pool_executor.PoolExecutor.submit

    def submit_and_maybe_kill(self, fn, *args):
        future = original_submit(self, fn, *args)
        holder.setdefault("count", 0)
        holder["count"] += 1
        if holder["count"] == 6 and "killed" not in holder:
            time.sleep(0.5)
            victim = next(iter(self._pool._processes))
            os.kill(victim, signal.SIGKILL)
            holder["killed"] = victim
        return future

    monkeypatch.setattr(pool_executor.PoolExecutor, "submit", submit_and_maybe_kill)
    cfg = compose_cfg(*overrides(tmp_path, data_root, "executor=pool", "executor.workers=2",
                                 "codec._target_=fakes.SlowCodec", "+codec.delay=0.2"))
    outcome = run(cfg, tmp_path / "run")
    assert "killed" in holder
    _same(outcome.summary, reference)


def test_dask_driver_killed_and_restarted_resumes(tmp_path, data_root, reference):
    pytest.importorskip("distributed")
    args = overrides(tmp_path, data_root, "executor=dask", "executor.workers=2", "codec._target_=fakes.SlowCodec",
                     "+codec.delay=0.3")
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "vcm_eval", *args, f"hydra.run.dir={tmp_path}/run1"]
    # its own session, so that killing it takes its local cluster down too, as a crashed driver machine would
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    coded = tmp_path / "store" / "coded"
    deadline = time.time() + 300
    while (not coded.exists() or len(list(coded.rglob("*.json"))) < 3) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    finished = len(list(coded.rglob("*.json")))
    command[-1] = f"hydra.run.dir={tmp_path}/run2"
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    summary = pd.read_csv(tmp_path / "run2" / "summary.csv")
    _same(summary, reference)
    per_image = pd.read_csv(tmp_path / "run2" / "per_image.csv")
    assert (~per_image["computed_now"]).sum() >= finished
