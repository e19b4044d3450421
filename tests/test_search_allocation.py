"""tools/search_allocation.py on a 4-picture tuning set: finishes, writes a proposal that the CLI runs, and never
reads a CTC picture."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import vcm_eval
from vcm_eval.cli import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import search_allocation  # noqa: E402


def small(root: Path) -> list[str]:
    return [f"paths.output_root={root}", f"paths.store={root}/store", f"paths.data_root={root}/data",
            "executor=local", "dataset.size=4", "ctc.qps.features=[32,38,44]", "bd.min_points=3"]


def test_search_writes_a_runnable_proposal_from_tuning_pictures_only(tmp_path, capsys):
    conf = tmp_path / "conf" / "proposal"
    code = search_allocation.main([*small(tmp_path), "--images", "4", "--name", "tiny_search", "--rounds", "1",
                                   "--coordinates", "offsets,span", "--grid", "offset=0,-4", "--grid", "shift=0,2",
                                   "--grid", "step=3",
                                   "--out", str(conf / "tiny_search.yaml")])
    assert code == 0
    out = capsys.readouterr().out
    assert "round 1, offset:c2" in out and "span (" in out and "best:" in out
    # only the tune split was generated: no CTC (val) picture was made or read
    generated = sorted(p.name for p in (tmp_path / "data" / "synthetic").glob("*/*"))
    assert generated == ["tune-4"], generated
    table = pd.read_csv(conf / "tiny_search.search.csv")
    assert len(table) >= 5 and {"candidate", "bd_rate", "bpp", "map", "coverage"} <= set(table.columns)
    body = yaml.safe_load((conf / "tiny_search.yaml").read_text())["tiny_search"]
    assert body["_target_"] == "proposals.feature_chain.FeatureChainEntry" and body["name"] == "tiny_search"
    assert body["rate_points"].startswith("${vcm_eval.shifted_qps:${ctc.qps.features},")  # follows the CTC's QPs
    assert "tuning" not in body  # the header is a comment
    assert (conf / "tiny_search.yaml").read_text().startswith("# Found by tools/search_allocation.py")

    # the written file is a proposal the CLI accepts (found through Hydra's search path)
    cfg = vcm_eval.compose(*[
        *small(tmp_path), "ctc.num_images=2", "dataset.size=2", "anchor=[c_layer]", "proposal=tiny_search",
        "tracking=none", "progress=false", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    outcome = run(cfg, tmp_path / "ctc_run")
    assert set(outcome.summary["entry"]) == {"uncompressed", "c_layer", "tiny_search"}


def test_search_refuses_the_ctc_pictures(tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        search_allocation.main([*small(tmp_path), "dataset.split=val", "--images", "2"])
    assert excinfo.value.code == 2


def test_coordinates_set_and_read_back():
    spec = {"_target_": "anchors.c_layer.CLayerAnchor", "levels": ["c5", "c4", "c3", "c2"]}
    s = search_allocation.set_option(spec, "components:c2", 12)
    assert s["transform"] == {"kind": "klt", "basis": "embedded", "components": {"c2": 12}}
    s = search_allocation.set_option(s, "offset:c3", -2)
    s = search_allocation.set_option(s, "range", ("percentile", 0.1, 99.9))
    s = search_allocation.set_option(s, "downsample:c2", 2)
    for coordinate, value in (("components:c2", 12), ("offset:c3", -2), ("range", ("percentile", 0.1, 99.9)),
                              ("downsample:c2", 2), ("offset:c2", 0), ("shift", 0)):
        assert search_allocation.current_value(s, coordinate) == value
    assert search_allocation.set_option(s, "offset:c3", 0)["qp_offsets"] is None
    node = search_allocation.entry_node(search_allocation.set_option(s, "shift", 2), "x", [36, 40])
    assert node["rate_points"] == [38, 42] and "_shift" not in node and node["_target_"]
    stepped = search_allocation.set_option(search_allocation.set_option(s, "shift", 2), "step", 3)
    assert search_allocation.entry_node(stepped, "x", [36, 38, 40])["rate_points"] == [38, 41, 44]
    assert search_allocation.coverage(0.6, 0.9, 0.75, 0.95) == 0.5
    with pytest.raises(ValueError, match="--grid"):
        search_allocation.parse_grid(["range=1,2"])


def test_the_searched_entry_follows_the_qps_of_the_ctc_that_runs_it():
    embedded_qps = list(vcm_eval.compose("proposal=klt_search").proposal.klt_search.rate_points)
    assert embedded_qps == [34, 37, 40, 43, 46]  # what the search chose on the embedded CTC: first QP - 2, step 3
    paper = vcm_eval.compose("proposal=klt_search", "ctc=paper")
    assert list(paper.proposal.klt_search.rate_points) == [q - 2 + 3 * i for i, q in
                                                           enumerate([paper.ctc.qps.features[0]] * 5)]
    assert search_allocation.shifted_qps([36, 40], 2) == [38, 42]
    with pytest.raises(ValueError, match="whole-number"):
        search_allocation.shifted_qps(["abc"], 2)
