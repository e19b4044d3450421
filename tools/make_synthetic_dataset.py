#!/usr/bin/env python
"""Generate the synthetic detection set (COCO format) into a folder.

Writes ``<out>/<split>/annotations.json`` and ``<out>/<split>/images/*.png`` for each split asked for.
The same seed and style give the same pixels and the same JSON on any machine (docs/embedded.md). An
existing split folder is left as it is. ``--style natural`` (the default) makes photographic pictures from
scikit-image's bundled photos; ``--style shapes`` makes the original flat-shapes set.

Example::

    python tools/make_synthetic_dataset.py /tmp/synthetic --splits val --val-size 200
    python tools/make_synthetic_dataset.py /tmp/synthetic --seed 3 --splits train val --train-size 500
    python tools/make_synthetic_dataset.py /tmp/synthetic-shapes --style shapes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vcm_eval.data.synthetic import DEFAULT_SPLIT_SIZE, SPLITS, STYLES, write_split


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write the splits into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", nargs="+", default=["val"], choices=sorted(SPLITS))
    p.add_argument("--train-size", type=int, default=DEFAULT_SPLIT_SIZE["train"])
    p.add_argument("--val-size", type=int, default=DEFAULT_SPLIT_SIZE["val"])
    p.add_argument("--style", default="natural", choices=STYLES,
                   help="picture style: natural (photographic) or shapes (the original flat shapes)")
    args = p.parse_args(argv)
    for split in args.splits:
        size = args.train_size if split == "train" else args.val_size
        folder = args.out / split
        existed = (folder / "annotations.json").is_file()
        t0 = time.time()
        write_split(folder, seed=args.seed, split=split, size=size, style=args.style)
        what = ("kept existing" if existed
                else f"generated {size} {args.style} pictures in {time.time() - t0:.1f} s:")
        print(f"{split}: {what} {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
