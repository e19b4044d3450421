#!/usr/bin/env python
"""Train the learned_fusion checkpoints (proposals/learned_fusion.py), one per lambda, on CPU.

Data: the C-layers of the first ``--train-pictures`` pictures of the synthetic **train** split (never val,
never the CTC's pictures), computed once with the frozen split model and kept in memory; batches are random
crops of ``--crop`` x ``--crop`` input pixels (aligned to stride 32, so every level crops exactly).

Loss, per batch::

    L = lambda * D + R
    R = -(sum log2 p(y^) + sum log2 p(z^)) / (batch * crop * crop)             bits per input pixel
    D = 1/4 sum_k MSE(P^_k, P_k) / var(P_k)  +  w_c * 1/4 sum_k MSE(C^_k, C_k) / var(C_k)

where ``P_k = layer_blocks[k](T_k)``, ``T_5 = C_5``, ``T_k = C_k + up2(T_{k+1})`` is the frozen model's FPN
top-down pathway with its 3x3 output convolutions (computed from the reconstructed and from the original
C-layers), and the variances, measured once on the training C-layers, make every level count alike.

Schedule: the base rate point (``--base-index``) is trained from scratch for ``--base-iterations``; every
other rate point is fine-tuned from the base for ``--finetune-iterations`` at its own lambda. Each ends with
a cosine decay of the learning rate. Then ``update(force=True, update_quantiles=True)`` fills the CDF tables and
``<out-dir>/rp<i>.pth`` + ``rp<i>.json`` are written (lambda, settings, data, the model weights' sha256,
training time, sha256 of the .pth), and, unless ``--eval-pictures 0``, the real coded bpp, the P-map D and
the detector's mAP@0.5 are measured on held-out train pictures (indices after the training ones).

Deterministic for a given thread count: torch seed, numpy ``Generator`` crops, fixed threads. ``--resume``
keeps every rate point whose files exist with the same settings (the base rate point: the same settings but
for the fine-tuning ones; the base is needed again only when a fine-tuned one is missing, and is kept as
``base.pt`` in the out dir until all are done).

Example::

    python tools/train_learned_fusion.py                        # the shipped checkpoints (~55 min on 2 cores)
    python tools/train_learned_fusion.py model=my_model --out-dir my_ckpts   # a model of conf/model/
    python tools/train_learned_fusion.py --train-pictures 8 --base-iterations 5 --finetune-iterations 2 \\
        --lambdas 4 1 --eval-pictures 2 --out-dir /tmp/lf
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
import torch.nn.functional as F

from proposals.learned_fusion import (
    LEVELS,
    SIDE_INFO_BITS,
    WEIGHTS_DIR,
    ExactCoder,
    FusionArch,
    FusionCodec,
    count_parameters,
    file_sha256,
    round_for_storage,
    storage_state,
)

#: lambda per rate point index (index 0 = most bits); see docs/learned.md for how they were chosen
DEFAULT_LAMBDAS = (40.0, 12.0, 4.0, 1.5, 0.6, 0.25)


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


# --------------------------------------------------------------------------- the model and its FPN


def build_split_model(overrides: list[str]):
    """The split model of ``conf/model`` with ``overrides`` (Hydra syntax), as the pipeline builds it."""
    from hydra import compose, initialize_config_dir

    from vcm_eval.build import build
    from vcm_eval.cli import CONFIG_DIR
    from vcm_eval.models.base import SplitModel

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return build(cfg.model, expect=SplitModel, what="model"), cfg


def model_fpn(model) -> torch.nn.Module | None:
    """The torchvision FPN of the model (``layer_blocks`` are its 3x3 output convolutions), or None."""
    net = getattr(model, "net", None)
    fpn = getattr(getattr(net, "backbone", None), "fpn", None)
    return fpn if fpn is not None and hasattr(fpn, "layer_blocks") else None


def p_maps(fpn: torch.nn.Module | None, layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[P2..P5]`` of ``[C2..C5]``: the FPN's top-down sums and 3x3 output convs (differentiable). Without an
    FPN module the top-down sums ``T_k`` themselves."""
    last = layers[-1]
    sums = [last]
    for c in reversed(layers[:-1]):
        last = c + F.interpolate(last, size=c.shape[-2:], mode="nearest")
        sums.insert(0, last)
    if fpn is None:
        return sums
    return [fpn.layer_blocks[k](t) for k, t in enumerate(sums)]


# --------------------------------------------------------------------------- data


def train_clayers(model, num: int, seed: int, style: str, first: int = 0) -> list[list[np.ndarray]]:
    """C-layers ``[c2..c5]`` of train pictures ``first .. first + num - 1``."""
    from vcm_eval.data.synthetic import generate_image

    torch_threads = torch.get_num_threads()
    out = []
    t0 = time.time()
    for i in range(first, first + num):
        rgb, _ = generate_image(seed, "train", i, style)
        feats = model.encode(rgb)
        out.append([np.ascontiguousarray(feats.layers[lv], dtype=np.float32) for lv in LEVELS])
        if (i - first + 1) % 200 == 0:
            print(f"  C-layers of {i - first + 1}/{num} train pictures ({time.time() - t0:.0f} s)", flush=True)
    torch.set_num_threads(torch_threads)
    return out


def random_batch(data: list[list[np.ndarray]], rng: np.random.Generator, batch: int, crop: int) -> list[torch.Tensor]:
    """``batch`` crops of ``crop`` input pixels (offsets on the stride-32 grid), per level ``(B, C, h, w)``."""
    c5 = crop // 32
    per_level: list[list[np.ndarray]] = [[] for _ in LEVELS]
    for _ in range(batch):
        layers = data[int(rng.integers(len(data)))]
        h5, w5 = layers[3].shape[-2:]
        oy = int(rng.integers(max(1, h5 - c5 + 1)))
        ox = int(rng.integers(max(1, w5 - c5 + 1)))
        flip = bool(rng.random() < 0.5)
        for k, a in enumerate(layers):
            s = 2 ** (3 - k)  # c2 is 8x c5
            part = a[:, oy * s:(oy + c5) * s, ox * s:(ox + c5) * s]
            per_level[k].append(part[:, :, ::-1] if flip else part)
    return [torch.from_numpy(np.ascontiguousarray(np.stack(p))) for p in per_level]


def level_variances(fpn, data: list[list[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Variance of every P-map level and every C-layer over (up to 100 of) the training pictures."""
    sample = data[:: max(1, len(data) // 100)]
    p_acc = np.zeros((len(LEVELS), 2))
    c_acc = np.zeros((len(LEVELS), 2))
    with torch.no_grad():
        for layers in sample:
            x = [torch.from_numpy(a)[None] for a in layers]
            for k, p in enumerate(p_maps(fpn, x)):
                p_acc[k] += [p.mean().item(), (p * p).mean().item()]
            for k, c in enumerate(x):
                c_acc[k] += [c.mean().item(), (c * c).mean().item()]
    p_acc /= len(sample)
    c_acc /= len(sample)
    return ([float(m2 - m * m) for m, m2 in p_acc], [float(m2 - m * m) for m, m2 in c_acc])


# --------------------------------------------------------------------------- training


def distortion(fpn, recon: list[torch.Tensor], target: list[torch.Tensor], target_p: list[torch.Tensor],
               p_var: list[float], c_var: list[float], clayer_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D, D_P)``: the loss's distortion and its P-map part (see the module docstring)."""
    rec_p = p_maps(fpn, recon)
    d_p = sum(F.mse_loss(a, b) / v for a, b, v in zip(rec_p, target_p, p_var)) / len(LEVELS)
    d_c = sum(F.mse_loss(a, b) / v for a, b, v in zip(recon, target, c_var)) / len(LEVELS)
    return d_p + clayer_weight * d_c, d_p


def rate_bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    return sum(torch.log(lk).sum() for lk in likelihoods.values()) / (-math.log(2) * num_pixels)


def train_one(net: FusionCodec, fpn, data, lam: float, iterations: int, lr: float, args: argparse.Namespace,
              rng: np.random.Generator, p_var: list[float], c_var: list[float], tag: str) -> dict:
    """Train ``net`` in place for ``iterations`` at ``lam``; returns running averages of the last log window."""
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-2)
    warmup = min(50, iterations // 10)
    decay_start = int(iterations * 0.6)
    net.train()
    running: dict[str, float] = {}
    t0 = time.time()
    num_pixels = args.batch_size * args.crop * args.crop
    for it in range(iterations):
        if it < warmup:
            factor = (it + 1) / warmup
        elif it < decay_start:
            factor = 1.0
        else:
            factor = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (it - decay_start) / max(1, iterations - decay_start)))
        for g in opt.param_groups:
            g["lr"] = lr * factor
        target = random_batch(data, rng, args.batch_size, args.crop)
        with torch.no_grad():
            target_p = p_maps(fpn, target)
        out = net(target)
        d, d_p = distortion(fpn, out["layers"], target, target_p, p_var, c_var, args.clayer_weight)
        r = rate_bpp(out["likelihoods"], num_pixels)
        loss = lam * d + r
        if not torch.isfinite(loss):
            raise RuntimeError(f"{tag}: non-finite loss at iteration {it}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        for k, v in (("loss", loss.item()), ("bpp", r.item()), ("D", d.item()), ("D_P", d_p.item()),
                     ("aux", aux.item())):
            running[k] = v if k not in running else 0.95 * running[k] + 0.05 * v
        done = it + 1
        if done % args.log_every == 0 or done == iterations:
            per_it = (time.time() - t0) / done
            print(f"{tag} it {done}/{iterations} lr={lr * factor:.1e} loss={running['loss']:.4f} "
                  f"bpp={running['bpp']:.4f} D={running['D']:.4f} D_P={running['D_P']:.4f} aux={running['aux']:.1f} "
                  f"{per_it:.2f}s/it eta {per_it * (iterations - done) / 60:.1f} min", flush=True)
    net.eval()
    return running


# --------------------------------------------------------------------------- held-out measurement


def measure(net: FusionCodec, model, fpn, args: argparse.Namespace, p_var: list[float]) -> dict:
    """Real coded bpp (per original pixel, side information included), P-map D and mAP@0.5 of the detector on
    ``--eval-pictures`` train pictures after the training ones (never seen in training)."""
    from vcm_eval.data.synthetic import coco_categories, generate_image
    from vcm_eval.evaluation.coco import CocoEvaluator

    coder = ExactCoder(net)
    images, annotations, dets = [], [], {}
    bpps, d_ps = [], []
    for n in range(args.eval_pictures):
        index = args.train_pictures + n
        rgb, objects = generate_image(args.dataset_seed, "train", index, args.style)
        feats = model.encode(rgb)
        layers = [feats.layers[lv] for lv in LEVELS]
        coded = coder.compress(layers)
        bits = 8 * (len(coded.y_string) + len(coded.z_string)) + SIDE_INFO_BITS
        bpps.append(bits / (rgb.shape[0] * rgb.shape[1]))
        with torch.no_grad():
            ref = p_maps(fpn, [torch.from_numpy(a)[None] for a in layers])
            rec = p_maps(fpn, [torch.from_numpy(a)[None] for a in coded.layers])
            d_ps.append(float(sum(F.mse_loss(a, b).item() / v for a, b, v in zip(rec, ref, p_var)) / len(LEVELS)))
        image_id = n + 1
        dets[str(image_id)] = model.decode(feats.replace_layers(dict(zip(LEVELS, coded.layers))))
        images.append({"id": image_id, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])})
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj.class_index + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": obj.area, "iscrowd": 0})
    doc = {"images": images, "annotations": annotations, "categories": coco_categories()}
    metrics = CocoEvaluator(doc, [im["id"] for im in images], model.class_names).evaluate(dets)
    return {"pictures": f"train {args.train_pictures}..{args.train_pictures + args.eval_pictures - 1}",
            "bpp": float(np.mean(bpps)), "d_p": float(np.mean(d_ps)), "map_50": metrics["map_50"]}


# --------------------------------------------------------------------------- main


def settings(args: argparse.Namespace, arch: FusionArch, model_sha: str) -> dict:
    return {"lambdas": list(args.lambdas), "base_index": args.base_index, "base_iterations": args.base_iterations,
            "finetune_iterations": args.finetune_iterations, "batch_size": args.batch_size, "crop": args.crop,
            "lr": args.lr, "finetune_lr": args.finetune_lr, "clayer_weight": args.clayer_weight,
            "train_pictures": args.train_pictures, "dataset_seed": args.dataset_seed, "style": args.style,
            "seed": args.seed, "threads": args.threads, "architecture": arch.to_json(), "model_sha256": model_sha,
            "model_overrides": list(args.overrides)}


#: settings that only the fine-tuned rate points depend on: a resumed run may change them and keep the base
FINETUNE_ONLY = ("finetune_iterations", "finetune_lr")


def base_settings(settings_: dict) -> dict:
    """The settings the base rate point depends on."""
    return {k: v for k, v in settings_.items() if k not in FINETUNE_ONLY}


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = args.out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model, cfg = build_split_model(args.overrides)
    identity = model.identity()
    model_sha = str(identity.get("weights_sha256", ""))
    fpn = model_fpn(model)
    if fpn is None:
        print("the model exposes no torchvision FPN (net.backbone.fpn): D uses the top-down sums T_k instead of "
              "the P-maps", flush=True)
    else:
        for p in fpn.parameters():
            p.requires_grad_(False)

    t_data = time.time()
    print(f"C-layers of {args.train_pictures} train pictures ({args.style}, seed {args.dataset_seed}) ...", flush=True)
    data = train_clayers(model, args.train_pictures, args.dataset_seed, args.style)
    channels = int(data[0][0].shape[0])
    arch = FusionArch(channels=channels, hidden=args.hidden, latent=args.latent, hyper=args.hyper, fine=args.fine,
                      kernel=args.kernel)
    p_var, c_var = level_variances(fpn, data)
    print(f"  done in {time.time() - t_data:.0f} s; P-map variances {[round(v, 4) for v in p_var]}, "
          f"C-layer variances {[round(v, 4) for v in c_var]}", flush=True)
    same = settings(args, arch, model_sha)

    order = [args.base_index] + [i for i in range(len(args.lambdas)) if i != args.base_index]
    base_path = out_dir / "base.pt"
    base_state = None
    base_s = 0.0
    for index in order:
        pth, meta_path = out_dir / f"rp{index}.pth", out_dir / f"rp{index}.json"
        lam = float(args.lambdas[index])
        if args.resume and pth.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            kept = meta.get("settings") == same or (index == args.base_index and meta.get("settings") is not None
                                                    and base_settings(meta["settings"]) == base_settings(same))
            if kept and meta.get("sha256") == file_sha256(pth):
                print(f"rp{index}: kept (same settings)", flush=True)
                continue
        # each rate point draws its own crops, so a resumed run gives the same checkpoints
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([args.seed, index])))
        torch.manual_seed(args.seed * 1000 + index)
        net = FusionCodec(arch)
        t0 = time.time()
        if index == args.base_index:
            if args.resume and base_path.is_file():
                saved = torch.load(base_path, map_location="cpu", weights_only=False)
                if base_settings(saved["settings"]) == base_settings(same):
                    base_state, base_s = saved["state"], saved["training_s"]
            if base_state is None:
                print(f"rp{index}: lambda {lam:g}, {count_parameters(net)} parameters, from scratch, "
                      f"{args.base_iterations} iterations x {args.batch_size} crops of {args.crop} px", flush=True)
                train_one(net, fpn, data, lam, args.base_iterations, args.lr, args, rng, p_var, c_var, f"rp{index}")
                base_state = {k: v.clone() for k, v in net.state_dict().items()}
                base_s = time.time() - t0
                torch.save({"state": base_state, "settings": same, "training_s": base_s}, base_path)
            net.load_state_dict(base_state)
            iterations, train_s = args.base_iterations, base_s
            recipe = "from scratch"
        else:
            if base_state is None:
                saved = torch.load(base_path, map_location="cpu", weights_only=False) if base_path.is_file() else None
                if saved is None or base_settings(saved["settings"]) != base_settings(same):
                    print(f"rp{index}: needs the base rate point rp{args.base_index}, which is missing; run "
                          "without --resume", flush=True)
                    return 2
                base_state, base_s = saved["state"], saved["training_s"]
            net.load_state_dict(base_state)
            print(f"rp{index}: lambda {lam:g}, fine-tuned from rp{args.base_index} for {args.finetune_iterations} "
                  "iterations", flush=True)
            train_one(net, fpn, data, lam, args.finetune_iterations, args.finetune_lr, args, rng, p_var, c_var,
                      f"rp{index}")
            iterations, train_s = args.base_iterations + args.finetune_iterations, base_s + time.time() - t0
            recipe = f"fine-tuned from rp{args.base_index}"
        round_for_storage(net)
        # the quantiles of the entropy bottleneck are searched directly (the aux loss alone converges slowly)
        net.update(scale_table=arch.scale_table(), force=True, update_quantiles=True)
        tmp = pth.with_suffix(".pth.tmp")
        torch.save(storage_state(net), tmp)
        os.replace(tmp, pth)
        evaluation = None
        if args.eval_pictures > 0:
            t1 = time.time()
            evaluation = measure(net, model, fpn, args, p_var)
            evaluation["measure_s"] = round(time.time() - t1, 1)
            print(f"rp{index}: held-out {evaluation['pictures']}: bpp {evaluation['bpp']:.4f}  D_P "
                  f"{evaluation['d_p']:.4f}  mAP@0.5 {evaluation['map_50']:.4f}", flush=True)
        import compressai

        meta = {
            "name": "learned_fusion",
            "rate_point": index,
            "lambda": lam,
            "architecture": arch.to_json(),
            "parameters": count_parameters(net),
            "recipe": {"tool": "tools/train_learned_fusion.py", "init": recipe, "iterations": iterations,
                       "loss": "lambda * D + R; D = mean_k MSE(P^_k,P_k)/var(P_k) + clayer_weight * "
                               "mean_k MSE(C^_k,C_k)/var(C_k); R = bits per input pixel",
                       "optimizer": "Adam (+ Adam 1e-2 on the entropy bottleneck quantiles, then update_quantiles)",
                       "storage": "convolution weights and biases float16 (rounded before update and measurement), "
                                  "entropy models and GDN float32",
                       "p_map_variances": p_var, "clayer_variances": c_var},
            "settings": same,
            "data": {"generator": "vcm_eval.data.synthetic", "split": "train", "style": args.style,
                     "seed": args.dataset_seed, "pictures": f"0..{args.train_pictures - 1}",
                     "crop": args.crop},
            "model": {"name": identity.get("name"), "weights_sha256": model_sha,
                      "overrides": list(args.overrides), "channels": channels},
            "training_s": round(train_s, 1),
            "held_out": evaluation,
            "environment": {"torch": torch.__version__, "compressai": compressai.__version__,
                            "python": platform.python_version(), "machine": platform.machine()},
            "sha256": file_sha256(pth),
        }
        _write_json(meta_path, meta)
        print(f"rp{index}: wrote {pth} ({pth.stat().st_size / 1e6:.2f} MB), trained {train_s / 60:.1f} min", flush=True)
    if base_path.is_file():
        base_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
