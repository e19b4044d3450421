"""Run a Detectron2 zoo Faster R-CNN FPN (vcm_eval's implementation) on one picture.

Writes the detections as JSON (boxes x0, y0, x1, y1 in the picture's pixels, scores, class indices
and names) and, on request, the C-layer maps the split sees as ``.npz``. The detections come from
``decode(encode(image))``, so the saved C-layers are exactly what the decoder side consumed.

    python tools/run_detector.py --zoo faster_rcnn_X_101_32x8d_FPN_3x --weights model_final_68b088.pkl \\
        photo.jpg --output photo.json --save-clayers photo_clayers.npz

The ``.npz`` holds ``c2..c5`` (float32 (256, Hp/s, Wp/s)) and ``original_size``, ``input_size``,
``padded_size`` (each (height, width)). Exit status 2 with a one-line message for bad input
(missing or unreadable picture, missing or mismatched weights, unknown zoo name).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vcm_eval.data.images import ImageReadError, read_image
from vcm_eval.models.base import WeightsError
from vcm_eval.models.rcnn import ZOO, build_zoo_model


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
    return ap.parse_args(argv)


def detections_json(image_path: Path, model, features, dets) -> dict:
    names = model.class_names
    return {
        "image": str(image_path),
        "height": features.meta.original_size[0],
        "width": features.meta.original_size[1],
        "input_size": list(features.meta.input_size),
        "padded_size": list(features.meta.padded_size),
        "model": model.identity(),
        "detections": [
            {"box": [float(v) for v in box], "score": float(score), "class": int(cls), "class_name": names[int(cls)]}
            for box, score, cls in zip(dets.boxes, dets.scores, dets.classes)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
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
    print(f"{len(dets)} detections on {args.image} ({result['width']}x{result['height']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
