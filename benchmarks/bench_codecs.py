#!/usr/bin/env python
"""Time, bits and PSNR of each picture codec on real packed C-layer pictures, one per FPN level.

Each level ``c2..c5`` of one image's C-layers is min-max quantised to 10 bits and packed into one
4:0:0 picture of 16x16 channel tiles (exactly as the C-layer anchor does), then coded at every QP with
every codec that is available here. Figures for docs/codecs.md::

    python benchmarks/bench_codecs.py                                  # golden X101 C-layers, QPs 41..49
    python benchmarks/bench_codecs.py --codecs vtm vvenc --levels c4 c5 --qps 41 49
    python benchmarks/bench_codecs.py --source model --model embedded --image img.png --qps 22 32 42
    python benchmarks/bench_codecs.py --set vvenc.preset=fast --set vtm.vtm_dir=/opt/VTM --json out.json

Sources: ``npz`` (default): C-layers stored as ``c2..c5`` arrays of shape (1, C, H, W) or (C, H, W),
by default Detectron2's own X101-FPN C-layers of the golden ``chelsea`` picture
(``shared/golden/detectron2/golden_x101_chelsea.npz``, seeded weights); ``model``: a model of
``conf/model/<name>.yaml`` run on ``--image``. Codecs that are unavailable (no VTM/VVenC build
configured) are listed with the reason and skipped. Pictures are coded one after another, so the times
are single-core encoder times (VTM and VVenC run with one thread). ``enc_s`` is the wall time of
``codec.encode`` as the pipeline pays it: writing the input, the encoder run, and the one verification
decode of external encoders (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from vcm_eval.codecs.base import CodecError, CodecUnavailableError, FrameSpec, VideoCodec
from vcm_eval.codecs.lossless import LosslessCodec
from vcm_eval.codecs.vtm import VTMCodec
from vcm_eval.codecs.vvenc import VVenCCodec
from vcm_eval.codecs.x265 import X265Codec
from vcm_eval.codecs.yuv import psnr
from vcm_eval.features.packing import pack_channels
from vcm_eval.features.quantize import min_max_params, quantize
from vcm_eval.types import C_LEVELS, Frame

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_EVAL_SHARED", REPO.parent / "shared"))
DEFAULT_NPZ = SHARED / "golden" / "detectron2" / "golden_x101_chelsea.npz"
CODECS: dict[str, type[VideoCodec]] = {"x265": X265Codec, "vtm": VTMCodec, "vvenc": VVenCCodec,
                                       "lossless": LosslessCodec}


def layers_from_npz(path: Path, levels: list[str]) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
    """C-layers ``{level: (C, H, W) float32}`` from an npz, and the original image size when stored."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --npz or set VCM_EVAL_SHARED to the shared/ folder")
    with np.load(path) as data:
        missing = [lvl for lvl in levels if lvl not in data.files]
        if missing:
            raise SystemExit(f"error: {path} has no {missing} (it holds {data.files})")
        layers = {lvl: np.asarray(data[lvl], dtype=np.float32) for lvl in levels}
        size = (int(data["height"]), int(data["width"])) if {"height", "width"} <= set(data.files) else None
    for lvl, arr in layers.items():
        if arr.ndim == 4 and arr.shape[0] == 1:
            layers[lvl] = arr[0]
        elif arr.ndim != 3:
            raise SystemExit(f"error: {path}:{lvl} has shape {arr.shape}; need (C, H, W) or (1, C, H, W)")
    return layers, size


def layers_from_model(model_name: str, image: Path, levels: list[str]) -> tuple[dict[str, np.ndarray], tuple]:
    """C-layers of ``image`` from the split model of ``conf/model/<model_name>.yaml``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from vcm_eval.data.images import read_image

    cfg_path = REPO / "conf" / "model" / f"{model_name}.yaml"
    if not cfg_path.is_file():
        raise SystemExit(f"error: no model config {cfg_path}")
    try:
        model = instantiate(OmegaConf.load(cfg_path), _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps the model's own error (missing weights, ...)
        raise SystemExit(f"error: cannot build model {model_name}: {exc.__cause__ or exc}") from None
    features = model.encode(read_image(image))
    return {lvl: features.layers[lvl] for lvl in levels}, tuple(features.meta.original_size)


def packed_picture(layer: np.ndarray, bit_depth: int) -> np.ndarray:
    """Quantise one (C, H, W) level to ``bit_depth`` bits (min-max) and pack it into one picture."""
    picture, _ = pack_channels(quantize(layer, min_max_params(layer, bit_depth)))
    return picture


def parse_settings(items: list[str]) -> dict[str, dict]:
    """``["vtm.timeout_s=60", ...]`` -> ``{"vtm": {"timeout_s": 60}}`` (values read as YAML)."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        codec, dot, option = key.partition(".")
        if not (sep and dot and codec in CODECS and option):
            raise SystemExit(f"error: --set takes <codec>.<key>=<value> with codec in {sorted(CODECS)}, got {item!r}")
        out.setdefault(codec, {})[option] = yaml.safe_load(value) if value.strip() else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["npz", "model"], default="npz")
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="C-layers for --source npz")
    parser.add_argument("--model", default="embedded", help="conf/model/<name>.yaml for --source model")
    parser.add_argument("--image", type=Path, help="picture for --source model")
    parser.add_argument("--levels", nargs="+", default=list(C_LEVELS), choices=list(C_LEVELS))
    parser.add_argument("--qps", nargs="+", type=int, default=[41, 43, 45, 47, 49])
    parser.add_argument("--codecs", nargs="+", default=["x265", "vvenc", "vtm"], choices=sorted(CODECS))
    parser.add_argument("--bit-depth", type=int, default=10)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="CODEC.KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write every row, with codec identities, here")
    args = parser.parse_args(argv)

    if args.source == "npz":
        layers, original = layers_from_npz(args.npz, args.levels)
        source = str(args.npz)
    else:
        if args.image is None:
            raise SystemExit("error: --source model needs --image")
        layers, original = layers_from_model(args.model, args.image, args.levels)
        source = f"model {args.model} on {args.image}"
    settings = parse_settings(args.settings)

    codecs: dict[str, VideoCodec] = {}
    identities: dict[str, dict] = {}
    for name in args.codecs:
        codec = CODECS[name](**settings.get(name, {}))
        try:
            codec.check_available()
            identities[name] = codec.identity()
        except CodecUnavailableError as exc:
            print(f"# skipping {name}: {str(exc).splitlines()[0]}")
            continue
        codecs[name] = codec
    print(f"# source: {source}; original image {original}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    for name, ident in identities.items():
        print(f"# {name}: " + ", ".join(f"{k}={v}" for k, v in ident.items() if k not in ("options",)))

    header = f"{'level':5} {'picture':>9} {'qp':>3} {'codec':6} {'enc_s':>8} {'dec_s':>6} {'bytes':>7} " \
             f"{'bpp_pic':>8} {'bpp_img':>8} {'psnr_db':>8}"
    print(header)
    rows = []
    for level in args.levels:
        picture = packed_picture(layers[level], args.bit_depth)
        frame = Frame.gray(picture, args.bit_depth)
        for qp in args.qps:
            for name, codec in codecs.items():
                label = f"{level}_qp{qp}"
                try:
                    start = time.perf_counter()
                    coded = codec.encode(frame, qp, label=label)
                    encode_s = time.perf_counter() - start
                    start = time.perf_counter()
                    decoded = codec.decode(coded.bitstream, FrameSpec.of(frame), label=label)
                    decode_s = time.perf_counter() - start
                except CodecError as exc:
                    print(f"# {name} failed on {label}: {exc}", file=sys.stderr)
                    continue
                row = {"level": level, "height": frame.height, "width": frame.width, "qp": qp, "codec": name,
                       "encode_s": encode_s, "decode_s": decode_s, "bytes": len(coded.bitstream),
                       "bpp_picture": coded.num_bits / (frame.width * frame.height),
                       "bpp_image": coded.num_bits / (original[0] * original[1]) if original else None,
                       "psnr_db": psnr(picture, decoded.luma, peak=(1 << args.bit_depth) - 1)}
                rows.append(row)
                bpp_img = f"{row['bpp_image']:8.4f}" if original else f"{'-':>8}"
                print(f"{level:5} {frame.width:>4}x{frame.height:<4} {qp:>3} {name:6} {row['encode_s']:8.2f} "
                      f"{decode_s:6.3f} {row['bytes']:>7} {row['bpp_picture']:8.4f} {bpp_img} "
                      f"{row['psnr_db']:8.3f}", flush=True)
    if rows:
        print("# totals per codec (all levels and QPs): encode seconds, bytes")
        for name in codecs:
            mine = [r for r in rows if r["codec"] == name]
            print(f"#   {name:6} {sum(r['encode_s'] for r in mine):9.1f} s {sum(r['bytes'] for r in mine):9d} B")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "original_size": original, "codecs": identities,
                                         "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
