"""tools/rebuild_report.py on damaged run folders: every damage is one line naming the file and what to do (rc 1),
never a traceback and never a report built from a truncated table; an undamaged folder rebuilds identically.

The run folders are written by ``write_reports`` from the synthetic tables of test_reporting (nothing is swept).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from test_reporting import META, fake_tables

from vcm_eval.reporting import report
from vcm_eval.reporting.report import write_reports

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "rebuild_report.py"
spec = importlib.util.spec_from_file_location("rebuild_report", TOOL)
rebuild_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rebuild_report)

#: the files of a run folder a rebuild compares: every CSV, the spreadsheet and the metadata
COMPARED = ("per_image.csv", "summary.csv", "bd.csv", "report_meta.json", "ctc/c_layer/final_synthetic-val.csv",
            "ctc/compensation/final_synthetic-val.csv", "ctc_embedded_synthetic-val.xlsx")


def write_run_folder(folder: Path) -> Path:
    per_image, summary = fake_tables()
    write_reports(folder, per_image, summary, META)
    return folder


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run_folder(tmp_path / "run")


def rebuild(capsys, *argv: str) -> tuple[int, str]:
    """Run the tool in this process (an uncaught exception fails the test); its exit status and stderr."""
    rc = rebuild_report.main(list(argv))
    return rc, capsys.readouterr().err


def assert_names_file_and_fix(err: str, path: Path, *problem: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rebuild_report: error: {path}: "), err
    assert "--mlflow-run" in lines[0] and "command again" in lines[0], err
    for words in problem:
        assert words in lines[0], err


# --- damages: each rewrites one file of the folder -----------------------------------------------------------------

def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def not_utf8(path: Path) -> None:  # otherwise intact: a Latin-1 é in an entry name
    path.write_bytes(path.read_bytes().replace(b"c_layer", b"c_l\xe9yer", 1))


def edit_meta(**changes: object) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data, indent=1))
    return damage


def keep_lines(count: int) -> Callable[[Path], None]:  # truncated at a line end: parses, rows (QPs) missing
    def damage(path: Path) -> None:
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:count]))
    return damage


def cut_bytes(path: Path) -> None:  # truncated in the middle of a row
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])


def drop_column(name: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[name]).to_csv(path, index=False)
    return damage


META_DAMAGES = {
    "random-bytes": (random_bytes, "not UTF-8"),
    "empty": (empty, "empty"),
    "not-utf8": (not_utf8, "not UTF-8"),
    "truncated-json": (cut_bytes, "not valid JSON"),
    "empty-object": (lambda p: p.write_text("{}"), "lacks field(s) ctc, dataset, model, codec, metric"),
    "a-list": (lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    "anchors-a-string": (edit_meta(anchors="c_layer"), "anchors must be list[str]"),
    "min-points-a-string": (edit_meta(bd_min_points="2"), "bd_min_points must be int"),
    "config-not-strings": (edit_meta(config={"ctc.name": 3}), "config must be dict[str, str]"),
    "finished-not-a-time": (edit_meta(finished="yesterday"), "field finished"),
    "tables-rows-a-string": (edit_meta(tables={"per_image.csv": {"rows": "18", "sha256": "0" * 64},
                                                "summary.csv": {"rows": 9, "sha256": "0" * 64}}), "field tables"),
    "unknown-field": (edit_meta(colour="red"), "unknown field(s) colour"),
}

TABLE_DAMAGES = {
    "random-bytes": (random_bytes, "not UTF-8"),
    "empty": (empty, "empty"),
    "not-utf8": (not_utf8, "not UTF-8"),
    "header-and-two-rows": (keep_lines(3), "has 2 rows where report_meta.json records"),
    "cut-mid-row": (cut_bytes, ""),
    "entry-column-missing": (drop_column("entry"), "lacks column(s) entry"),
}


@pytest.mark.parametrize("damage,problem", META_DAMAGES.values(), ids=META_DAMAGES.keys())
def test_damaged_report_meta_is_one_line_naming_it(run_dir, tmp_path, capsys, damage, problem):
    damage(run_dir / "report_meta.json")
    rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert rc == 1
    assert_names_file_and_fix(err, run_dir / "report_meta.json", problem)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["summary.csv", "per_image.csv"])
@pytest.mark.parametrize("damage,problem", TABLE_DAMAGES.values(), ids=TABLE_DAMAGES.keys())
def test_damaged_table_is_one_line_naming_it(run_dir, tmp_path, capsys, name, damage, problem):
    damage(run_dir / name)
    rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert rc == 1
    assert_names_file_and_fix(err, run_dir / name, problem)
    assert not (tmp_path / "out").exists()


def test_a_missing_table_is_named(run_dir, tmp_path, capsys):
    (run_dir / "summary.csv").unlink()
    rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert rc == 1
    assert_names_file_and_fix(err, run_dir, "missing summary.csv")


def test_damage_in_place_leaves_the_folder_as_it_was(run_dir, capsys):
    keep_lines(4)(run_dir / "summary.csv")
    before = {name: (run_dir / name).read_bytes() for name in COMPARED}
    rc, err = rebuild(capsys, str(run_dir))
    assert rc == 1 and "summary.csv: has 3 rows where report_meta.json records 9" in err
    assert {name: (run_dir / name).read_bytes() for name in COMPARED} == before


def test_the_tool_prints_no_traceback(run_dir, tmp_path):
    """As a user runs it: a subprocess, whose stderr is the one line."""
    (run_dir / "report_meta.json").write_text("{}")
    done = subprocess.run([sys.executable, str(TOOL), str(run_dir), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith(f"rebuild_report: error: {run_dir / 'report_meta.json'}: lacks field(s) ctc")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_undamaged_folder_rebuilds_identical_files(run_dir, tmp_path, capsys):
    rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert (rc, err) == (0, "")
    for name in COMPARED:
        assert (tmp_path / "out" / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_report_meta_records_each_table(run_dir):
    meta = json.loads((run_dir / "report_meta.json").read_text())
    per_image, summary = fake_tables()
    assert {name: facts["rows"] for name, facts in meta["tables"].items()} == {
        "per_image.csv": len(per_image), "summary.csv": len(summary)}


def test_a_failure_while_writing_the_spreadsheet_leaves_what_a_rebuild_needs(tmp_path, monkeypatch, capsys):
    """A full disk while the workbook is written: the tables and report_meta.json are already complete, and the
    rebuild writes every file as an undisturbed run does."""
    clean = write_run_folder(tmp_path / "clean")

    def disk_full(path, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(report, "write_workbook", disk_full)
        with pytest.raises(OSError):
            write_run_folder(tmp_path / "full")
    rc, _ = rebuild(capsys, str(tmp_path / "full"))
    assert rc == 0
    for name in COMPARED:
        assert (tmp_path / "full" / name).read_bytes() == (clean / name).read_bytes(), name


def _as_older_vcm_eval(run_dir: Path) -> None:
    """report_meta.json as vcm_eval wrote it before the table facts (and the saturation tolerance) existed."""
    path = run_dir / "report_meta.json"
    data = json.loads(path.read_text())
    del data["tables"], data["bd_saturation_tolerance"]
    path.write_text(json.dumps(data, indent=1))


def test_an_older_folder_rebuilds_with_a_warning(run_dir, tmp_path, capsys, caplog):
    _as_older_vcm_eval(run_dir)
    with caplog.at_level(logging.WARNING, logger="vcm_eval.reporting.report"):
        rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert (rc, err) == (0, "")
    assert any("report_meta.json" in r.getMessage() and "complete" in r.getMessage() for r in caplog.records)
    for name in set(COMPARED) - {"report_meta.json"}:  # which now records the tables
        assert (tmp_path / "out" / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_an_older_folder_is_checked_for_its_columns(run_dir, tmp_path, capsys):
    _as_older_vcm_eval(run_dir)
    drop_column("avg_bpp")(run_dir / "summary.csv")
    rc, err = rebuild(capsys, str(run_dir), "--out", str(tmp_path / "out"))
    assert rc == 1
    assert_names_file_and_fix(err, run_dir / "summary.csv", "lacks column(s) avg_bpp")


def test_damaged_mlflow_copy_names_the_run(run_dir, tmp_path, capsys):
    pytest.importorskip("mlflow")
    from vcm_eval.reporting.mlflow_sink import log_run

    per_image, summary = fake_tables()
    keep_lines(5)(run_dir / "summary.csv")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = log_run(tracking_uri=uri, experiment="rebuild-damage", run_name="damaged", params={}, tags={},
                     summary=report.normalise(summary), bd=pd.DataFrame(), metric_columns=["map_50"],
                     artifact_dir=run_dir, artifact_location=f"file://{tmp_path}/mlartifacts")
    rc, err = rebuild(capsys, "--mlflow-run", run_id, "--tracking-uri", uri, "--out", str(tmp_path / "out"))
    assert rc == 1
    error = err.strip().splitlines()[-1]  # after MLflow's own messages (database set-up, download progress)
    assert error.startswith(f"rebuild_report: error: MLflow run {run_id}/summary.csv: has 4 rows"), err
    assert "command again" in error and "--mlflow-run" not in error
