"""Held-out measurement of a trained checkpoint: real coded bpp, P-map D and the detector's mAP@0.5.

On train pictures after the training ones (never seen in training, never the CTC's val pictures); the
training tool records the figures in each checkpoint's JSON.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from proposals.learned_fusion.coder import SIDE_INFO_BITS, ExactCoder
from proposals.learned_fusion.network import LEVELS, FusionCodec
from proposals.learned_fusion.objective import p_maps


def measure(net: FusionCodec, model, fpn, args: argparse.Namespace, p_var: list[float]) -> dict:
    """Real coded bpp (per original pixel, side information included), P-map D and mAP@0.5 of the detector on
    ``args.eval_pictures`` train pictures after the ``args.train_pictures`` training ones (of the synthetic set
    ``args.dataset_seed``, ``args.style``)."""
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
