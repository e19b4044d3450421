"""docs/results.md is what tools/bd_table.py makes of the committed run outputs, so it cannot go stale."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "bd_table.py"
spec = importlib.util.spec_from_file_location("bd_table", TOOL)
bd_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bd_table)


def test_committed_table_is_the_generated_one():
    assert (REPO / "docs" / "results.md").read_text() == bd_table.render(), \
        "docs/results.md is out of date: run python tools/bd_table.py and commit it"


def test_every_bd_row_of_the_outputs_is_in_the_table():
    text = bd_table.render()
    for folder in sorted(p for p in bd_table.RESULTS.iterdir() if p.is_dir()):
        lines = (folder / "bd.csv").read_text().splitlines()
        rows, _ = bd_table.result_rows(folder)
        assert len(rows) == len(lines) - 1
        for row in rows:
            assert "| " + " | ".join(row) + " |" in text


@pytest.mark.parametrize("name", ["bd.csv", "provenance.json", "report_meta.json", "machine.json"])
def test_a_missing_output_file_is_named(tmp_path, name):
    source = next(p for p in bd_table.RESULTS.iterdir() if p.is_dir())
    results = tmp_path / "results"
    shutil.copytree(source, results / source.name)
    (results / source.name / name).unlink()
    with pytest.raises(bd_table.ResultSetError, match=rf"{source.name}/{name.replace('.', '[.]')}: missing"):
        bd_table.render(results)
    out = subprocess.run([sys.executable, str(TOOL), "--results", str(results), "--out", str(tmp_path / "r.md")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and str(results / source.name / name) in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "r.md").exists()


def test_no_result_sets_is_named(tmp_path):
    with pytest.raises(bd_table.ResultSetError, match="no result sets"):
        bd_table.render(tmp_path / "nowhere")


def test_check_fails_on_a_stale_table(tmp_path):
    stale = tmp_path / "results.md"
    stale.write_text(bd_table.render() + "| hand-copied | c_layer | +1.00 |\n")
    out = subprocess.run([sys.executable, str(TOOL), "--check", "--out", str(stale)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "out of date" in out.stderr
