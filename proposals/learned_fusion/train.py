"""Training of the learned entry's checkpoints, one per lambda, on CPU (``tools/train_learned_fusion.py``).

Data (:mod:`~proposals.learned_fusion.training_data`): the C-layers of the first ``train_pictures``
pictures of the synthetic **train** split (never val, never the CTC's pictures), computed once with the
frozen split model and kept in memory; batches are random crops of ``crop`` x ``crop`` input pixels
(aligned to stride 32, so every level crops exactly).

Loss, per batch (:mod:`~proposals.learned_fusion.objective`)::

    L = lambda * D + R
    R = -(sum log2 p(y^) + sum log2 p(z^)) / (batch * crop * crop)             bits per input pixel
    D = 1/4 sum_k MSE(P^_k, P_k) / var(P_k)  +  w_c * 1/4 sum_k MSE(C^_k, C_k) / var(C_k)

Schedule: the base rate point (``base_index``) is trained from scratch for ``base_iterations``; every
other rate point is fine-tuned from the base for ``finetune_iterations`` at its own lambda. Each ends with
a cosine decay of the learning rate. Then ``update(force=True, update_quantiles=True)`` fills the CDF tables and
``<out_dir>/rp<i>.pth`` + ``rp<i>.json`` are written (lambda, settings, data, the model weights' sha256,
training time, sha256 of the .pth), and, unless ``eval_pictures`` is 0, the real coded bpp, the P-map D and
the detector's mAP@0.5 are measured on held-out train pictures (:mod:`~proposals.learned_fusion.measure`).

Deterministic for a given thread count: torch seed, numpy ``Generator`` crops, fixed threads. ``resume``
keeps every rate point whose files exist with the same settings (the base rate point: the same settings but
for the fine-tuning ones; the base is needed again only when a fine-tuned one is missing, and is kept as
``base.pt`` in the out dir until all are done).

The settings are the ``argparse.Namespace`` of the tool's command line (its options, dashes as underscores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import compressai
import numpy as np
import torch

from proposals.learned_fusion.measure import measure
from proposals.learned_fusion.network import (
    FusionArch,
    FusionCodec,
    count_parameters,
    round_for_storage,
    storage_state,
)
from proposals.learned_fusion.objective import distortion, level_variances, model_fpn, p_maps, rate_bpp
from proposals.learned_fusion.training_data import build_split_model, random_batch, train_clayers
from vcm_eval.hashing import file_sha256

#: lambda per rate point index (index 0 = most bits); see docs/learned.md for how they were chosen
DEFAULT_LAMBDAS = (40.0, 12.0, 4.0, 1.5, 0.6, 0.25)
#: settings that only the fine-tuned rate points depend on: a resumed run may change them and keep the base
FINETUNE_ONLY = ("finetune_iterations", "finetune_lr")


# --------------------------------------------------------------------------- one rate point


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


# --------------------------------------------------------------------------- every rate point


def settings(args: argparse.Namespace, arch: FusionArch, model_sha: str) -> dict:
    """What a checkpoint's results depend on, recorded in its JSON; ``resume`` keeps files of equal settings."""
    return {"lambdas": list(args.lambdas), "base_index": args.base_index, "base_iterations": args.base_iterations,
            "finetune_iterations": args.finetune_iterations, "batch_size": args.batch_size, "crop": args.crop,
            "lr": args.lr, "finetune_lr": args.finetune_lr, "clayer_weight": args.clayer_weight,
            "train_pictures": args.train_pictures, "dataset_seed": args.dataset_seed, "style": args.style,
            "seed": args.seed, "threads": args.threads, "architecture": arch.to_json(), "model_sha256": model_sha,
            "model_overrides": list(args.overrides)}


def base_settings(settings_: dict) -> dict:
    """The settings the base rate point depends on."""
    return {k: v for k, v in settings_.items() if k not in FINETUNE_ONLY}


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finished(pth: Path, meta_path: Path, same: dict, is_base: bool) -> bool:
    """Whether a resumed run keeps rate point ``pth``: its files exist, were trained with the settings ``same``
    (the base rate point: all but :data:`FINETUNE_ONLY`), and the ``.pth`` is the one its JSON records."""
    if not (pth.is_file() and meta_path.is_file()):
        return False
    meta = json.loads(meta_path.read_text())
    kept = meta.get("settings") == same or (is_base and meta.get("settings") is not None
                                            and base_settings(meta["settings"]) == base_settings(same))
    return kept and meta.get("sha256") == file_sha256(pth)


def _save(net: FusionCodec, arch: FusionArch, pth: Path) -> None:
    """Round the network as the checkpoint stores it, fill its CDF tables, and write ``pth`` atomically."""
    round_for_storage(net)
    # the quantiles of the entropy bottleneck are searched directly (the aux loss alone converges slowly)
    net.update(scale_table=arch.scale_table(), force=True, update_quantiles=True)
    tmp = pth.with_suffix(".pth.tmp")
    torch.save(storage_state(net), tmp)
    os.replace(tmp, pth)


def _description(args: argparse.Namespace, net: FusionCodec, arch: FusionArch, index: int, recipe: str,
                 iterations: int, train_s: float, evaluation: dict | None, same: dict, identity: dict,
                 channels: int, p_var: list[float], c_var: list[float], pth: Path) -> dict:
    """The JSON written beside checkpoint ``pth`` (what :func:`~proposals.learned_fusion.checkpoints.
    read_checkpoint_meta` reads back)."""
    model_sha = str(identity.get("weights_sha256", ""))
    return {
        "name": "learned_fusion",
        "rate_point": index,
        "lambda": float(args.lambdas[index]),
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


def train_checkpoints(args: argparse.Namespace) -> int:
    """Train every rate point of ``args.lambdas`` and write ``rp<i>.pth`` + ``rp<i>.json`` into ``args.out_dir``.

    Returns:
        0; 2 when a resumed run needs the base rate point's ``base.pt`` and it is missing (the message says so).
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = args.out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model, _ = build_split_model(args.overrides)
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
        if args.resume and _finished(pth, meta_path, same, index == args.base_index):
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
        _save(net, arch, pth)
        evaluation = None
        if args.eval_pictures > 0:
            t1 = time.time()
            evaluation = measure(net, model, fpn, args, p_var)
            evaluation["measure_s"] = round(time.time() - t1, 1)
            print(f"rp{index}: held-out {evaluation['pictures']}: bpp {evaluation['bpp']:.4f}  D_P "
                  f"{evaluation['d_p']:.4f}  mAP@0.5 {evaluation['map_50']:.4f}", flush=True)
        _write_json(meta_path, _description(args, net, arch, index, recipe, iterations, train_s, evaluation, same,
                                            identity, channels, p_var, c_var, pth))
        print(f"rp{index}: wrote {pth} ({pth.stat().st_size / 1e6:.2f} MB), trained {train_s / 60:.1f} min", flush=True)
    if base_path.is_file():
        base_path.unlink()
    return 0
