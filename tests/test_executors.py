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

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.pipeline.worker import task_clock as _clock
from vcm_eval.pipeline.worker import task_timing as _timing

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
    return vcm_eval.compose(*list(args))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("local")
    return run(compose_cfg(*overrides(root, data_root, "executor=local")), root / "run").summary


def _same(summary: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(summary[COLUMNS].reset_index(drop=True),
                                  reference[COLUMNS].reset_index(drop=True), check_dtype=False)


def test_task_cpu_time_counts_the_threads_and_children_a_task_starts():
    """libx265 encodes in a thread of its own and VTM in a child process: a task's cpu_s must count both."""
    def spin(cpu_s: float) -> None:
        end = time.thread_time() + cpu_s  # CPU, not wall: the same work however loaded the machine is
        while time.thread_time() < end:
            pass

    start = _clock()
    helper = threading.Thread(target=spin, args=(0.2,))
    helper.start()
    helper.join()
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    timing = _timing(start)
    assert timing["cpu_s"] >= 0.2 + 0.3 - 0.02  # children's CPU comes in clock ticks (10 ms)


def test_pool_gives_the_local_results(tmp_path, data_root, reference):
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=pool", "executor.workers=2")),
                  tmp_path / "run")
    _same(outcome.summary, reference)
    rows = outcome.per_image
    assert rows["run_s"].notna().all() and (rows["queue_s"] >= 0).all()
    # a worker runs one task at a time, and the task's thread waits while libx265's thread encodes: its
    # process cannot use much more CPU than the wall time the task ran (the margin: threads starting)
    assert (rows["cpu_s"] > 0).all() and (rows["cpu_s"] <= 1.2 * rows["run_s"] + 0.02).all()


def test_dask_local_cluster_gives_the_local_results(tmp_path, data_root, reference):
    pytest.importorskip("distributed")
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=dask", "executor.workers=2")),
                  tmp_path / "run")
    _same(outcome.summary, reference)
    assert outcome.per_image["run_s"].notna().all()
    # every task ran in a worker of the local cluster, none in the driver (how the two workers share the
    # tasks is the scheduler's business and varies with load)
    workers = set(outcome.per_image["worker"].dropna())
    assert workers and len(workers) <= 2 and not any(w.endswith(f":{os.getpid()}") for w in workers)


def test_dask_local_cluster_runs_its_housekeeping_quietly():
    """The local cluster's workers get QUIET_MONITORS (a 2-core machine lost 4.6 % to the defaults), and
    the option turns Dask's defaults back on."""
    pytest.importorskip("distributed")
    import dask

    from vcm_eval.executors.dask import QUIET_MONITORS, DaskExecutor

    keys = sorted(QUIET_MONITORS)

    def settings() -> list:
        import dask
        return [dask.config.get(k) for k in keys]

    defaults = [dask.config.get(k) for k in keys]
    assert defaults != [QUIET_MONITORS[k] for k in keys]
    for quiet, expected in ((True, [QUIET_MONITORS[k] for k in keys]), (False, defaults)):
        with DaskExecutor(workers=1, quiet_monitors=quiet) as executor:
            assert list(executor.client.run(settings).values()) == [expected]
    assert [dask.config.get(k) for k in keys] == defaults  # the driver's own config is left as it was


def test_fsspec_store_url_gives_the_local_results(tmp_path, data_root, reference):
    # memory:// goes through fsspec like s3:// or gs:// would (one process only, so executor=local)
    fsspec = pytest.importorskip("fsspec")
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "executor=local",
                                         "paths.store=memory://vcm-eval-test-store")), tmp_path / "run")
    _same(outcome.summary, reference)
    assert fsspec.filesystem("memory").exists("/vcm-eval-test-store/coded")


def test_dask_worker_killed_mid_sweep_loses_and_doubles_nothing(tmp_path, data_root, reference):
    pytest.importorskip("distributed")
    kills = tmp_path / "kills"
    cfg = compose_cfg(*overrides(tmp_path, data_root, "executor=dask", "executor.workers=2",
                                 "codec._target_=fakes.KillingCodec", f"+codec.folder={kills}", "+codec.after=4"))
    outcome = run(cfg, tmp_path / "run")
    assert (kills / "killed").exists(), "the codec did not kill its worker"
    _same(outcome.summary, reference)
    # one object per key: nothing doubled, no temporary files left by the killed worker
    leftovers = [p for p in (tmp_path / "store").rglob(".tmp-*")]
    assert len(leftovers) <= 1  # at most the file the killed worker was writing


def test_pool_worker_killed_mid_sweep_is_resubmitted(tmp_path, data_root, reference):
    kills = tmp_path / "kills"
    cfg = compose_cfg(*overrides(tmp_path, data_root, "executor=pool", "executor.workers=2",
                                 "codec._target_=fakes.KillingCodec", f"+codec.folder={kills}", "+codec.after=4"))
    outcome = run(cfg, tmp_path / "run")
    assert (kills / "killed").exists(), "the codec did not kill its worker"
    _same(outcome.summary, reference)


def test_dask_driver_killed_and_restarted_resumes(tmp_path, data_root, reference):
    """The driver, its scheduler and its workers all killed at once (a crashed driver machine), by a worker's
    codec after a fixed number of encodes; the same command then resumes."""
    pytest.importorskip("distributed")
    kills = tmp_path / "kills"
    args = overrides(tmp_path, data_root, "executor=dask", "executor.workers=2", "codec._target_=fakes.KillingCodec",
                     f"+codec.folder={kills}", "+codec.after=6", "+codec.target=group")
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "vcm_eval", *args, f"hydra.run.dir={tmp_path}/run1"]
    # its own session, so that the kill takes down its process group and nothing else
    killed = subprocess.run(command, env=env, capture_output=True, timeout=600, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # a worker killed while writing leaves its temporary file (.tmp-*.json), which is no result
    finished = len([p for p in (tmp_path / "store" / "detections").rglob("*.json") if not p.name.startswith(".tmp-")])
    command[-1] = f"hydra.run.dir={tmp_path}/run2"
    # the kill may or may not land mid-write: plant what a writer killed there leaves, so the clean-up is tested
    shard = next(p for p in (tmp_path / "store" / "detections").iterdir() if p.is_dir())
    (shard / ".tmp-killedwriter.json").write_bytes(b'{"half": ')
    # nothing else writes into this store: the killed writers' temporaries may go at any age
    subprocess.run([*command, "store.stale_temporaries_s=0"], env=env, check=True, capture_output=True, timeout=600)
    assert not list((tmp_path / "store").rglob(".tmp-*")), "the finished run left the killed writers' temporaries"
    summary = pd.read_csv(tmp_path / "run2" / "summary.csv")
    _same(summary, reference)
    per_image = pd.read_csv(tmp_path / "run2" / "per_image.csv")
    assert (~per_image["computed_now"]).sum() == finished
