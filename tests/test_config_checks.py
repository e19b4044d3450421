"""Settings of the wrong type or range are one line naming the key, before any work (issue 23, item 9)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import vcm_eval
from vcm_eval.cli import build_entries, run
from vcm_eval.codecs.base import CodecError
from vcm_eval.codecs.x265 import X265Codec
from vcm_eval.config_checks import ConfigError, check_config, check_rate_points
from vcm_eval.pipeline import SweepError
from vcm_eval.types import Frame


def compose_cfg(*overrides: str):
    return vcm_eval.compose(*list(overrides))


def test_the_default_configurations_pass():
    for proposal in ("none", "compensation", "klt_search", "learned_fusion"):
        cfg = compose_cfg(f"proposal={proposal}")
        check_config(cfg)
        check_rate_points([spec.entry for spec in build_entries(cfg)], X265Codec())


@pytest.mark.parametrize(("override", "key", "fix"), [
    ("ctc.num_images=abc", "ctc.num_images='abc'", "whole number of pictures"),
    ("ctc.num_images=0", "ctc.num_images=0", "whole number of pictures"),
    ("ctc.qps.features=[abc]", "ctc.qps.features=['abc']", "whole-number QPs"),
    ("ctc.qps.image=[30.5,40]", "ctc.qps.image=[30.5, 40]", "whole-number QPs"),
    ("executor.workers=-1", "executor.workers=-1", "worker processes"),
    ("executor.workers=two", "executor.workers='two'", "worker processes"),
    ("model_threads=0", "model_threads=0", "torch threads"),
    ("bd.min_points=x", "bd.min_points='x'", "points >= 2"),
    ("bd.min_overlap=2", "bd.min_overlap=2", "fraction between 0 and 1"),
    ("fail_fast=maybe", "fail_fast='maybe'", "true or false"),
    ("store.pictures_in_flight=-3", "store.pictures_in_flight=-3", "pictures >= 1"),
])
def test_a_wrong_value_names_its_key_and_the_fix(override, key, fix):
    with pytest.raises(ConfigError) as info:
        check_config(compose_cfg(override))
    message = str(info.value)
    assert message.startswith(key + ":") and fix in message and "\n" not in message


@pytest.mark.parametrize(("override", "key"), [
    ("anchor.c_layer.rate_points=${ctc.qps.nope}", "anchor.c_layer.rate_points"),
    ("ctc.qps.image=[39,${nope}]", "ctc.qps.image"),
])
def test_an_interpolation_that_fails_names_its_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: cannot be resolved \(InterpolationKeyError"):
        check_config(compose_cfg(override))


def test_qp_offsets_of_the_wrong_type_name_the_entry_key():
    with pytest.raises(ConfigError, match=r"^anchor\.c_layer\.qp_offsets=\{'c5': 'abc'\}: use whole-number QP offsets"):
        check_config(compose_cfg("+anchor.c_layer.qp_offsets={c5:abc}"))
    check_config(compose_cfg("+anchor.c_layer.qp_offsets={c5:-3}"))


def test_encode_refuses_a_qp_with_the_range_the_checks_read():
    picture = Frame.gray(np.full((64, 64), 512, np.uint16))
    with pytest.raises(CodecError, match=r"^x265: QP 52 of img1 is outside 0\.\.51$"):
        X265Codec().encode(picture, 52, label="img1")

    class Narrow(X265Codec):
        qp_range = (30, 40)

    with pytest.raises(CodecError, match=r"outside 30\.\.40"):
        Narrow().encode(picture, 41)
    with pytest.raises(ConfigError, match=r"outside x265's range 30\.\.40"):
        check_rate_points([spec.entry for spec in build_entries(compose_cfg("anchor=[c_layer]"))], Narrow())


def test_a_qp_outside_the_codec_range_is_refused_before_any_work(tmp_path):
    cfg = compose_cfg(f"paths.output_root={tmp_path}", f"paths.store={tmp_path}/store",
                      f"paths.data_root={tmp_path}/data", "ctc.qps.features=[30,60]", "tracking=none")
    with pytest.raises(ConfigError, match=r"^c_layer: QP 60 is outside x265's range 0\.\.51"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "data").exists() and not (tmp_path / "store").exists()  # nothing was made
    offsets = compose_cfg("ctc.qps.features=[30,50]", "anchor=[c_layer]", "+anchor.c_layer.qp_offsets={c5:3}")
    with pytest.raises(ConfigError, match=r"QP 53 \(rate point 50 \+3 for c5\) is outside"):
        check_rate_points([spec.entry for spec in build_entries(offsets)], X265Codec())


def test_the_learned_entry_rate_points_are_checkpoints_not_codec_qps():
    cfg = compose_cfg("proposal=learned_fusion", "anchor=[c_layer]")
    entries = [spec.entry for spec in build_entries(cfg)]
    assert [e.codec_qps for e in entries] == [True, False]
    check_rate_points(entries, X265Codec())


def test_the_failure_count_leaves_out_the_dependents_line():
    error = SweepError([("image 1 / c_layer / QP 30: coding", "CodecError: crashed")], "/store", not_run=3)
    assert str(error).startswith("1 task(s) of the sweep failed:")
    assert "(3 dependent task(s) not run because of the failures above)" in str(error)
