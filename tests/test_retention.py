"""store.keep_features=until_done: a picture's C-layers are deleted once every task reading them has finished,
results stay those of keep_features=all, an interrupted sweep recomputes C-layers only where work is left,
and tools/plan_sweep.py projects the disk a sweep leaves.

The sweeps use the embedded model on 3 synthetic pictures and the test codecs of ``fakes`` (no codec cost).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vcm_eval
from vcm_eval.cli import run
from vcm_eval.pipeline import Node, Retention, TransientTracker, finished_nodes, stale_transients
from vcm_eval.store import Store

REPO = Path(__file__).resolve().parents[1]
#: summary.csv columns that are measured times, not results
TIMES = ["nn_part_1_s", "encode_s", "decode_s", "nn_part_2_s"]
#: per_image.csv columns that are results
PER_IMAGE = ["image_id", "entry", "qp", "num_bits", "bpp", "num_detections", "psnr_c2", "psnr_c5",
             "topdown_psnr_c2", "topdown_psnr_c5", "psnr_y"]


# --------------------------------------------------------------------------- the driver's bookkeeping


def _graph() -> list[Node]:
    """Two pictures: extract (transient C-layers) -> code -> detect, the detect reading the C-layers too."""
    nodes = []
    for p in ("a", "b"):
        clayers = ("clayers", p, ".npz")
        nodes += [Node(f"extract:{p}", "", print, (), [("detections", p, ".json")], transient=[clayers]),
                  Node(f"code:{p}", "", print, (), [("coded", p, ".json")], [f"extract:{p}"], reads=[clayers]),
                  Node(f"detect:{p}", "", print, (), [("detections", p + "1", ".json")], [f"code:{p}", f"extract:{p}"],
                       reads=[clayers])]
    return nodes


def test_c_layers_count_as_needed_only_while_a_reader_is_unfinished():
    nodes = _graph()
    # picture a: all done and its C-layers deleted; picture b: C-layers deleted but its detection not done
    stored = {("detections", "a", ".json"), ("coded", "a", ".json"), ("detections", "a1", ".json"),
              ("detections", "b", ".json"), ("coded", "b", ".json")}
    done = finished_nodes(nodes, stored.__contains__)
    assert done == {"extract:a", "code:a", "detect:a", "code:b"}  # extract:b runs again, for detect:b
    assert stale_transients(nodes, {"extract:b", "detect:b"}) == [("clayers", "a", ".npz")]


def test_tracker_admits_a_window_of_pictures_and_releases_after_the_last_reader():
    nodes = _graph()
    by_key = {n.key: n for n in nodes}
    tracker = TransientTracker(nodes, {n.key for n in nodes}, window=1)
    assert [tracker.defer(n) for n in nodes] == [True, False, False, True, False, False]
    assert [n.key for n in tracker.admit()] == ["extract:a"] and tracker.admit() == []
    assert tracker.resolve(by_key["extract:a"], ok=True) == []
    assert tracker.resolve(by_key["code:a"], ok=True) == []
    assert tracker.resolve(by_key["detect:a"], ok=True) == [("clayers", "a", ".npz")]
    assert [n.key for n in tracker.admit()] == ["extract:b"]
    # a failed reader frees the slot but keeps the C-layers for the re-run
    tracker.resolve(by_key["extract:b"], ok=True)
    tracker.resolve(by_key["code:b"], ok=False)
    assert tracker.resolve(by_key["detect:b"], ok=False) == [] and tracker.live == 0


def test_retention_config_is_checked():
    assert Retention.of(None) == Retention("all") and Retention.of({"keep_features": "until_done"}).transient
    assert Retention("until_done").window(4) == 64 and Retention("until_done", 3).window(100) == 3
    with pytest.raises(ValueError, match="'none' is what until_done does"):
        Retention.of({"keep_features": "none"})


# --------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def overrides(root: Path, data_root: Path, *extra: str) -> list[str]:
    out = [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={data_root}",
           "executor=local", "progress=false", "dataset.size=4", "ctc.num_images=3", "ctc.qps.features=[30,40]",
           "ctc.qps.image=[30,40]", "bd.min_points=2", "tracking=none", "proposal=compensation",
           "codec._target_=fakes.NoiseCodec", "+codec.amplitude=6", "~codec.preset", "~codec.extra_params"]
    return out + list(extra)


def compose_cfg(*args: str):
    return vcm_eval.compose(*list(args))


def clayer_files(store: Path) -> list[Path]:
    return sorted((store / "clayers").rglob("*.npz")) if (store / "clayers").exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """keep_features=all: the results every other sweep must give, and the store it leaves."""
    root = tmp_path_factory.mktemp("all")
    outcome = run(compose_cfg(*overrides(root, data_root, "store.keep_features=all")), root / "run")
    return outcome, Store(root / "store").disk_usage()


def _same_results(run_dir: Path, reference) -> None:
    """summary.csv equal to the last bit in every column but the measured times; per_image.csv's results too."""
    outcome, _ = reference
    summary = pd.read_csv(run_dir / "summary.csv")
    expected = pd.read_csv(outcome.files["summary"])
    columns = [c for c in expected.columns if c not in TIMES]
    pd.testing.assert_frame_equal(summary[columns], expected[columns], check_exact=True)
    per_image = pd.read_csv(run_dir / "per_image.csv")
    expected = pd.read_csv(outcome.files["per_image"])
    pd.testing.assert_frame_equal(per_image[PER_IMAGE], expected[PER_IMAGE], check_exact=True)


def test_until_done_gives_the_results_of_all_and_keeps_no_c_layers(tmp_path, data_root, reference):
    cfg = compose_cfg(*overrides(tmp_path, data_root, "store.keep_features=until_done", "store.pictures_in_flight=1"))
    run(cfg, tmp_path / "run")
    _same_results(tmp_path / "run", reference)
    assert clayer_files(tmp_path / "store") == []
    usage, expected = Store(tmp_path / "store").disk_usage(), reference[1]
    assert expected["clayers"] > 0 and usage.get("clayers", 0) == 0
    for kind in ("bitstreams", "coded", "detections"):  # the same objects (records differ in their timings)
        assert usage[kind] == pytest.approx(expected[kind], rel=0.01), kind


@pytest.mark.parametrize("executor", ["pool", "dask"])
def test_until_done_on_worker_processes_gives_the_results_of_all(tmp_path, data_root, reference, executor):
    """Workers only compute; the driver deletes, when it learns that a picture's last reader finished."""
    if executor == "dask":
        pytest.importorskip("distributed")
    cfg = compose_cfg(*overrides(tmp_path, data_root, "store.keep_features=until_done", "store.pictures_in_flight=2",
                                 f"executor={executor}", "executor.workers=2"))
    run(cfg, tmp_path / "run")
    _same_results(tmp_path / "run", reference)
    assert clayer_files(tmp_path / "store") == []


def test_failed_pictures_keep_their_c_layers_and_free_their_place(tmp_path, data_root):
    """A codec failing on every picture: each picture's slot is freed when its tasks have failed, so the one
    picture in flight does not stall the sweep, and every picture keeps its C-layers for the re-run."""
    from vcm_eval.pipeline import SweepError

    cfg = compose_cfg(*overrides(tmp_path, data_root, "proposal=none", "anchor=[c_layer]", "+codec.fail_on=c3",
                                 "codec._target_=fakes.FailingCodec", "~codec.amplitude",
                                 "store.keep_features=until_done", "store.pictures_in_flight=1"))
    with pytest.raises(SweepError, match="encoder crashed on image"):
        run(cfg, tmp_path / "run")
    assert len(clayer_files(tmp_path / "store")) == 3


def test_a_new_entry_after_an_until_done_run_recomputes_the_c_layers(tmp_path, data_root, reference):
    """The anchor alone first: its C-layers are gone when it ends. Adding the proposal then needs them again:
    every picture's extract task runs although its uncompressed detections are stored."""
    first = run(compose_cfg(*overrides(tmp_path, data_root, "proposal=none", "store.keep_features=until_done")),
                tmp_path / "anchor")
    assert clayer_files(tmp_path / "store") == [] and first.per_image["computed_now"].all()
    outcome = run(compose_cfg(*overrides(tmp_path, data_root, "store.keep_features=until_done")), tmp_path / "run")
    _same_results(tmp_path / "run", reference)
    rows = outcome.per_image
    assert rows.loc[rows["entry"] == "uncompressed", "computed_now"].all()  # re-extracted
    assert not rows.loc[rows["entry"].isin(["c_layer", "image"]), "computed_now"].any()  # reused as they were
    assert rows.loc[rows["entry"] == "compensation", "computed_now"].all()
    assert clayer_files(tmp_path / "store") == []


def test_killed_until_done_sweep_resumes_and_recomputes_c_layers_only_for_unfinished_pictures(
        tmp_path, data_root, reference):
    """One picture in flight; the codec SIGKILLs the driver (executor=local) in the middle of the second picture.
    Then the first picture is done and its C-layers deleted, the second holds its C-layers, the third has none.
    The same command resumes: nothing finished is redone, no C-layers are recomputed (the first picture has no
    work left, the second's are there), and the results are those of keep_features=all."""
    from fakes import encoded_frames

    kills = tmp_path / "kills"
    # 6 image-anchor encodes run first (they need no C-layers), then 14 per picture: 8 C-layer anchor + 6
    # compensated (the coarsest level is the anchor's bitstream); 27 finished encodes is mid picture 2
    args = overrides(tmp_path, data_root, "store.keep_features=until_done", "store.pictures_in_flight=1",
                     "codec._target_=fakes.KillingCodec", f"+codec.folder={kills}", "+codec.after=27")
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "vcm_eval", *args, f"hydra.run.dir={tmp_path}/run1"]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    store = tmp_path / "store"
    assert len(clayer_files(store)) == 1  # the window: only the picture in flight holds C-layers
    coded_before = encoded_frames(kills)

    command[-1] = f"hydra.run.dir={tmp_path}/run2"
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    _same_results(tmp_path / "run2", reference)
    assert clayer_files(store) == []
    coded = encoded_frames(kills)
    assert len(coded) == len(set(coded)) > len(coded_before)  # no picture coded twice
    per_image = pd.read_csv(tmp_path / "run2" / "per_image.csv")
    extracted_now = per_image.loc[per_image["entry"] == "uncompressed", "computed_now"].tolist()
    assert extracted_now == [False, False, True]  # only the picture never started


# --------------------------------------------------------------------------- the plan's disk projection


def _plan_sweep():
    spec = importlib.util.spec_from_file_location("plan_sweep", REPO / "tools" / "plan_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plan_sweep_disk_projection_matches_what_a_run_leaves(tmp_path, data_root, reference):
    """The plan codes its sample at one QP and projects every kind of the store; the run of the same tiny CTC
    (keep_features=all) left within 20 % of it. The sample is the CTC's three pictures: detections of a
    smaller sample would differ by how many objects its pictures hold."""
    report = tmp_path / "plan.json"
    args = [a for a in overrides(tmp_path, data_root) if not a.startswith(("executor=", "progress=", "tracking="))]
    assert _plan_sweep().main([*args, "store.pictures_in_flight=2", "--sample-images", "3", "--disk-qps", "all",
                               "--workers", "1", "--json", str(report)]) == 0
    plan = json.loads(report.read_text())
    outcome, stored = reference
    store = outcome.out_dir.parent / "store"
    projected = plan["disk_bytes"]["all"]
    for kind in ("clayers", "bitstreams", "coded", "detections"):
        assert projected[kind]["final"] == pytest.approx(stored[kind], rel=0.2), kind
    assert projected["total"]["final"] == pytest.approx(sum(stored.values()), rel=0.2)
    until_done = plan["disk_bytes"]["until_done"]["1"]
    assert until_done["clayers"] == {"peak": pytest.approx(2 / 3 * stored["clayers"], rel=0.2), "final": 0.0}
    files = {kind: len([p for p in (store / kind).rglob("*") if p.is_file()]) for kind in stored}
    assert plan["files_per_picture"] == pytest.approx({kind: n / 3 for kind, n in files.items()})
    assert plan["memory_per_worker_bytes"] > 0
    # without a model, from the run's own C-layer files: the coding tasks alone, no detections
    clayer_files = sorted((tmp_path / "ref-store" / "clayers").rglob("*.npz")) or sorted(store.rglob("*.npz"))
    assert clayer_files, "the reference run kept its C-layers (keep_features=all)"
    no_model = tmp_path / "no_model.json"
    assert _plan_sweep().main([*args, "--clayers", *map(str, clayer_files), "--disk-qps", "all", "--workers", "1",
                               "--json", str(no_model)]) == 0
    from_files = json.loads(no_model.read_text())["disk_bytes"]["all"]
    assert from_files["detections"]["final"] is None
    for kind in ("clayers", "coded"):
        assert from_files[kind]["final"] == pytest.approx(stored[kind], rel=0.2), kind


# --------------------------------------------------------------------------- C-layers in worker memory


def test_feature_memory_keeps_the_most_recent_pictures_within_its_budget(tmp_path):
    from vcm_eval.pipeline import FeatureMemory

    store = Store(tmp_path / "store")
    pictures = {name: {"c2": np.full((4, 8, 8), i, np.float32)} for i, name in enumerate("abc")}  # 1 KiB each
    for name, arrays in pictures.items():
        store.write_arrays("clayers", name, arrays)
    memory = FeatureMemory(max_bytes=2 * 1024)
    got = memory.load(store, "a")
    got["c2"][:] = 99  # a task writing into its input changes nothing stored or remembered
    assert memory.load(store, "a")["c2"].max() == 0 and (memory.store_reads, memory.memory_hits) == (1, 1)
    memory.load(store, "b")
    memory.load(store, "a")  # a is now the most recent: c evicts b
    memory.keep(store, "c", pictures["c"])
    memory.load(store, "b")
    assert (memory.store_reads, memory.memory_hits) == (3, 2)
    memory.resize(0)
    memory.load(store, "c")
    assert memory.store_reads == 4


@pytest.mark.parametrize("value", ["-5", "lots"])
def test_a_wrong_feature_memory_budget_is_a_clear_error_before_any_work(tmp_path, data_root, value):
    with pytest.raises(ValueError, match="store.feature_memory_mb=.*use a size in MB"):
        run(compose_cfg(*overrides(tmp_path, data_root, f"store.feature_memory_mb={value}")), tmp_path / "run")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))
    # the planning tool refuses it too, before it builds anything
    plan = _plan_sweep()

    def too_late(*_args, **_kwargs):
        raise AssertionError("plan_sweep built an object before it checked the store settings")

    plan.build = too_late
    args = [a for a in overrides(tmp_path, data_root) if not a.startswith(("executor=", "progress=", "tracking="))]
    with pytest.raises(ValueError, match="store.feature_memory_mb=.*use a size in MB"):
        plan.main([*args, f"store.feature_memory_mb={value}", "--sample-images", "1"])


def test_a_store_whose_temporaries_cannot_be_cleaned_still_gives_the_report(tmp_path, data_root, reference,
                                                                             monkeypatch, caplog):
    def refused(self, older_than_s):
        raise PermissionError(13, "Permission denied", str(self.url))

    monkeypatch.setattr(Store, "remove_stale_temporaries", refused)
    outcome = run(compose_cfg(*overrides(tmp_path, data_root)), tmp_path / "run")
    assert (outcome.out_dir / "summary.csv").exists() and len(outcome.summary) == len(reference[0].summary)
    assert "could not look for temporaries" in caplog.text


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_wrong_temporaries_age_is_a_clear_error_before_any_work(tmp_path, data_root, value):
    with pytest.raises(ValueError, match="store.stale_temporaries_s=.*age in seconds"):
        run(compose_cfg(*overrides(tmp_path, data_root, f"store.stale_temporaries_s={value}")), tmp_path / "run")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))


def test_worker_memory_reads_each_picture_about_once_per_worker_with_the_same_results(
        tmp_path, data_root, reference, caplog):
    """Pool workers keep the C-layers they read; with store.feature_memory_mb=0 every task reads the store.
    Both give the results of the reference sweep; with memory, a picture is read at most once per worker."""
    import logging

    loads = {}
    for budget in (0, 512):
        caplog.clear()
        cfg = compose_cfg(*overrides(tmp_path / str(budget), data_root, "executor=pool", "executor.workers=2",
                                     f"store.feature_memory_mb={budget}"))
        with caplog.at_level(logging.INFO, logger="vcm_eval.pipeline"):
            run(cfg, tmp_path / str(budget) / "run")
        _same_results(tmp_path / str(budget) / "run", reference)
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("C-layers: "))
        loads[budget] = [int(w) for w in line.replace("(", " ").split() if w.isdigit()]
    total, pictures, store_reads, memory_hits = loads[0]
    assert pictures == 3 and store_reads == total and memory_hits == 0  # 2 entries x 2 QPs x (code + detect) each
    assert total == 3 * 2 * 2 * 2
    total, pictures, store_reads, memory_hits = loads[512]
    assert total == 3 * 2 * 2 * 2 and store_reads <= 2 * 3 and memory_hits == total - store_reads
