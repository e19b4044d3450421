#!/usr/bin/env python
"""Fit the channel bases of a model's C-layers (principal components and channel ranges) on tuning pictures.

A feature entry with ``transform: {kind: klt}`` codes the first k principal components of each level, and
with ``kind: select`` the k channels of widest range (:mod:`vcm_eval.features.transform`). Both come from
this file, fitted once per model, like its weights, on pictures that neither the model was trained on nor
the CTC evaluates: by default the first 100 pictures of the synthetic ``tune`` split. Every position of
every picture (the padding's excepted) is one sample of the level's C-vector::

    python tools/fit_channel_basis.py                                  # the shipped embedded_basis.npz
    python tools/fit_channel_basis.py model=faster_rcnn_X_101_32x8d_FPN_3x dataset=coco \\
        dataset.annotations=... dataset.images=... --images 200 --out bases/x101.npz

Then point an entry at it: ``transform: {kind: klt, basis: bases/x101.npz, components: {c2: 128}}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import vcm_eval
from vcm_eval.build import build
from vcm_eval.data.base import DetectionDataset
from vcm_eval.features.chain import basis_path
from vcm_eval.features.transform import LevelStatistics, components_for_energy, load_bases, save_bases
from vcm_eval.models.base import SplitModel, WeightsError


def valid_region(layer, input_size: tuple[int, int], level: str):
    """The positions of a (C, H, W) level that cover the resized picture, not the padding."""
    stride = 2 ** int(level[1:])
    height, width = input_size
    return layer[:, : -(-height // stride), : -(-width // stride)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides choosing model and data (model=..., dataset=...)")
    parser.add_argument("--images", type=int, default=100, help="pictures to fit on (the first N of the set)")
    parser.add_argument("--out", type=Path, default=basis_path("embedded"), help="where to write the .npz")
    args = parser.parse_args(argv)

    overrides = ["dataset.split=tune", f"ctc.num_images={args.images}", *args.overrides]
    cfg = vcm_eval.compose(*overrides)
    if cfg.dataset.get("split") == "val" and cfg.ctc.name.startswith("embedded"):
        parser.exit(2, "fit_channel_basis: error: the val split holds the CTC's pictures; fit on dataset.split=tune\n")
    import torch

    torch.set_num_threads(int(cfg.get("model_threads", 1)) or 1)
    try:
        model = build(cfg.model, expect=SplitModel, what="model")
        dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
    except (WeightsError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"fit_channel_basis: error: {exc}\n")
    records = dataset.records()[: args.images]
    stats: dict[str, LevelStatistics] = {}
    started = time.perf_counter()
    for i, record in enumerate(records, 1):
        features = model.encode(dataset.load(record))
        for level, layer in features.layers.items():
            stats.setdefault(level, LevelStatistics(layer.shape[0])).add(
                valid_region(layer, features.meta.input_size, level))
        if i % 10 == 0 or i == len(records):
            print(f"  {i}/{len(records)} pictures ({time.perf_counter() - started:.0f} s)", flush=True)
    info = {"model": model.identity(), "dataset": dataset.identity(), "pictures": len(records)}
    sha = save_bases(args.out, dict(sorted(stats.items())), info)
    bases, _ = load_bases(args.out)
    print(f"wrote {args.out} (sha256 {sha[:12]}…), fitted on {len(records)} pictures of {dataset.name}")
    print(f"{'level':>5} {'channels':>8} {'k for 90/95/99/99.9 % energy':>30}")
    for level, basis in bases.items():
        ks = [components_for_energy(basis, e) for e in (0.9, 0.95, 0.99, 0.999)]
        print(f"{level:>5} {basis.channels:>8} {' / '.join(map(str, ks)):>30}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
