#!/usr/bin/env python
"""Train the embedded detector from scratch on the synthetic train split, on CPU, and write its weights.

Writes ``<out>.pth`` (state dict) and ``<out>.json`` (class names, architecture, recipe, dataset seed,
measured val mAP, sha256 of the .pth). The default ``--out`` is the file the package ships,
``vcm_eval/models/weights/embedded.pth``. A run is deterministic for a given thread count: the
training pictures are ``generate_image(seed, "train", i, style)`` for i < ``--train-size`` (the same
pixels as the on-disk train split), visited in a seeded order with seeded flips. ``--style`` picks the
synthetic set's style (``natural``, the default, or the original ``shapes``) for training and validation.

A checkpoint is written every ``--checkpoint-every`` iterations beside ``--out`` (``.ckpt``, removed at
the end); ``--resume`` continues from it. The learning rate is flat until the last ``--decay``
iterations, so a run may be resumed with another ``--iterations`` as long as its decay has not begun,
and is then exactly the run of that length (see ``lr_factor``).

Example::

    python tools/train_embedded_model.py                  # the shipped recipe, about an hour on 2 cores
    python tools/train_embedded_model.py --iterations 50 --val-images 20 --out /tmp/tiny.pth
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

from vcm_eval.data.synthetic import CLASS_NAMES, STYLES, SyntheticDataset, generate_image, generator_version
from vcm_eval.hashing import file_sha256
from vcm_eval.models.embedded import (
    PACKAGED_WEIGHTS,
    EmbeddedArch,
    EmbeddedDetector,
    build_network,
    image_to_tensor,
)

#: Settings a resumed run must share with its checkpoint (``--iterations`` may change; see lr_factor).
_RESUME_MUST_MATCH = ("style", "dataset_seed", "seed", "batch_size", "train_size", "lr", "weight_decay",
                      "warmup", "decay", "clip_grad", "threads")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=PACKAGED_WEIGHTS, help="weights file to write (.pth; .json beside)")
    p.add_argument("--dataset-seed", type=int, default=0, help="synthetic set seed (train and val splits)")
    p.add_argument("--style", default=None, choices=STYLES,
                   help="synthetic set style (train and val splits): natural (photographic; the default) or "
                        "shapes (the original set); with --evaluate-only, default: the style the weights were "
                        "trained on")
    p.add_argument("--seed", type=int, default=0, help="torch seed: initialisation, picture order, flips")
    p.add_argument("--iterations", type=int, default=3500)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train-size", type=int, default=8000, help="distinct training pictures (train split size)")
    p.add_argument("--lr", type=float, default=1.5e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up iterations")
    p.add_argument("--decay", type=int, default=500, help="final cosine decay iterations")
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-images", type=int, default=200, help="val pictures for the final mAP")
    p.add_argument("--data-root", type=Path, default=None, help="synthetic set cache (default: user cache)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=0, help="quick val mAP every N iterations (0 = off)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument("--evaluate-only", action="store_true",
                   help="do not train: re-measure the val mAP of the weights at --out and rewrite its .json")
    return p.parse_args(argv)


def lr_factor(it: int, total: int, warmup: int, decay: int) -> float:
    """Warm-up / stable / decay: (it + 1) / warmup during warm-up, 1 until the last ``decay`` iterations,
    then 0.5 (1 + cos(pi t)) with t going from 0 to 1 over them.

    Until its decay starts, a run is the same whatever ``total`` is, so a run may be continued with a
    smaller ``--iterations`` (``--resume``) and still be exactly the run that flag value describes.
    """
    if it < warmup:
        return (it + 1) / warmup
    start = total - decay
    if it < start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (it - start) / max(1, decay)))


def visiting_order(seed: int, train_size: int, count: int) -> tuple[list[int], list[bool]]:
    """The first ``count`` (picture index, flip) pairs: epoch e visits a permutation drawn from
    SeedSequence([seed, 1, e]); flips come from SeedSequence([seed, 2]). Prefixes do not depend on ``count``."""
    order: list[int] = []
    epoch = 0
    while len(order) < count:
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, epoch])))
        order.extend(int(i) for i in gen.permutation(train_size))
        epoch += 1
    flip_gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 2])))
    flips = [bool(f) for f in flip_gen.random(count) < 0.5]
    return order[:count], flips


def training_batch(indices: list[int], flips: list[bool], seed: int,
                   style: str = "shapes") -> tuple[list[torch.Tensor], list[dict]]:
    """Pictures ``indices`` of the ``style`` train split (horizontally flipped where ``flips``) with
    torchvision targets."""
    images, targets = [], []
    for index, flip in zip(indices, flips):
        rgb, objects = generate_image(seed, "train", index, style)
        boxes = np.asarray([o.box for o in objects], dtype=np.float32).reshape(-1, 4)
        if flip:
            rgb = rgb[:, ::-1]
            w = rgb.shape[1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        images.append(image_to_tensor(rgb))
        targets.append({"boxes": torch.from_numpy(boxes),
                        "labels": torch.as_tensor([o.class_index + 1 for o in objects], dtype=torch.int64)})
    return images, targets


#: The val subset whose mAP tests/test_embedded_model.py re-measures (kept small for a quick test).
TEST_SUBSET_IMAGES = 20


def evaluate(net: torch.nn.Module, arch: EmbeddedArch, args: argparse.Namespace, num_images: int,
             subsets: tuple[int, ...] = ()) -> tuple[dict, dict[int, dict]]:
    """Val mAP of ``net`` on the first ``num_images`` val pictures, through the split interface and
    CocoEvaluator exactly as the pipeline measures it; plus the mAP of the first n pictures for n in
    ``subsets`` (the same detections, scored on fewer pictures)."""
    was_training = net.training
    dataset = SyntheticDataset(split="val", num_images=num_images, root=args.data_root, seed=args.dataset_seed,
                               style=args.style)
    model = EmbeddedDetector(net, CLASS_NAMES, arch, weights_sha256="(training)")
    dets = {r.image_id: model.detect(dataset.load(r)) for r in dataset.records()}
    metrics = dataset.make_evaluator(model.class_names).evaluate(dets)
    per_subset = {}
    for n in subsets:
        sub = SyntheticDataset(split="val", num_images=min(n, num_images), root=args.data_root,
                               seed=args.dataset_seed, style=args.style)
        ids = [r.image_id for r in sub.records()]
        per_subset[n] = sub.make_evaluator(model.class_names).evaluate({i: dets[i] for i in ids})
    net.train(was_training)
    return metrics, per_subset


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def val_record(args: argparse.Namespace, metrics: dict, subset: dict, eval_s: float) -> dict:
    """The ``val`` entry of the weights' .json."""
    return {"split": "val", "style": args.style, "dataset_seed": args.dataset_seed, "num_images": args.val_images,
            "map_50": metrics["map_50"], "map_50_95": metrics["map_50_95"], "metrics": _finite(metrics),
            "subset": {"num_images": TEST_SUBSET_IMAGES, "map_50": subset["map_50"],
                       "map_50_95": subset["map_50_95"]},
            "evaluation_s": round(eval_s, 1)}


def evaluate_only(args: argparse.Namespace) -> int:
    """Re-measure the val mAP of existing weights and rewrite the ``val`` entry of their .json."""
    from vcm_eval.models.embedded import build_embedded_model

    out = args.out.expanduser().resolve()
    model = build_embedded_model(out)
    if args.style is None:  # weights from before styles were trained on the shapes set
        args.style = model.metadata.get("dataset", {}).get("style", "shapes")
    t1 = time.time()
    metrics, subsets = evaluate(model.net, model.arch, args, args.val_images, (TEST_SUBSET_IMAGES,))
    meta = dict(model.metadata)
    meta["val"] = val_record(args, metrics, subsets[TEST_SUBSET_IMAGES], time.time() - t1)
    meta_path = out.with_suffix(".json")
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)
    print(f"val ({args.val_images} pictures): mAP@0.5 {metrics['map_50']:.4f}  mAP@[.5:.95] "
          f"{metrics['map_50_95']:.4f}; first {TEST_SUBSET_IMAGES}: mAP@0.5 "
          f"{subsets[TEST_SUBSET_IMAGES]['map_50']:.4f}; rewrote {meta_path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        return evaluate_only(args)
    args.style = args.style or "natural"
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    train_size = args.train_size
    out = args.out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = out.with_suffix(".ckpt")

    arch = EmbeddedArch()
    net = build_network(arch, len(CLASS_NAMES))
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    order, flips = visiting_order(args.seed, train_size, args.iterations * args.batch_size)

    start_it, elapsed_before = 0, 0.0
    if args.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        same = {k: getattr(args, k) for k in _RESUME_MUST_MATCH}
        if ckpt.get("settings") != same:
            print(f"{ckpt_path} was written with {ckpt.get('settings')}, not {same}; cannot resume", flush=True)
            return 2
        if int(ckpt["iteration"]) > args.iterations - args.decay:
            print(f"{ckpt_path} is at iteration {ckpt['iteration']}, past the start of the decay of a "
                  f"{args.iterations}-iteration run; cannot shorten it to that", flush=True)
            return 2
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_it, elapsed_before = int(ckpt["iteration"]), float(ckpt["elapsed_s"])
        print(f"resumed from {ckpt_path} at iteration {start_it}", flush=True)

    n_params = sum(p.numel() for p in net.parameters())
    print(f"training {n_params / 1e6:.2f} M parameters, {args.iterations} iterations x {args.batch_size} "
          f"pictures from {train_size} train pictures, {args.threads} threads", flush=True)
    t0 = time.time()
    running: dict[str, float] = {}
    for it in range(start_it, args.iterations):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(it, args.iterations, args.warmup, args.decay)
        sl = slice(it * args.batch_size, (it + 1) * args.batch_size)
        images, targets = training_batch(order[sl], flips[sl], args.dataset_seed, args.style)
        losses = net(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            print(f"non-finite loss at iteration {it}: {({k: v.item() for k, v in losses.items()})}", flush=True)
            return 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip_grad)
        opt.step()
        for k, v in losses.items():
            running[k] = 0.9 * running.get(k, v.item()) + 0.1 * v.item()
        done = it + 1
        if done % args.log_every == 0 or done == args.iterations:
            spent = time.time() - t0
            per_it = spent / (done - start_it)
            eta = per_it * (args.iterations - done)
            parts = " ".join(f"{k.removeprefix('loss_')}={v:.3f}" for k, v in running.items())
            print(f"it {done}/{args.iterations} lr={opt.param_groups[0]['lr']:.2e} {parts} "
                  f"{per_it:.2f}s/it eta {eta / 60:.1f} min", flush=True)
        if args.eval_every and done % args.eval_every == 0 and done < args.iterations:
            m, _ = evaluate(net, arch, args, min(50, args.val_images))
            print(f"it {done}: val mAP@0.5 {m['map_50']:.3f} mAP@[.5:.95] {m['map_50_95']:.3f} (50 pictures)",
                  flush=True)
        if done % args.checkpoint_every == 0 and done < args.iterations:
            tmp = ckpt_path.with_suffix(".ckpt.tmp")
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": done,
                        "settings": {k: getattr(args, k) for k in _RESUME_MUST_MATCH},
                        "torch_rng": torch.get_rng_state(), "elapsed_s": elapsed_before + time.time() - t0}, tmp)
            os.replace(tmp, ckpt_path)
    train_s = elapsed_before + time.time() - t0

    print(f"training done in {train_s / 60:.1f} min; evaluating on {args.val_images} val pictures", flush=True)
    t1 = time.time()
    metrics, subsets = evaluate(net, arch, args, args.val_images, (TEST_SUBSET_IMAGES,))
    eval_s = time.time() - t1
    net.eval()
    tmp = out.with_suffix(".pth.tmp")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, out)
    meta = {
        "name": "embedded",
        "class_names": list(CLASS_NAMES),
        "architecture": arch.to_json(),
        "dataset": {"generator": "vcm_eval.data.synthetic", "style": args.style,
                    "generator_version": generator_version(args.style), "seed": args.dataset_seed,
                    "train_pictures": train_size},
        "recipe": {"tool": "tools/train_embedded_model.py", "optimizer": "AdamW", "lr": args.lr,
                   "weight_decay": args.weight_decay,
                   "schedule": "linear warm-up, constant, cosine decay over the last `decay` iterations",
                   "warmup": args.warmup, "decay": args.decay, "train_pictures": train_size,
                   "iterations": args.iterations, "batch_size": args.batch_size,
                   "clip_grad": args.clip_grad, "augmentation": "horizontal flip p=0.5", "seed": args.seed,
                   "threads": args.threads, "device": "cpu"},
        "val": val_record(args, metrics, subsets[TEST_SUBSET_IMAGES], eval_s),
        "training_s": round(train_s, 1),
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "sha256": file_sha256(out),
    }
    meta_tmp = out.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(meta_tmp, out.with_suffix(".json"))
    if ckpt_path.is_file():
        ckpt_path.unlink()
    print(f"val ({args.val_images} pictures): mAP@0.5 {metrics['map_50']:.4f}  mAP@[.5:.95] "
          f"{metrics['map_50_95']:.4f}", flush=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.json').name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
