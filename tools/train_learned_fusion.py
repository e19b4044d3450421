#!/usr/bin/env python
"""Train the learned_fusion checkpoints (proposals/learned_fusion/), one per lambda, on CPU.

The command line of :mod:`proposals.learned_fusion.train`, whose docstring says what is trained and how
(data, loss, schedule, what ``--resume`` keeps); every option below is one of its settings.

Example::

    python tools/train_learned_fusion.py                        # the shipped checkpoints (~55 min on 2 cores)
    python tools/train_learned_fusion.py model=my_model --out-dir my_ckpts   # a model of conf/model/
    python tools/train_learned_fusion.py --train-pictures 8 --base-iterations 5 --finetune-iterations 2 \\
        --lambdas 4 1 --eval-pictures 2 --out-dir /tmp/lf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proposals.learned_fusion import WEIGHTS_DIR, FusionArch
from proposals.learned_fusion.measure import measure
from proposals.learned_fusion.objective import model_fpn
from proposals.learned_fusion.train import DEFAULT_LAMBDAS, train_checkpoints
from proposals.learned_fusion.training_data import build_split_model

# kept importable from the tool, where tests/test_learned_fusion.py measures a checkpoint again
__all__ = ["build_split_model", "main", "measure", "model_fpn", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model=embedded "
                                                "model.weights=path.pth (default: the embedded model)")
    p.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS),
                   help="lambda of rate point 0, 1, ...: decreasing, so a larger index spends fewer bits")
    p.add_argument("--base-index", type=int, default=0,
                   help="rate point trained from scratch (default 0, the largest lambda: the others are fine-tuned "
                        "down from the most accurate network, which is quicker than up from a coarse one)")
    p.add_argument("--base-iterations", type=int, default=18000)
    p.add_argument("--finetune-iterations", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=192, help="crop side in input pixels (multiple of 32)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--clayer-weight", type=float, default=0.1, help="w_c: weight of the C-layer MSE term")
    p.add_argument("--train-pictures", type=int, default=400)
    p.add_argument("--dataset-seed", type=int, default=0)
    p.add_argument("--style", default="natural")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-pictures", type=int, default=30, help="held-out train pictures measured per checkpoint")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="keep finished rate points (and the base) of a run "
                                                         "with the same settings")
    arch_defaults = FusionArch()
    for name in ("hidden", "latent", "hyper", "fine", "kernel"):
        p.add_argument(f"--{name}", type=int, default=getattr(arch_defaults, name))
    args = p.parse_args(argv)
    if args.crop % 32:
        p.error("--crop must be a multiple of 32")
    if not 0 <= args.base_index < len(args.lambdas):
        p.error("--base-index must index --lambdas")
    return args


def main(argv: list[str] | None = None) -> int:
    return train_checkpoints(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
