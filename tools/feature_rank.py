#!/usr/bin/env python
"""Effective rank of each C-layer level of the embedded detector, on pictures the CTC does not use.

A level's C-layer is C channels at every position; each position is one sample of a C-dimensional vector.
Its principal components over many positions of many pictures say how many dimensions the level really
uses: the effective rank is the number of components that hold 99 % (and 99.9 %) of the energy (the sum of
the covariance's eigenvalues, i.e. the variance around the level's mean vector). A level computed by a 1x1
convolution from fewer input channels than it outputs (the old embedded model's C2: 32 -> 64) has rank at
most its input width by construction, which a real C-layer codec can exploit and X101-FPN does not offer.

    python tools/feature_rank.py                                  # shipped model, natural val 100..149
    python tools/feature_rank.py --weights shapes --style shapes  # the model trained on the shapes set

The embedded CTC codes val pictures 0..99, so the default sample (val 100..149) is held out from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vcm_eval.features.transform import LevelStatistics


def effective_rank(eigenvalues: np.ndarray, energy: float) -> int:
    """Smallest k such that the k largest eigenvalues hold at least ``energy`` of their sum.

    k = min { k : sum_{i<k} lambda_i >= energy * sum_i lambda_i }, eigenvalues sorted in decreasing order.
    """
    lam = np.sort(np.clip(np.asarray(eigenvalues, np.float64), 0, None))[::-1]
    total = lam.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(lam), energy * total) + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="natural (default), shapes, or a .pth path")
    parser.add_argument("--style", default="natural", choices=("natural", "shapes"))
    parser.add_argument("--first", type=int, default=100, help="first val picture (the CTC uses 0..99)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    import torch

    from vcm_eval.data.synthetic import SyntheticDataset
    from vcm_eval.models.base import WeightsError
    from vcm_eval.models.embedded import build_embedded_model

    torch.set_num_threads(2)
    try:
        model = build_embedded_model(args.weights)
    except WeightsError as exc:
        parser.exit(2, f"feature_rank: error: {exc}\n")
    end = args.first + args.count
    dataset = SyntheticDataset(split="val", num_images=end, root=args.data_root, style=args.style,
                               size=max(200, end))
    stats: dict[str, LevelStatistics] = {}
    for record in dataset.records()[args.first:end]:
        feats = model.encode(dataset.load(record))
        in_h, in_w = feats.meta.input_size
        for level, layer in feats.layers.items():
            stride = 2 ** int(level[1:])
            valid = layer[:, : -(-in_h // stride), : -(-in_w // stride)]  # drop the padding's positions
            stats.setdefault(level, LevelStatistics(layer.shape[0])).add(valid)
    rows = {}
    print(f"model {model.name} ({model.weights_sha256[:12]}), {args.style} val {args.first}..{end - 1}")
    print(f"{'level':>5} {'channels':>8} {'rank 99 %':>9} {'rank 99.9 %':>11} {'top-16 energy':>13}")
    for level in sorted(stats):
        lam = stats[level].eigenvalues()
        top16 = float(np.clip(lam, 0, None)[:16].sum() / np.clip(lam, 0, None).sum())
        rows[level] = {"channels": len(lam), "rank_99": effective_rank(lam, 0.99),
                       "rank_999": effective_rank(lam, 0.999), "top16_energy": top16}
        r = rows[level]
        print(f"{level:>5} {r['channels']:>8} {r['rank_99']:>9} {r['rank_999']:>11} {top16:>13.3f}")
    if args.json:
        args.json.write_text(json.dumps({"weights": model.weights_sha256, "style": args.style,
                                         "pictures": [args.first, end - 1], "levels": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
