#!/usr/bin/env python
"""Train the embedded model's mask branch on top of the frozen shipped detector, on CPU, and write its weights.

The detector (``--detector``, default the shipped ``embedded.pth``) is loaded and frozen: backbone, FPN, RPN and
box head keep their weights and run in inference mode (BatchNorm statistics included), so a model with this
branch has the detection model's C-layers and boxes bit for bit. Only torchvision's Mask R-CNN branch
(:class:`~vcm_eval.models.embedded.MaskHeadArch`) learns, with torchvision's mask loss: for every positive
sampled proposal (IoU >= 0.5 with a ground-truth object; the ground-truth boxes themselves are added to the
proposals), the mean binary cross-entropy between its class's 28x28 logit map and the object's visible-pixel
mask ROI-aligned to that proposal,

    L = mean over proposals p and cells (i, j) of BCE(sigmoid(z_p[c_p, i, j]), m_p[i, j]).

Training pictures are ``generate_image(dataset_seed, "train", i, style)`` for i < ``--train-size`` (the train
split's pixels and masks; never a val picture), visited in a permutation drawn from
``SeedSequence([seed, 1])`` with horizontal flips from ``SeedSequence([seed, 2])``; the branch is initialised
after ``torch.manual_seed(seed)``. AdamW, linear warm-up then cosine decay to 0. A run is deterministic for a
given thread count.

Writes ``<out>.pth`` (the branch's state dict alone: ``mask_head.*``, ``mask_predictor.*``) and ``<out>.json``
(architecture, the detector's sha256, recipe, val box and mask mAP measured through the split interface and
:class:`~vcm_eval.evaluation.coco.CocoEvaluator` as a CTC run measures them, training time, sha256 of the .pth).
The default ``--out`` is the file the package ships, ``vcm_eval/models/weights/embedded_mask.pth``.

Example::

    python tools/train_embedded_mask_head.py                        # the shipped recipe, ~10 min on 2 cores
    python tools/train_embedded_mask_head.py --iterations 20 --val-images 5 --out /tmp/mask.pth
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from vcm_eval.data.synthetic import STYLES, SyntheticDataset, generate_image, generator_version
from vcm_eval.hashing import file_sha256
from vcm_eval.models.embedded import (
    MASK_THRESHOLD,
    PACKAGED_MASK_WEIGHTS,
    EmbeddedDetector,
    MaskHeadArch,
    attach_mask_head,
    build_embedded_model,
    image_to_tensor,
    mask_head_state,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=PACKAGED_MASK_WEIGHTS, help="weights to write (.pth; .json beside)")
    p.add_argument("--detector", default=None,
                   help="detector weights the branch is trained on (default: the shipped embedded.pth)")
    p.add_argument("--dataset-seed", type=int, default=0, help="synthetic set seed (train and val splits)")
    p.add_argument("--style", default="natural", choices=STYLES, help="synthetic set style")
    p.add_argument("--seed", type=int, default=0, help="torch seed: initialisation; picture order and flips")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train-size", type=int, default=8000, help="distinct training pictures (train split size)")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up iterations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-images", type=int, default=100, help="val pictures for the final mAP (the CTC's 100)")
    p.add_argument("--data-root", type=Path, default=None, help="synthetic set cache (default: user cache)")
    p.add_argument("--log-every", type=int, default=20)
    return p.parse_args(argv)


def lr_factor(it: int, total: int, warmup: int) -> float:
    """(it + 1) / warmup during warm-up, then 0.5 (1 + cos(pi t)) with t from 0 to 1 over the rest."""
    if it < warmup:
        return (it + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / max(1, total - warmup)))


def visiting_order(seed: int, train_size: int, count: int) -> tuple[list[int], list[bool]]:
    """The first ``count`` (picture index, flip) pairs: epoch e visits a permutation drawn from
    ``SeedSequence([seed, 1, e])``; flips come from ``SeedSequence([seed, 2])``."""
    order: list[int] = []
    epoch = 0
    while len(order) < count:
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, epoch])))
        order.extend(int(i) for i in gen.permutation(train_size))
        epoch += 1
    flip_gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 2])))
    return order[:count], [bool(f) for f in flip_gen.random(count) < 0.5]


def training_batch(indices: list[int], flips: list[bool], seed: int,
                   style: str) -> tuple[list[torch.Tensor], list[dict]]:
    """Train pictures ``indices`` (flipped where ``flips``) with torchvision targets: boxes, labels and
    picture-sized uint8 masks of each object's visible pixels."""
    images, targets = [], []
    for index, flip in zip(indices, flips):
        rgb, objects = generate_image(seed, "train", index, style)
        h, w = rgb.shape[:2]
        masks = np.zeros((len(objects), h, w), dtype=np.uint8)
        for k, obj in enumerate(objects):
            x0, y0, x1, y1 = obj.box
            masks[k, y0:y1, x0:x1] = obj.mask
        boxes = np.asarray([o.box for o in objects], dtype=np.float32).reshape(-1, 4)
        if flip:
            rgb, masks = rgb[:, ::-1], masks[:, :, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        images.append(image_to_tensor(np.ascontiguousarray(rgb)))
        targets.append({"boxes": torch.from_numpy(boxes),
                        "labels": torch.as_tensor([o.class_index + 1 for o in objects], dtype=torch.int64),
                        "masks": torch.from_numpy(np.ascontiguousarray(masks))})
    return images, targets


def mask_loss(net: torch.nn.Module, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
    """torchvision's mask loss of a batch, the frozen detector run in inference mode (no gradient, test-time
    proposals) and only the ROI heads in training mode (proposal sampling, the mask loss)."""
    with torch.no_grad():
        batch, targets = net.transform(images, targets)
        features = net.backbone(batch.tensors)
        proposals, _ = net.rpn(batch, features)
    net.roi_heads.train()
    try:
        _, losses = net.roi_heads(features, proposals, batch.image_sizes, targets)
    finally:
        net.roi_heads.eval()
    return losses["loss_mask"]


def evaluate(model: EmbeddedDetector, args: argparse.Namespace) -> dict:
    """Box and mask metrics of ``model`` on the first ``--val-images`` val pictures (``CocoEvaluator``, segm)."""
    dataset = SyntheticDataset(split="val", num_images=args.val_images, root=args.data_root, seed=args.dataset_seed,
                               style=args.style, task="segmentation")
    dets = {r.image_id: model.detect(dataset.load(r)) for r in dataset.records()}
    return dataset.make_evaluator(model.class_names).evaluate(dets)


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = args.out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    detector = build_embedded_model(args.detector)
    net, arch = detector.net, detector.arch
    for param in net.parameters():
        param.requires_grad_(False)
    net.eval()
    mask_arch = MaskHeadArch()
    torch.manual_seed(args.seed)
    attach_mask_head(net, arch, mask_arch, len(detector.class_names))
    trainable = [p for name, p in net.named_parameters() if name.startswith("roi_heads.mask_")]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    order, flips = visiting_order(args.seed, args.train_size, args.iterations * args.batch_size)
    print(f"training the mask branch ({sum(p.numel() for p in trainable) / 1e3:.1f} k parameters) on the frozen "
          f"detector {detector.weights_sha256[:12]}: {args.iterations} iterations x {args.batch_size} pictures from "
          f"{args.train_size} train pictures, {args.threads} threads", flush=True)

    t0 = time.time()
    running = None
    for it in range(args.iterations):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(it, args.iterations, args.warmup)
        sl = slice(it * args.batch_size, (it + 1) * args.batch_size)
        images, targets = training_batch(order[sl], flips[sl], args.dataset_seed, args.style)
        loss = mask_loss(net, images, targets)
        if not torch.isfinite(loss):
            print(f"non-finite mask loss at iteration {it}", flush=True)
            return 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        done = it + 1
        if done % args.log_every == 0 or done == args.iterations:
            per_it = (time.time() - t0) / done
            print(f"it {done}/{args.iterations} lr={opt.param_groups[0]['lr']:.2e} mask={running:.4f} "
                  f"{per_it:.2f}s/it eta {per_it * (args.iterations - done) / 60:.1f} min", flush=True)
    train_s = time.time() - t0

    print(f"training done in {train_s / 60:.1f} min; evaluating on {args.val_images} val pictures", flush=True)
    tmp = out.with_suffix(".pth.tmp")
    torch.save(mask_head_state(net), tmp)
    os.replace(tmp, out)
    sha = file_sha256(out)
    model = EmbeddedDetector(net, detector.class_names, arch, detector.weights_sha256, mask_arch=mask_arch,
                             mask_sha256=sha)
    t1 = time.time()
    metrics = evaluate(model, args)
    eval_s = time.time() - t1
    meta = {
        "name": "embedded_mask",
        "class_names": list(detector.class_names),
        "detector_sha256": detector.weights_sha256,
        "mask_architecture": mask_arch.to_json(),
        "threshold": MASK_THRESHOLD,
        "dataset": {"generator": "vcm_eval.data.synthetic", "style": args.style,
                    "generator_version": generator_version(args.style), "seed": args.dataset_seed,
                    "train_pictures": args.train_size},
        "recipe": {"tool": "tools/train_embedded_mask_head.py", "frozen": "backbone, FPN, RPN, box head",
                   "loss": "torchvision maskrcnn_loss (BCE on 28x28 class masks of positive proposals)",
                   "optimizer": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                   "schedule": "linear warm-up, cosine decay to 0", "warmup": args.warmup,
                   "iterations": args.iterations, "batch_size": args.batch_size,
                   "augmentation": "horizontal flip p=0.5", "seed": args.seed, "threads": args.threads,
                   "device": "cpu"},
        "val": {"split": "val", "style": args.style, "dataset_seed": args.dataset_seed,
                "num_images": args.val_images, "segm_map_50": metrics["segm_map_50"],
                "segm_map_50_95": metrics["segm_map_50_95"], "map_50": metrics["map_50"],
                "map_50_95": metrics["map_50_95"], "metrics": _finite(metrics), "evaluation_s": round(eval_s, 1)},
        "training_s": round(train_s, 1),
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "sha256": sha,
    }
    meta_tmp = out.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(meta_tmp, out.with_suffix(".json"))
    print(f"val ({args.val_images} pictures): mask mAP@0.5 {metrics['segm_map_50']:.4f}  mask mAP@[.5:.95] "
          f"{metrics['segm_map_50_95']:.4f}  (box mAP@0.5 {metrics['map_50']:.4f})", flush=True)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB) and {out.with_suffix('.json').name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
