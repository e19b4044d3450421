#!/usr/bin/env python
"""Plan a sweep before running it: how many coding tasks a CTC has, how fast the selected codec codes
C-layer pictures here, and what the whole sweep costs in core-hours and wall time on N workers.

    python tools/plan_sweep.py                                   # the embedded CTC, x265
    python tools/plan_sweep.py ctc=paper codec=vvenc proposal=compensation --workers 1 64 512
    python tools/plan_sweep.py ctc=paper codec=vtm proposal=compensation --clayers x101_image.npz

Arguments of the form key=value are Hydra overrides, exactly as for ``python -m vcm_eval``. The sample
codes the first ``--sample-images`` pictures of the data set (or the C-layer files given with
``--clayers``, e.g. written by ``tools/run_detector.py --save-clayers``) at one QP with every feature
entry, with a fresh bitstream cache so every picture is really encoded. Projections assume the
sample's mean picture size and seconds per Mpixel for every image and QP (lower QPs code slower), and
ideal scaling across workers; the anchor and the proposal share their identical encodes (the coarsest
level, and uncompensated levels) in a real sweep, which the projection counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vcm_eval.build import build
from vcm_eval.cli import CONFIG_DIR, build_entries
from vcm_eval.codecs.base import VideoCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.data.base import DetectionDataset
from vcm_eval.methods import FeatureCodingMethod
from vcm_eval.store import Store
from vcm_eval.types import SplitFeatures, SplitMeta


def load_clayers(path: Path) -> SplitFeatures:
    with np.load(path) as npz:
        layers = {k: np.asarray(npz[k], np.float32).reshape(npz[k].shape[-3:]) for k in ("c2", "c3", "c4", "c5")}
    h, w = layers["c2"].shape[1] * 4, layers["c2"].shape[2] * 4
    return SplitFeatures(layers, SplitMeta((h, w), (h, w), (h, w)))


def sample_features(cfg, args) -> list[SplitFeatures]:
    if args.clayers:
        return [load_clayers(p) for p in args.clayers]
    import json

    from vcm_eval.pipeline import build_model

    dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
    model = build_model(json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True))
    records = dataset.records()[: args.sample_images]
    return [model.encode(dataset.load(r)) for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. ctc=paper codec=vtm")
    parser.add_argument("--sample-images", type=int, default=2)
    parser.add_argument("--clayers", type=Path, nargs="*", help="C-layer .npz files to sample instead of a model")
    parser.add_argument("--qp", type=int, help="QP of the sample (default: the CTC's middle feature QP)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 16, 128, 1024])
    parser.add_argument("--mpixel-per-image", type=float,
                        help="packed C-layer Mpixel per image and rate point for the projection (default: the "
                             "sample's); 18.2 for X101-FPN on an 800x1067 picture: 256 x (200x268 + 100x134 + "
                             "50x67 + 25x34) samples")
    args = parser.parse_args(argv)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    codec = build(cfg.codec, expect=VideoCodec, what="codec")
    codec.check_available()
    entries = [s.entry for s in build_entries(cfg)]
    feature_entries = [e for e in entries if isinstance(e, FeatureCodingMethod)]
    qps = sorted(cfg.ctc.qps.features)
    qp = args.qp if args.qp is not None else qps[len(qps) // 2]
    num_images = cfg.ctc.num_images
    print(f"CTC {cfg.ctc.name}: {num_images} images, codec {codec.name}, feature QPs {qps}, "
          f"entries {[e.name for e in entries]}")

    features = sample_features(cfg, args)
    mpixel_per_image = np.mean([sum(np.prod(_picture_shape(x)) for x in f.layers.values()) / 1e6 for f in features])
    print(f"sample: {len(features)} image(s), {mpixel_per_image:.2f} Mpixel of packed C-layer pictures per image "
          f"and rate point, coded at QP {qp}")
    if args.mpixel_per_image:
        mpixel_per_image = args.mpixel_per_image
        print(f"projection: {mpixel_per_image:.2f} Mpixel per image and rate point (--mpixel-per-image)")

    seconds, mpixels, new_share = 0.0, 0.0, {}
    with tempfile.TemporaryDirectory() as tmp:
        shared = CachedCodec(codec, Store(Path(tmp) / "shared"))
        for entry in feature_entries:
            coded_new = coded_all = 0
            for i, feats in enumerate(features):
                fresh = CachedCodec(codec, Store(Path(tmp) / f"{entry.name}-{i}"))
                t0 = time.perf_counter()
                coded = entry.encode(feats, qp, fresh, label=f"sample {i}")
                elapsed = time.perf_counter() - t0
                seconds += sum(level.encode_s for level in coded.levels.values()) or elapsed
                mpixels += sum(np.prod(_geometry_shape(level.geometry)) for level in coded.levels.values()) / 1e6
                again = entry.encode(feats, qp, shared, label=f"sample {i}")  # what a sweep shares
                sizes = {k: np.prod(_geometry_shape(v.geometry)) for k, v in again.levels.items()}
                coded_all += sum(sizes.values())
                coded_new += sum(sizes[k] for k, v in again.levels.items() if not v.from_cache)
            new_share[entry.name] = coded_new / max(coded_all, 1)
    s_per_mpixel = seconds / mpixels
    print(f"measured: {s_per_mpixel:.2f} s per Mpixel with {codec.name} ({seconds:.1f} s for {mpixels:.2f} Mpixel)")

    chains = {e.name: num_images * len(e.rate_points) for e in feature_entries}
    pictures = {e.name: chains[e.name] * len(getattr(e, "levels", [])) for e in feature_entries}
    total_mpixel = sum(num_images * len(e.rate_points) * mpixel_per_image * new_share[e.name] for e in feature_entries)
    core_hours = total_mpixel * s_per_mpixel / 3600
    print(f"tasks: {sum(chains.values())} coding chains ({chains}), {sum(pictures.values())} pictures; "
          f"{total_mpixel:.0f} Mpixel to encode after sharing identical pictures")
    print(f"projected encoder time: {core_hours:.1f} core-hours ({core_hours / 24:.1f} core-days)")
    for n in args.workers:
        hours = core_hours / n
        print(f"  {n:>5} workers: {hours:9.3f} h wall ({hours * 60:.1f} min, {hours / 24:.2f} days)")
    return 0


def _picture_shape(layer: np.ndarray) -> tuple[int, int]:
    from vcm_eval.features.packing import PackingGeometry

    return PackingGeometry.for_shape(layer.shape).picture_shape


def _geometry_shape(geometry: dict) -> tuple[int, int]:
    return geometry["rows"] * geometry["tile_h"], geometry["cols"] * geometry["tile_w"]


if __name__ == "__main__":
    sys.exit(main())
