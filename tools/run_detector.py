"""Run a Detectron2 zoo Faster R-CNN FPN or Mask R-CNN FPN (vcm_eval's implementation) on one picture.

Writes the detections as JSON (boxes x0, y0, x1, y1 in the picture's pixels, scores, class indices
and names; for Mask R-CNN also each instance's mask as a COCO RLE ``segmentation``) and, on request,
the C-layer maps the split sees as ``.npz``. The detections come from ``decode(encode(image))``, so the
saved C-layers are exactly what the decoder side consumed.

    python tools/run_detector.py --zoo faster_rcnn_X_101_32x8d_FPN_3x --weights model_final_68b088.pkl \\
        photo.jpg --output photo.json --save-clayers photo_clayers.npz
    python tools/run_detector.py --zoo mask_rcnn_X_101_32x8d_FPN_3x --weights model_final_2d9806.pkl \\
        000000397133.jpg --masks 397133_segm.json

The C-layer ``.npz`` holds ``c2..c5`` (float32 (256, Hp/s, Wp/s)) and ``original_size``, ``input_size``,
``padded_size`` (each (height, width)).

``--masks`` (Mask R-CNN only) writes the instance masks by the file's suffix:

* ``.json``: a COCO results list, one ``{"image_id", "category_id", "bbox": [x, y, w, h], "score",
  "segmentation": {"size": [H, W], "counts": RLE}}`` per instance: the layout of the
  ``coco_instances_results.json`` that Detectron2's ``COCOEvaluator`` writes (CompressAI-Vision's
  ``COCO-EVAL`` evaluator runs that evaluator), which ``pycocotools`` ``COCO.loadRes`` +
  ``COCOeval(iouType="segm")`` take as is. ``category_id`` is the
  COCO category id of the class, ``image_id`` is ``--image-id`` (default: the file name's number, as in
  COCO's ``000000397133.jpg``, else the file name without suffix);
* ``.npz``: ``masks`` (N, H, W) bool, with ``boxes``, ``scores``, ``classes`` (compressed).

Exit status 2 with a one-line message for bad input (missing or unreadable picture, missing or mismatched
weights, unknown zoo name, ``--masks`` for a model without masks or with another suffix).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vcm_eval.data.images import ImageReadError, read_image
from vcm_eval.models.base import WeightsError
from vcm_eval.models.rcnn import COCO_CATEGORY_IDS, ZOO, build_zoo_model
from vcm_eval.models.rcnn.mask_head import masks_to_coco_rle

MASK_SUFFIXES = (".json", ".npz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path, help="picture to run on (any format Pillow reads)")
    ap.add_argument("--zoo", required=True, choices=sorted(ZOO), help="Detectron2 zoo configuration")
    ap.add_argument("--weights", required=True, type=Path, help="its checkpoint (model_final_*.pkl or .pth)")
    ap.add_argument("--min-size", type=int, default=800, help="INPUT.MIN_SIZE_TEST (default 800)")
    ap.add_argument("--max-size", type=int, default=1333, help="INPUT.MAX_SIZE_TEST (default 1333)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--output", type=Path, help="detections JSON file (default: standard output)")
    ap.add_argument("--save-clayers", type=Path, metavar="NPZ", help="also write the C-layer maps here")
    ap.add_argument("--masks", type=Path, metavar="FILE",
                    help="Mask R-CNN: also write the instance masks, as COCO results with RLE (.json) "
                         "or bool arrays (.npz)")
    ap.add_argument("--image-id", help="image_id in the --masks COCO results (default: the file name's number)")
    return ap.parse_args(argv)


def coco_image_id(image_path: Path, given: str | None) -> int | str:
    """``given`` or the picture's file stem, as an int when it is one (COCO's ``000000397133.jpg`` -> 397133)."""
    value = given if given is not None else image_path.stem
    return int(value) if value.isdigit() else value


def coco_instance_results(dets, image_id: int | str) -> list[dict]:
    """COCO results (``iouType="segm"`` and ``"bbox"``) of detections with masks, as Detectron2 writes them."""
    out = []
    for box, score, cls, rle in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist(),
                                    masks_to_coco_rle(dets.masks)):
        x0, y0, x1, y1 = box
        out.append({"image_id": image_id, "category_id": COCO_CATEGORY_IDS[int(cls)],
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score), "segmentation": rle})
    return out


def write_masks(path: Path, dets, image_id: int | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(coco_instance_results(dets, image_id)) + "\n")
    else:
        with open(path, "wb") as f:  # a file object keeps the name exactly as given
            np.savez_compressed(f, masks=dets.masks, boxes=dets.boxes, scores=dets.scores, classes=dets.classes)


def detections_json(image_path: Path, model, features, dets) -> dict:
    names = model.class_names
    rles = masks_to_coco_rle(dets.masks) if dets.masks is not None else [None] * len(dets)
    return {
        "image": str(image_path),
        "height": features.meta.original_size[0],
        "width": features.meta.original_size[1],
        "input_size": list(features.meta.input_size),
        "padded_size": list(features.meta.padded_size),
        "model": model.identity(),
        "detections": [
            {"box": [float(v) for v in box], "score": float(score), "class": int(cls), "class_name": names[int(cls)],
             **({"segmentation": rle} if rle is not None else {})}
            for box, score, cls, rle in zip(dets.boxes, dets.scores, dets.classes, rles)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.masks is not None:
            if not ZOO[args.zoo].mask_on:
                raise ValueError(f"--masks needs an instance segmentation model (mask_rcnn_*); {args.zoo} has no masks")
            if args.masks.suffix.lower() not in MASK_SUFFIXES:
                raise ValueError(f"--masks {args.masks}: the suffix must be one of {', '.join(MASK_SUFFIXES)}")
        image = read_image(args.image)  # before the (slow) model load, so a bad picture fails fast
        model = build_zoo_model(args.zoo, args.weights, args.min_size, args.max_size, args.device)
        features = model.encode(image)
        dets = model.decode(features)
    except (ImageReadError, WeightsError, ValueError) as exc:
        print(f"run_detector: error: {exc}", file=sys.stderr)
        return 2
    result = detections_json(args.image, model, features, dets)
    text = json.dumps(result, indent=1)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    else:
        print(text)
    if args.save_clayers:
        args.save_clayers.parent.mkdir(parents=True, exist_ok=True)
        meta = features.meta
        with open(args.save_clayers, "wb") as f:  # a file object keeps the name exactly as given
            np.savez(f, **features.layers, original_size=np.array(meta.original_size),
                     input_size=np.array(meta.input_size), padded_size=np.array(meta.padded_size))
    if args.masks:
        write_masks(args.masks, dets, coco_image_id(args.image, args.image_id))
    print(f"{len(dets)} detections on {args.image} ({result['width']}x{result['height']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
