"""The learned entry (proposals/learned_fusion/): real bitstreams that decode exactly, in any process.

A tiny checkpoint pair is trained by the training tool itself (a few iterations on a few train pictures,
in tmp_path), so the tests cover the tool and never touch the shipped checkpoints, whose own test only
checks their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from proposals.learned_fusion import (
    LEVELS,
    WEIGHTS_DIR,
    LearnedFusionEntry,
    LearnedFusionError,
    load_checkpoint,
    read_checkpoint_meta,
)
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.codecs.lossless import LosslessCodec
from vcm_eval.data.synthetic import generate_image
from vcm_eval.models.embedded import build_embedded_model
from vcm_eval.pipeline import unusable_cause
from vcm_eval.store import Store, encode_record

REPO = Path(__file__).resolve().parents[1]
#: "a few MB each at most" (issue 14): the default architecture's 2.0 M parameters (convolutions stored as
#: float16) and CDF tables are about 4.6 MB
MAX_CHECKPOINT_BYTES = 5e6


def _training_tool():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import train_learned_fusion
    finally:
        sys.path.remove(str(REPO / "tools"))
    return train_learned_fusion


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """rp0 (lambda 4) and rp1 (lambda 1) of a few iterations, written by tools/train_learned_fusion.py."""
    out = tmp_path_factory.mktemp("ckpt")
    rc = _training_tool().main(["--train-pictures", "4", "--base-iterations", "3", "--finetune-iterations", "2",
                                    "--lambdas", "4", "1", "--batch-size", "2", "--crop", "128", "--eval-pictures",
                                    "1", "--threads", "1", "--log-every", "1", "--out-dir", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def model():
    return build_embedded_model()


@pytest.fixture(scope="module")
def features(model):
    return [model.encode(generate_image(0, "val", i, "natural")[0]) for i in range(2)]


def _coder(root: Path) -> CachedCodec:
    return CachedCodec(LosslessCodec(), Store(root))


def test_training_tool_writes_checkpoints_with_their_description(checkpoints):
    for index, lam in ((0, 4.0), (1, 1.0)):
        meta = read_checkpoint_meta(checkpoints / f"rp{index}.pth")  # checks the sha256
        assert meta["lambda"] == lam and meta["rate_point"] == index
        assert meta["data"]["split"] == "train"
        assert meta["model"]["weights_sha256"] == build_embedded_model().weights_sha256
        assert meta["held_out"]["bpp"] > 0
    assert not (checkpoints / "base.pt").exists()
    assert (checkpoints / "rp0.pth").stat().st_size < MAX_CHECKPOINT_BYTES


def test_round_trip_is_exact(checkpoints, features, tmp_path):
    entry = LearnedFusionEntry(rate_points=[0, 1], weights_dir=str(checkpoints))
    coder = _coder(tmp_path / "store")
    for i, feats in enumerate(features):
        coded = entry.encode(feats, 1, coder, label=f"image {i}")
        assert set(coded.levels) == {"y", "z"} and all(r.num_bytes > 0 for r in coded.levels.values())
        assert coded.num_bits > coded.side_info_bits > 0
        decoded = entry.decode(coded, coder, label=f"image {i}")
        for lv in LEVELS:
            assert decoded.layers[lv].shape == feats.layers[lv].shape and decoded.layers[lv].dtype == np.float32
        # the encoder-side reconstruction equals the decoder's, bit for bit
        reference = entry.coder_for(1).compress([feats.layers[lv] for lv in LEVELS])
        for lv, ref in zip(LEVELS, reference.layers):
            np.testing.assert_array_equal(decoded.layers[lv], ref)
        # a second encode is a cache hit with the same record
        again = entry.encode(feats, 1, coder, label=f"image {i}")
        assert again.levels["y"].from_cache and again.to_dict()["levels"]["y"]["bitstream"] == coded.levels[
            "y"].bitstream
    # the pipeline reports the codec and command of the first level from its bitstream record
    record = coder.store.read_json("bitstreams", coded.levels["y"].bitstream)
    assert record["codec"]["name"] == "compressai" and record["qp"] == 1 and record["codec"]["lambda"] == 1.0


def test_decode_in_another_process_with_other_threads_is_identical(checkpoints, features, tmp_path):
    import torch

    entry = LearnedFusionEntry(rate_points=[0], weights_dir=str(checkpoints))
    coder = _coder(tmp_path / "store")
    torch.set_num_threads(2)
    coded = entry.encode(features[0], 0, coder, label="image 0")
    here = entry.decode(coded, coder, label="image 0")
    (tmp_path / "coded.json").write_text(json.dumps(coded.to_dict()))
    script = f"""
import json, numpy as np, torch
torch.set_num_threads(1)
from proposals.learned_fusion import LearnedFusionEntry
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.codecs.lossless import LosslessCodec
from vcm_eval.methods import CodedFeatures
from vcm_eval.pipeline import unusable_cause
from vcm_eval.store import Store, encode_record
coded = CodedFeatures.from_dict(json.load(open({str(tmp_path / 'coded.json')!r})))
entry = LearnedFusionEntry(rate_points=[0], weights_dir={str(checkpoints)!r})
out = entry.decode(coded, CachedCodec(LosslessCodec(), Store({str(tmp_path / 'store')!r})), label="image 0")
np.savez({str(tmp_path / 'there.npz')!r}, **out.layers)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    there = np.load(tmp_path / "there.npz")
    for lv in LEVELS:
        np.testing.assert_array_equal(there[lv], here.layers[lv])


def test_damaged_bitstreams_are_errors_naming_the_image(checkpoints, features, tmp_path):
    entry = LearnedFusionEntry(rate_points=[0], weights_dir=str(checkpoints))
    coder = _coder(tmp_path / "store")
    coded = entry.encode(features[0], 0, coder, label="image 7")
    store = coder.store
    y_path = Path(store.path("bitstreams", coded.levels["y"].bitstream, ".bin"))
    data = y_path.read_bytes()
    # truncated: caught by the record's size and sha256
    record_path = Path(store.path("bitstreams", coded.levels["y"].bitstream, ".json"))
    record = store.read_json("bitstreams", coded.levels["y"].bitstream)
    y_path.write_bytes(data[:-3])
    with pytest.raises(LearnedFusionError, match=r"image 7 rate point 0 .*truncated or damaged") as info:
        entry.decode(coded, coder, label="image 7")
    assert unusable_cause(info.value) is not None  # the sweep plans again and re-encodes it
    assert not y_path.exists() and not record_path.exists()  # set aside, so that it is made again
    # damaged with a matching record (as if it had been written so): caught by the symbols' CRC-32
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    y_path.write_bytes(bytes(bad))
    record_path.write_bytes(encode_record({**record, "sha256": hashlib.sha256(bytes(bad)).hexdigest()}))
    with pytest.raises(LearnedFusionError, match=r"image 7 rate point 0 .*(symbols|does not decode)"):
        entry.decode(coded, coder, label="image 7")
    # a wrong index checksum (the hyper-synthesis ran differently) is refused before y is decoded
    y_path.write_bytes(data)
    record_path.write_bytes(encode_record(record))
    coded.levels["y"].quant["crc32_indexes"] ^= 1
    with pytest.raises(LearnedFusionError, match=r"image 7 rate point 0 .*CDF indexes"):
        entry.decode(coded, coder, label="image 7")


def test_checkpoint_errors_name_the_file_and_the_tool(checkpoints, features, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("rp0.pth", "rp0.json"):
        (folder / name).write_bytes((checkpoints / name).read_bytes())
    with pytest.raises(LearnedFusionError, match=r"rp1\.pth: learned_fusion checkpoint not found.*train_learned"):
        LearnedFusionEntry(rate_points=[0, 1], weights_dir=str(folder))
    (folder / "rp0.pth").write_bytes((folder / "rp0.pth").read_bytes()[:-10])
    with pytest.raises(LearnedFusionError, match=r"rp0\.pth: corrupt or replaced.*train_learned_fusion"):
        LearnedFusionEntry(rate_points=[0], weights_dir=str(folder))
    # C-layers of another width than the checkpoint's
    entry = LearnedFusionEntry(rate_points=[0], weights_dir=str(checkpoints))
    narrow = features[0].replace_layers({lv: a[:16] for lv, a in features[0].layers.items()})
    with pytest.raises(LearnedFusionError, match=r"rp0\.pth codes C-layers of 32 channels.*image 3"):
        entry.encode(narrow, 0, _coder(tmp_path / "store"), label="image 3")


def test_the_entry_runs_under_the_cli(checkpoints, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCM_EVAL_", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "vcm_eval", "proposal=learned_fusion",
         f"proposal.learned_fusion.weights_dir={checkpoints}", "proposal.learned_fusion.rate_points=[0,1]",
         "ctc.num_images=2", "dataset.size=2", "ctc.qps.features=[30,40]", "ctc.qps.image=[30,40]",
         "bd.min_points=2", "anchor=[c_layer]", "codec._target_=fakes.NoiseCodec", "+codec.amplitude=6",
         "~codec.preset", "~codec.extra_params", "tracking=none", "progress=false", "executor=local",
         f"paths.output_root={out}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import pandas as pd

    per_image = pd.read_csv(tmp_path / "run" / "per_image.csv")
    rows = per_image[per_image["entry"] == "learned_fusion"]
    assert len(rows) == 4 and (rows["bits_y"] > 0).all() and (rows["bits_z"] > 0).all()
    assert (rows["num_bits"] == rows["bits_y"] + rows["bits_z"] + rows["side_info_bits"]).all()


def test_checkpoints_store_the_convolutions_as_float16_and_load_the_measured_network(checkpoints, tmp_path):
    state = torch.load(checkpoints / "rp0.pth", map_location="cpu", weights_only=True)
    assert state["trunk.0.weight"].dtype == torch.float16
    assert state["trunk.1.gamma"].dtype == torch.float32
    assert state["entropy_bottleneck.quantiles"].dtype == torch.float32
    net, meta = load_checkpoint(checkpoints / "rp0.pth")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # the tool measured the very network that loads: the same held-out figures, to the last bit
    tool = _training_tool()
    model, _ = tool.build_split_model([])
    args = tool.parse_args(["--train-pictures", "4", "--eval-pictures", "1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixture's --threads 1
    try:
        again = tool.measure(net, model, tool.model_fpn(model), args, meta["recipe"]["p_map_variances"])
    finally:
        torch.set_num_threads(threads)
    assert (again["bpp"], again["d_p"]) == (meta["held_out"]["bpp"], meta["held_out"]["d_p"])
    # a float32 checkpoint (as shipped before) loads as it is
    old = tmp_path / "old"
    old.mkdir()
    torch.save(net.state_dict(), old / "rp0.pth")
    meta = json.loads((checkpoints / "rp0.json").read_text())
    meta["sha256"] = hashlib.sha256((old / "rp0.pth").read_bytes()).hexdigest()
    (old / "rp0.json").write_text(json.dumps(meta))
    again, _ = load_checkpoint(old / "rp0.pth")
    for k, v in again.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_shipped_checkpoints_are_complete(features, tmp_path):
    shipped = list(OmegaConf.load(REPO / "conf" / "proposal" / "learned_fusion.yaml").learned_fusion.rate_points)
    assert shipped == list(range(len(shipped))) and len(shipped) >= 4
    entry = LearnedFusionEntry(rate_points=shipped)  # checks every file's sha256
    coder = _coder(tmp_path / "store")
    bits = []
    for rp in (0, shipped[-1]):  # the shipped networks code and decode exactly, the larger index with fewer bits
        coded = entry.encode(features[0], rp, coder, label="image 0")
        decoded = entry.decode(coded, coder, label="image 0")
        reference = entry.coder_for(rp).compress([features[0].layers[lv] for lv in LEVELS])
        for lv, ref in zip(LEVELS, reference.layers):
            np.testing.assert_array_equal(decoded.layers[lv], ref)
        bits.append(coded.num_bits)
    assert bits[0] > bits[1]
    lambdas = [entry.checkpoint_meta(i)["lambda"] for i in shipped]
    assert lambdas == sorted(lambdas, reverse=True), "a larger rate point index must have a smaller lambda"
    for i in shipped:
        meta = entry.checkpoint_meta(i)
        assert meta["model"]["weights_sha256"] == build_embedded_model().weights_sha256
        assert meta["architecture"]["channels"] == 32 and meta["data"]["split"] == "train"
        assert (WEIGHTS_DIR / f"rp{i}.pth").stat().st_size < MAX_CHECKPOINT_BYTES
