"""The video CTC: sequence coding under AI/LD/RA (x265 through PyAV; any codec All-Intra), the C-layer anchor, the
compensation and the image anchor on sequences, the MOT and SFU-HW readers on stand-in files, the synthetic video
set, and a whole ctc=embedded_video run (kbps, per-sequence and per-class BD, tracking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_entries import make_features

import vcm_eval
from anchors.c_layer import CLayerAnchor
from anchors.image import ImageAnchor
from proposals.compensation import CompensationProposal
from vcm_eval.codecs import LosslessCodec
from vcm_eval.codecs.base import CodecError, CodingCondition, FrameSpec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.codecs.x265 import X265Codec
from vcm_eval.data.sequences import MotSequences, SfuHwSequences
from vcm_eval.data.synthetic_video import generate_sequence
from vcm_eval.errors import MissingInputError, SettingError
from vcm_eval.evaluation.sequences import kilobits_per_second
from vcm_eval.store import Store
from vcm_eval.types import Frame


def moving_frames(n: int = 12, shape: tuple[int, int] = (48, 64)) -> list[Frame]:
    rng = np.random.default_rng(3)
    base = (rng.random((shape[0], shape[1] + n)) * 1023).astype(np.uint16)
    return [Frame.gray(np.ascontiguousarray(base[:, i:i + shape[1]]), 10) for i in range(n)]


def test_conditions_are_checked_and_ai_has_period_one():
    assert CodingCondition("AI", 64).intra_period == 1
    with pytest.raises(SettingError, match="mode='XX'"):
        CodingCondition("XX")
    with pytest.raises(SettingError, match="intra_period=0"):
        CodingCondition("LD", 0)


@pytest.mark.parametrize("mode", ["AI", "LD", "RA"])
def test_x265_codes_a_sequence_under_each_condition(mode):
    frames = moving_frames()
    codec = X265Codec(preset="ultrafast")
    coded = codec.encode_sequence(frames, 30, CodingCondition(mode, 8, 25.0))
    assert len(coded.frame_bits) == len(frames) and sum(coded.frame_bits) == 8 * len(coded.bitstream)
    decoded = codec.decode_sequence(coded.bitstream, FrameSpec(48, 64), len(frames))
    error = np.mean([np.abs(d.luma.astype(float) - f.luma) for d, f in zip(decoded, frames)])
    assert error < 40  # a lossy but faithful reconstruction of 10-bit noise at QP 30
    assert "keyint=1" in coded.command[0] if mode == "AI" else "keyint=8" in coded.command[0]
    with pytest.raises(CodecError, match="truncated or corrupt"):
        codec.decode_sequence(coded.bitstream[: len(coded.bitstream) // 2], FrameSpec(48, 64), len(frames))


def test_inter_coding_spends_fewer_bits_than_intra_on_a_moving_picture():
    frames, codec = moving_frames(16), X265Codec(preset="ultrafast")
    bits = {m: sum(codec.encode_sequence(frames, 32, CodingCondition(m, 16)).frame_bits) for m in ("AI", "LD", "RA")}
    assert bits["LD"] < 0.7 * bits["AI"] and bits["RA"] < 0.7 * bits["AI"], bits


def test_a_codec_without_inter_coding_codes_all_intra_only_and_says_so():
    frames, codec = moving_frames(3), LosslessCodec()
    coded = codec.encode_sequence(frames, 30, CodingCondition("AI"))
    decoded = codec.decode_sequence(coded.bitstream, FrameSpec(48, 64), 3)
    assert all(np.array_equal(d.luma, f.luma) for d, f in zip(decoded, frames))
    with pytest.raises(CodecError, match=r"\(All-Intra only\); use codec=x265"):
        codec.encode_sequence(frames, 30, CodingCondition("LD", 8))
    with pytest.raises(CodecError, match="2 whole pictures, expected 3"):
        codec.decode_sequence(coded.bitstream[:-5], FrameSpec(48, 64), 3)


def test_cached_sequences_are_coded_once_and_a_damaged_one_is_coded_again(tmp_path):
    store = Store(tmp_path / "store")
    coder = CachedCodec(X265Codec(preset="ultrafast"), store)
    frames, condition = moving_frames(6), CodingCondition("LD", 4)
    first = coder.encode_sequence(frames, 34, condition)
    again = coder.encode_sequence(frames, 34, condition)
    assert not first.from_cache and again.from_cache and again.frame_bits == first.frame_bits
    assert coder.encode_sequence(frames, 34, CodingCondition("RA", 4)).key != first.key
    path = Path(store.path("bitstreams", first.key, ".bin"))
    path.write_bytes(path.read_bytes()[:-10])
    healed = coder.encode_sequence(frames, 34, condition)
    assert not healed.from_cache and healed.frame_bits == first.frame_bits


def test_the_anchor_and_the_compensation_on_a_sequence_decode_as_their_pictures_do(tmp_path):
    coder = CachedCodec(LosslessCodec(), Store(tmp_path / "s"))
    frames = [make_features(seed=s) for s in (1, 2, 3)]
    for entry in (CLayerAnchor(rate_points=[30]), CompensationProposal(rate_points=[30])):
        coded = entry.encode_sequence(frames, 30, coder, CodingCondition("AI"))
        assert coded.num_frames == 3 and coded.num_bits == sum(r.num_bits for r in coded.levels.values()) + \
            coded.side_info_bits
        received = type(coded).from_dict(coded.to_dict())
        for features, decoded in zip(frames, entry.decode_sequence(received, coder)):
            pictures = entry.decode(entry.encode(features, 30, coder), coder)
            for level in entry.levels:
                np.testing.assert_array_equal(decoded.layers[level], pictures.layers[level])


def test_the_image_anchor_codes_frames_as_one_video(tmp_path):
    coder = CachedCodec(X265Codec(preset="ultrafast"), Store(tmp_path / "s"))
    rng = np.random.default_rng(0)
    picture = np.kron((rng.random((10, 14, 3)) * 255).astype(np.uint8), np.ones((4, 4, 1), np.uint8))
    frames = [np.roll(picture, 2 * i, axis=1) for i in range(5)]
    decoded, coded = ImageAnchor(rate_points=[30]).code_sequence(frames, 30, coder, CodingCondition("LD", 8))
    assert len(decoded) == 5 and decoded[0].shape == (40, 56, 3) and coded.num_frames == 5
    assert coded.frame_bits[0] > 2 * max(coded.frame_bits[1:]) and 20 < coded.psnr_y < 60


def write_mot(root, name="seq-a", frames=3, rows=()):
    folder = root / name
    (folder / "img1").mkdir(parents=True)
    (folder / "gt").mkdir()
    for t in range(frames):
        from PIL import Image

        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(folder / "img1" / f"{t + 1:06d}.png")
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nimDir=img1\nframeRate=25\nseqLength={frames}\n"
                                        "imWidth=32\nimHeight=24\nimExt=.png\n")
    (folder / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    return folder


def test_mot_sequences_read_frames_and_tracks_and_leave_out_what_the_devkit_ignores(tmp_path):
    write_mot(tmp_path, rows=["1,7,2,3,10,12,1,1,1.0", "1,8,0,0,5,5,0,1,1.0", "2,7,4,3,10,12,1,1,0.8",
                              "3,9,1,1,6,6,1,3,1.0"])
    data = MotSequences(tmp_path, task="tracking")
    (record,) = data.sequences()
    assert (record.num_frames, record.frame_rate, record.width, record.height) == (3, 25.0, 32, 24)
    truth = data.annotations(record)
    assert [len(f) for f in truth] == [1, 1, 0]  # the flag-0 row and the class-3 row are left out
    np.testing.assert_array_equal(truth[1].boxes, [[4, 3, 14, 15]])
    assert truth[0].track_ids.tolist() == [7] and data.frame(record, 2)[0, 0, 0] == 80
    assert len(data.fingerprint(record)) == 64
    assert MotSequences(tmp_path, num_frames=2).sequences()[0].num_frames == 2
    (tmp_path / "seq-a" / "img1" / "000002.png").write_bytes(b"not a png")
    with pytest.raises(MissingInputError, match="000002.png: cannot read frame 2"):
        data.frame(record, 1)
    with pytest.raises(MissingInputError, match="no sequences \\['seq-b'\\]"):
        MotSequences(tmp_path, sequences=["seq-b"]).sequences()
    with pytest.raises(MissingInputError, match="seqinfo.ini"):
        MotSequences(tmp_path / "nowhere").sequences()


def test_sfu_sequences_read_yuv_frames_and_yolo_boxes(tmp_path):
    w, h = 32, 16
    y = np.full((2, h, w), 120, np.uint8)
    uv = np.full((2, 2, h // 2, w // 2), 128, np.uint8)
    with open(tmp_path / f"BQSquare_{w}x{h}_60.yuv", "wb") as f:
        for t in range(2):
            f.write(y[t].tobytes() + uv[t, 0].tobytes() + uv[t, 1].tobytes())
    notes = tmp_path / "ann" / f"BQSquare_{w}x{h}_60"
    notes.mkdir(parents=True)
    (notes / "BQSquare_000.txt").write_text("0 0.5 0.5 0.25 0.5\n2 0.25 0.25 0.1 0.1\n")
    (notes / "BQSquare_001.txt").write_text("")
    data = SfuHwSequences(tmp_path, tmp_path / "ann")
    (record,) = data.sequences()
    assert (record.sequence_id, record.seq_class, record.num_frames, record.frame_rate) == ("BQSquare", "D", 2, 60.0)
    truth = data.annotations(record)
    np.testing.assert_allclose(truth[0].boxes[0], [12, 4, 20, 12])
    assert truth[0].labels.tolist() == [0, 2] and len(truth[1]) == 0
    rgb = data.frame(record, 1)
    assert rgb.shape == (h, w, 3) and abs(int(rgb[0, 0, 0]) - 128) < 12  # mid grey through BT.709
    with pytest.raises(SettingError, match="no track ids"):
        SfuHwSequences(tmp_path, tmp_path / "ann", task="tracking")


def test_synthetic_sequences_are_deterministic_move_and_keep_their_track_ids():
    frames, truth, seq_class = generate_sequence(0, 1, 24, 160, 208)
    again, truth_again, _ = generate_sequence(0, 1, 24, 160, 208)
    assert seq_class == "panning" and all(np.array_equal(a, b) for a, b in zip(frames, again))
    assert not np.array_equal(generate_sequence(1, 1, 2, 160, 208)[0][0], frames[0])
    assert frames[0].shape == (160, 208, 3) and not np.array_equal(frames[0], frames[1])
    ids = [set(f.track_ids.tolist()) for f in truth]
    assert set().union(*ids) and all(len(f.track_ids) == len(set(f.track_ids.tolist())) for f in truth)
    for f in truth:
        assert np.all(f.boxes[:, :2] >= 0) and np.all(f.boxes[:, 2] <= 208) and np.all(f.boxes[:, 3] <= 160)
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(truth, truth_again))


def test_kbps_is_bits_per_second_of_the_sequence():
    assert kilobits_per_second(64_000, 32, 32.0) == 64.0


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Where the small synthetic video set is generated once for this module's runs."""
    return tmp_path_factory.mktemp("video-data")


def video_cfg(tmp_path, data_root, *overrides):
    return vcm_eval.compose(
        f"paths.output_root={tmp_path}", f"paths.store={tmp_path}/store", f"paths.data_root={data_root}",
        "ctc=embedded_video", "ctc.num_sequences=2", "ctc.num_frames=4", "dataset.height=96", "dataset.width=128",
        "ctc.qps.features=[34,44]", "ctc.qps.image=[36,48]", "bd.min_points=2", "executor=local", "progress=false",
        "tracking=none", "codec.preset=ultrafast", *overrides)


def test_a_video_ctc_run_reports_kbps_and_bd_per_sequence_and_class(tmp_path, data_root):
    cfg = video_cfg(tmp_path, data_root, "proposal=compensation", "ctc.condition.mode=RA",
                    "ctc.condition.intra_period=4")
    outcome = vcm_eval.run(cfg, tmp_path / "run")
    summary = outcome.summary
    assert set(summary["entry"]) == {"uncompressed", "c_layer", "image", "compensation"}
    assert set(summary["sequence"]) == {"synthetic-00", "synthetic-01"}
    coded = summary[summary["qp"].notna()]
    np.testing.assert_allclose(coded["kbps"], coded["num_bits"] * 30 / 4 / 1000)
    assert coded["map_50"].between(0, 1).all()
    assert (summary["nn_part_2_kmac_per_px"] > 0).all()  # counted with torch's flop counter
    assert (coded[coded["entry"] == "image"]["nn_part_1_kmac_per_px"] == 0).all()
    assert {"sequence", "class"} <= set(outcome.bd["scope"]) and set(outcome.bd["seq_class"]) == {"static", "panning"}
    for name in ("xlsx", "summary", "bd", "per_image", "rd_plot"):
        assert outcome.files[name].is_file(), name
    assert set(pd.ExcelFile(outcome.files["xlsx"]).sheet_names) >= {"summary", "bd", "per_sequence", "config"}
    rows = outcome.per_image
    assert rows[rows["entry"] == "c_layer"]["computed_now"].all()
    again = vcm_eval.run(cfg, tmp_path / "run2")  # everything comes from the store
    assert not again.per_image["computed_now"].any()
    pd.testing.assert_frame_equal(again.summary.drop(columns=[c for c in again.summary if c.endswith("_s")]),
                                  summary.drop(columns=[c for c in summary if c.endswith("_s")]))


def test_tracking_scores_mota_and_the_learned_entry_runs_intra_only(tmp_path, data_root):
    cfg = video_cfg(tmp_path, data_root, "ctc.task=tracking", "anchor=[c_layer]", "proposal=learned_fusion",
                    "ctc.num_sequences=1")
    outcome = vcm_eval.run(cfg, tmp_path / "run")
    summary = outcome.summary
    assert {"mota", "idf1", "motp", "map_50"} <= set(summary.columns) and outcome.metric == "mota"
    reference = summary[summary["entry"] == "uncompressed"]
    assert reference["mota"].notna().all() and (reference["mota"] <= 1).all()
    rows = outcome.per_image
    assert rows[rows["entry"] == "learned_fusion"]["intra_only"].all()
    assert not rows[rows["entry"] == "c_layer"]["intra_only"].any()


def test_plan_sweep_projects_a_video_ctc_from_a_sample_of_one_sequence(tmp_path, data_root):
    import importlib.util
    import json
    import sys

    # a module of its own: other tests load the tool too, and one of them replaces its build()
    spec = importlib.util.spec_from_file_location("plan_sweep", Path(__file__).resolve().parents[1] / "tools" /
                                                  "plan_sweep.py")
    plan_sweep = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = plan_sweep  # its dataclasses look their module up
    spec.loader.exec_module(plan_sweep)

    out = tmp_path / "plan.json"
    assert plan_sweep.main([f"paths.data_root={data_root}", "ctc=embedded_video", "ctc.num_sequences=2",
                            "ctc.num_frames=4", "dataset.height=96", "dataset.width=128", "anchor=[c_layer]",
                            "codec.preset=ultrafast", "--sample-frames", "3", "--workers", "1", "4",
                            "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["sequences"] == 2 and plan["frames"] == 8 and plan["sample"]["frames"] == 3
    assert {"extract", "code:c_layer", "detect:c_layer"} == set(plan["seconds_per_frame_mpixel"])
    assert plan["core_hours"] > 0 and plan["wall_hours"]["1"] >= plan["wall_hours"]["4"] > 0


def test_until_done_deletes_a_sequences_c_layers_and_keeps_its_results(tmp_path, data_root):
    overrides = ["anchor=[c_layer]", "ctc.num_sequences=1", "ctc.num_frames=3"]
    kept = vcm_eval.run(video_cfg(tmp_path / "a", data_root, *overrides), tmp_path / "a" / "run")
    done = vcm_eval.run(video_cfg(tmp_path / "b", data_root, *overrides, "store.keep_features=until_done"),
                        tmp_path / "b" / "run")
    assert list((tmp_path / "a" / "store" / "clayers").rglob("*.npz"))
    assert not list((tmp_path / "b" / "store" / "clayers").rglob("*.npz"))
    columns = ["entry", "sequence", "qp", "num_bits", "map_50"]
    pd.testing.assert_frame_equal(kept.summary[columns], done.summary[columns])


@pytest.mark.parametrize("name", ["vtm", "vvenc"])
@pytest.mark.parametrize("mode,period", [("AI", 1), ("LD", 4), ("RA", 32)])
def test_vvc_encoders_code_a_sequence_as_the_ctc_drives_them(name, mode, period):
    from vcm_eval.codecs.base import CodecUnavailableError
    from vcm_eval.codecs.vtm import VTMCodec
    from vcm_eval.codecs.vvenc import VVenCCodec

    codec = VTMCodec() if name == "vtm" else VVenCCodec()
    try:
        codec.check_available()
        codec.find_config()
    except CodecUnavailableError as exc:
        pytest.skip(f"no {name} build here: {str(exc).splitlines()[0]}")
    frames = moving_frames(5, (32, 48))
    coded = codec.encode_sequence(frames, 37, CodingCondition(mode, period, 30.0))
    assert len(coded.frame_bits) == 5 and sum(coded.frame_bits) == 8 * len(coded.bitstream)
    command = coded.command
    assert command[command.index("-f") + 1] == "5" and command[command.index("-fr") + 1] == "30"
    if name == "vtm":
        cfg = {"AI": "encoder_intra_vtm.cfg", "LD": "encoder_lowdelay_vtm.cfg", "RA": "encoder_randomaccess_vtm.cfg"}
        assert command[command.index("-c") + 1].endswith(cfg[mode]) and f"--IntraPeriod={period}" in command
    else:
        assert command[command.index("--IntraPeriod") + 1] == str(period)
        assert command.index("--IntraPeriod") > command.index("--preset")  # the preset would reset it
    assert len(codec.decode_sequence(coded.bitstream, FrameSpec(32, 48), 5)) == 5


def test_a_video_run_is_logged_to_mlflow_with_its_class_bd_and_files(tmp_path, data_root):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = video_cfg(tmp_path, data_root, "anchor=[c_layer,image]", "ctc.num_sequences=1", "ctc.num_frames=3",
                    "tracking=mlflow", f"tracking.tracking_uri={uri}",
                    f"tracking.artifact_location=file://{tmp_path}/mlartifacts")
    outcome = vcm_eval.run(cfg, tmp_path / "run")
    assert outcome.mlflow_run_id and not outcome.warnings
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    parent = client.get_run(outcome.mlflow_run_id)
    assert parent.data.params["ctc.name"] == "embedded_video" and "uncompressed_map_50" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'")
    assert {r.data.tags["entry"] for r in children} == {"c_layer", "image"}
    names = {a.path for a in client.list_artifacts(outcome.mlflow_run_id)}
    assert {"summary.csv", "bd.csv", "ctc_embedded_video.xlsx"} <= names


def test_an_image_entry_that_codes_pictures_only_is_refused_before_any_work(tmp_path, data_root):
    cfg = video_cfg(tmp_path, data_root, "anchor=[image]", "anchor.image._target_=fakes.PictureOnlyImageEntry")
    with pytest.raises(SettingError, match="codes still pictures only"):
        vcm_eval.run(cfg, tmp_path / "run")
    assert not (tmp_path / "store" / "clayers").exists()


def test_a_bitstream_another_writer_is_still_recording_is_kept_and_a_foreign_one_set_aside(tmp_path):
    store = Store(tmp_path / "store")
    coder = CachedCodec(LosslessCodec(), store)
    store.write_bytes("bitstreams", "k1", ".bin", b"same bytes")  # the other writer has not written its record yet
    coder.store_bitstream("k1", b"same bytes", {"qp": 1})
    assert store.read_bytes("bitstreams", "k1", ".bin") == b"same bytes" and not list((tmp_path / "store").rglob(
        "damaged/**/*.bin"))
    store.write_bytes("bitstreams", "k2", ".bin", b"left by a crash, other bytes")
    record = coder.store_bitstream("k2", b"ours", {"qp": 1})
    assert store.read_bytes("bitstreams", "k2", ".bin") == b"ours" and record["num_bytes"] == 4
