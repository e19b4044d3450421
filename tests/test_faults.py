"""Fault injection: every ordinary fault ends with the clean run's results or one line naming the file and the fix.

Runs the embedded model on two synthetic pictures with the test codec of ``fakes`` (no codec cost): runs started
in the same second, two runs sharing a fresh MLflow store, bit flips and deletions of every store kind, SIGTERM and
SIGINT to the driver (pool and Dask), a full disk and a read-only store (injected ``OSError``s: a real tmpfs needs
privileges a test machine may not grant), a broken tracking store. No wall-clock assertions.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import vcm_eval
from vcm_eval.cli import ReportWriteError, run
from vcm_eval.pipeline import SweepError, SweepInterrupted
from vcm_eval.run_folders import unique_dir
from vcm_eval.store import DAMAGED, decode_record

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
#: result columns that must not move (stage times, workers and cache flags do: they say when and where)
RESULTS = ["entry", "qp", "num_images", "num_bits", "avg_bpp", "map_50", "map_50_95"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def overrides(root: Path, data_root: Path, *extra: str) -> list[str]:
    """Two pictures, the C-layer and image anchors at two QPs each, the noise codec, everything under ``root``."""
    return [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={data_root}",
            "progress=false", "dataset.size=4", "ctc.num_images=2", "ctc.qps.features=[30,40]",
            "ctc.qps.image=[30,40]", "bd.min_points=2", "tracking=none", "executor=local",
            "codec._target_=fakes.NoiseCodec", "+codec.amplitude=6", "~codec.preset", "~codec.extra_params",
            *extra]


def compose_cfg(*args: str):
    return vcm_eval.compose(*list(args))


def results(summary: pd.DataFrame) -> pd.DataFrame:
    columns = RESULTS + sorted(c for c in summary.columns if c.startswith(("bits_", "psnr_", "topdown_psnr_", "qp_")))
    return summary[columns].reset_index(drop=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, data_root) -> tuple[Path, pd.DataFrame]:
    """A finished store and the summary of the run that made it."""
    root = tmp_path_factory.mktemp("clean")
    outcome = run(compose_cfg(*overrides(root, data_root)), root / "run")
    return root / "store", results(outcome.summary)


def rerun(tmp_path: Path, data_root: Path, *extra: str) -> pd.DataFrame:
    return results(run(compose_cfg(*overrides(tmp_path, data_root, *extra)), tmp_path / "run").summary)


def copy_store(clean_store: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    return store


def records(store: Path, kind: str) -> list[tuple[Path, dict]]:
    """Every JSON record of one kind: path and body (parsed without the checksum check: some are damaged)."""
    out = []
    for path in sorted((store / kind).rglob("*.json")):
        body = path.read_bytes().split(b"\n", 1)[1]
        try:
            out.append((path, json.loads(body)))
        except ValueError:
            continue
    return out


def detection_record(store: Path, entry: str) -> Path:
    return next(path for path, body in records(store, "detections") if body["entry"] == entry)


def flip_digit_after(path: Path, marker: bytes) -> None:
    """Change the first digit after ``marker`` (2 -> 3, ...), as a flipped bit in a number would."""
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker)
    while not chr(data[at]).isdigit():
        at += 1
    data[at] = ord(str((int(chr(data[at])) + 1) % 10))
    path.write_bytes(bytes(data))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def damaged_files(store: Path) -> list[Path]:
    return sorted(p for p in (store / DAMAGED).rglob("*") if p.is_file()) if (store / DAMAGED).exists() else []


# --------------------------------------------------------------------------- the store


def test_a_flipped_digit_or_byte_in_every_kind_of_record_is_detected_and_recomputed(tmp_path, data_root, clean):
    clean_store, reference = clean
    store = copy_store(clean_store, tmp_path)
    flip_digit_after(detection_record(store, "c_layer"), b'"boxes":')  # a box coordinate: mAP would move
    flip_digit_after(detection_record(store, "image"), b'"scores":')
    feature_coded = next(path for path, body in records(store, "coded") if "levels" in body)
    flip_digit_after(feature_coded, b'"num_bytes":')  # bpp would move
    flip_digit_after(records(store, "bitstreams")[1][0], b'"num_bytes":')
    flip_byte(sorted((store / "bitstreams").rglob("*.bin"))[2])
    uncompressed = detection_record(store, "uncompressed")
    data = uncompressed.read_bytes()
    uncompressed.write_bytes(data[:-40] + b"\xff\xfe\xfd" + data[-37:])  # not UTF-8 any more
    assert rerun(tmp_path, data_root).equals(reference)
    assert len(damaged_files(store)) >= 6  # each one set aside for inspection, none read as a result


def test_a_deleted_object_of_every_kind_is_recomputed(tmp_path, data_root, clean):
    clean_store, reference = clean
    store = copy_store(clean_store, tmp_path)
    for kind, suffix, index in (("bitstreams", ".json", 0), ("bitstreams", ".bin", 3), ("coded", ".json", 1),
                                ("detections", ".json", 2), ("clayers", ".npz", 0)):
        sorted((store / kind).rglob(f"*{suffix}"))[index].unlink()
    # the coded record of an image entry too (its task writes it and its detections): its stale detections go
    image_coded = [p for p in sorted((store / "coded").rglob("*.json"))
                   if "bitstream" in json.loads(decode_record(p.read_bytes())[1])]
    assert image_coded, "the clean run has an image entry"
    image_coded[0].unlink()
    assert rerun(tmp_path, data_root).equals(reference)
    # healed: a second run finds everything and computes nothing
    again = run(compose_cfg(*overrides(tmp_path, data_root)), tmp_path / "again")
    assert not again.per_image["computed_now"].any()


def test_damaged_c_layers_found_by_a_task_are_recomputed_in_a_second_pass(tmp_path, data_root, clean):
    """C-layer arrays are checked (zip CRC) when a task reads them, not when planning: the task fails, the file is
    set aside, and the sweep plans itself again."""
    clean_store, reference = clean
    store = copy_store(clean_store, tmp_path)
    flip_byte(sorted((store / "clayers").rglob("*.npz"))[0])
    for path, _ in records(store, "coded"):
        path.unlink()  # every coding task must read its C-layers again
    assert rerun(tmp_path, data_root).equals(reference)
    assert len([p for p in damaged_files(store) if p.parent.name == "clayers"]) == 1


def test_a_read_only_store_gives_finished_results_and_names_what_it_cannot_write(tmp_path, data_root, clean,
                                                                                    monkeypatch):
    clean_store, reference = clean
    store = copy_store(clean_store, tmp_path)

    def read_only(folder, suffix, data):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("vcm_eval.store._write_temporary", read_only)
    assert rerun(tmp_path, data_root).equals(reference)
    missing = records(store, "coded")[0][0]
    missing.unlink()
    with pytest.raises(SweepError) as info:
        rerun(tmp_path, data_root)
    assert "cannot write into the store (Read-only file system)" in str(info.value)
    assert "not writable: point paths.store at a folder you may write" in str(info.value)


def test_a_full_disk_in_the_store_names_the_file_and_keeps_what_finished(tmp_path, data_root, clean, monkeypatch):
    from vcm_eval import store as store_module

    real = store_module._write_temporary
    writes = []

    def fill_up(folder, suffix, data):
        writes.append(folder)
        if len(writes) > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(folder, suffix, data)

    monkeypatch.setattr(store_module, "_write_temporary", fill_up)
    with pytest.raises(SweepError) as info:
        run(compose_cfg(*overrides(tmp_path, data_root)), tmp_path / "run")
    message = str(info.value)
    assert "cannot write into the store (No space left on device)" in message and "the disk is full" in message
    assert str(tmp_path / "store") in message
    monkeypatch.undo()
    finished = len(list((tmp_path / "store").rglob("*.*")))
    assert 0 < finished <= 12  # what was written before the disk filled up is kept
    assert rerun(tmp_path, data_root).equals(clean[1])


def test_a_full_disk_while_writing_reports_names_the_path_and_the_store_keeps_the_results(tmp_path, data_root, clean,
                                                                                          monkeypatch):
    clean_store, reference = clean
    copy_store(clean_store, tmp_path)

    def full(path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("vcm_eval.reporting.report.write_workbook", full)
    with pytest.raises(ReportWriteError) as info:
        rerun(tmp_path, data_root)
    message = str(info.value)
    assert ".xlsx: cannot write the run's result files (No space left on device)" in message
    assert "run the same command again, which recomputes nothing" in message
    monkeypatch.undo()
    rebuilt = subprocess.run([sys.executable, str(REPO / "tools" / "rebuild_report.py"), str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len(list((tmp_path / "run").glob("ctc_*.xlsx"))) == 1
    summary = pd.read_csv(tmp_path / "run" / "summary.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(results(summary), reference, check_dtype=False)


def test_a_broken_tracking_store_is_a_warning_and_the_run_keeps_its_results(tmp_path, data_root, clean, capsys):
    clean_store, reference = clean
    copy_store(clean_store, tmp_path)
    broken = tmp_path / "mlflow.db"
    broken.write_bytes(os.urandom(4096))
    summary = rerun(tmp_path, data_root, "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{broken}")
    assert summary.equals(reference)
    err = capsys.readouterr().err
    assert f"WARNING: MLflow tracking failed for sqlite:///{broken}" in err and "tracking=none" in err
    assert f"tools/log_run.py {tmp_path / 'run'}" in err
    # logged afterwards from the run's folder alone, here into a new store (this process keeps the broken one open)
    mended = tmp_path / "mended.db"
    logged = subprocess.run([sys.executable, str(REPO / "tools" / "log_run.py"), str(tmp_path / "run"),
                             "--tracking-uri", f"sqlite:///{mended}"], capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr[-3000:]

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{mended}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.data.tags.get("entry") for r in runs} == {None, "c_layer", "image"}
    parent = next(r for r in runs if "entry" not in r.data.tags)
    assert parent.data.tags["ctc"] == "embedded" and parent.info.status == "FINISHED"


# --------------------------------------------------------------------------- concurrent runs


def _reserve(base: str, queue) -> None:
    queue.put(unique_dir(base))


def test_run_folders_named_in_the_same_second_are_distinct(tmp_path):
    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_reserve, args=(base, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    assert got == sorted([base, f"{base}_1", f"{base}_2", f"{base}_3"])


def test_two_runs_started_together_keep_their_own_folders_and_share_a_fresh_mlflow_store(tmp_path, data_root):
    """A run and a Hydra multirun name their folders after the same second (a fixed name stands in for it) and log
    into one new SQLite store at the same time: two folders (the multirun's jobs in one), each holding its own
    results, three finished MLflow runs, and a store that still opens."""
    db = tmp_path / "mlflow.db"
    same = "${vcm_eval.unique_dir:" + f"{tmp_path}/runs/same" + "}"
    tracking = ["tracking=mlflow", f"tracking.tracking_uri=sqlite:///{db}",
                f"tracking.artifact_location=file://{tmp_path}/mlartifacts"]
    commands = [[*overrides(tmp_path, data_root, *tracking), f"hydra.run.dir={same}"],
                ["-m", *overrides(tmp_path, data_root, *tracking), "ctc.num_images=1,2", f"hydra.sweep.dir={same}"]]
    procs = [subprocess.Popen([sys.executable, "-m", "vcm_eval", *args], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "WARNING: MLflow" not in err
    folders = sorted((tmp_path / "runs").iterdir())
    assert [f.name for f in folders] == ["same", "same_1"]
    tables = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("per_image.csv"))
    single, multi = ("same", "same_1") if "same/per_image.csv" in tables else ("same_1", "same")
    assert tables == sorted([f"{single}/per_image.csv", f"{multi}/0/per_image.csv", f"{multi}/1/per_image.csv"])
    images = [len(pd.read_csv(tmp_path / "runs" / t).query("entry == 'uncompressed'")) for t in
              (f"{single}/per_image.csv", f"{multi}/0/per_image.csv", f"{multi}/1/per_image.csv")]
    assert images == [2, 1, 2]

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3 and all(r.info.status == "FINISHED" for r in runs)


# --------------------------------------------------------------------------- signals


def _start_slow_run(tmp_path: Path, data_root: Path, executor: str) -> subprocess.Popen:
    settings = [o for o in overrides(tmp_path, data_root) if not o.startswith(("executor=", "codec._target_="))]
    command = [sys.executable, "-m", "vcm_eval", *settings, f"executor={executor}", "executor.workers=2",
               "codec._target_=fakes.SlowCodec", "+codec.delay=0.5", f"hydra.run.dir={tmp_path}/run1"]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen, count: int = 1) -> None:
    """Until ``count`` files match under ``path`` (the sweep is under way), or the run ended by itself."""
    while proc.poll() is None:
        if path.exists() and len(list(path.rglob(pattern))) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run ended before the signal: {proc.communicate()[1][-3000:]}")


@pytest.mark.parametrize(("executor", "signum"), [("pool", signal.SIGTERM), ("dask", signal.SIGTERM)])
def test_a_signal_to_the_driver_stops_its_workers_keeps_finished_work_and_resumes(tmp_path, data_root, clean,
                                                                                  executor, signum):
    import psutil

    proc = _start_slow_run(tmp_path, data_root, executor)
    _wait_for(tmp_path / "store" / "coded", "*.json", proc, count=1)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "no worker processes"
    proc.send_signal(signum)  # to the driver alone, as a batch system's cancel or `kill` sends it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    finished = int(err.split(" of ")[0].rsplit(" ", 1)[-1])
    how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    assert f"vcm_eval: {how}; {finished} of 14 tasks are finished and kept in the store" in err
    assert "run the same command to resume" in err and finished >= 1
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers still running after the driver stopped: {alive}"
    assert rerun(tmp_path, data_root).equals(clean[1])


def test_ctrl_c_counts_what_is_in_the_store_and_the_same_command_resumes(tmp_path, data_root, clean):
    settings = [o for o in overrides(tmp_path, data_root) if not o.startswith("codec._target_=")]
    cfg = compose_cfg(*settings, "codec._target_=fakes.InterruptingCodec", "+codec.after=5")
    with pytest.raises(SweepInterrupted) as info:
        run(cfg, tmp_path / "run")
    store = tmp_path / "store"
    # each finished task left one detection record, or (a feature coding task) one coded record of features
    features = [p for p in store.glob("coded/*/*.json") if "levels" in json.loads(decode_record(p.read_bytes())[1])]
    records_written = len(list(store.glob("detections/*/*.json"))) + len(features)
    assert info.value.total == 14 and info.value.signum == signal.SIGINT
    assert info.value.finished == records_written > 0  # each finished task left one record (extract: with C-layers)
    assert f"{info.value.finished} of 14 tasks are finished and kept in the store" in str(info.value)
    assert rerun(tmp_path, data_root).equals(clean[1])
