#!/usr/bin/env python
"""Code one raw monochrome picture with a vcm_eval codec and report bits and PSNR.

The quick way to check that vcm_eval drives your VTM (or VVenC) build before a long run::

    export VTM_DIR=/path/to/VVCSoftware_VTM          # or: --set vtm_dir=/path/to/VVCSoftware_VTM
    python tools/code_picture.py picture.yuv --width 640 --height 384 --codec vtm --qp 41
    python tools/code_picture.py c5.npy --codec vvenc --qp 45 --set preset=fast --out-dir /tmp/check

The input is a raw 4:0:0 file (``.yuv``: samples little-endian, 2 bytes each above 8 bits) or a 2-D
integer ``.npy`` array. The bitstream and the decoded picture (same format as the input) are written to
``--out-dir``; the tool prints the bits, the bits per pixel of the picture and the PSNR with peak
``2**bit_depth - 1`` (1023 for 10 bits). ``--set key=value`` passes constructor arguments to the codec
(the keys of ``conf/codec/<codec>.yaml``; values are read as YAML). Exit status: 0 on success,
1 when coding fails, 2 when the codec is unavailable or the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import shlex
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
from vcm_eval.codecs.yuv import frame_num_bytes, psnr
from vcm_eval.types import Frame

CODECS: dict[str, type[VideoCodec]] = {"x265": X265Codec, "vtm": VTMCodec, "vvenc": VVenCCodec,
                                       "lossless": LosslessCodec}
#: bitstream file extension per codec (VTM's own tools use .bin; .266 / .265 are the Annex-B customs).
EXTENSIONS = {"x265": ".265", "vtm": ".bin", "vvenc": ".266", "lossless": ".lossless"}


class InputError(ValueError):
    """The picture file cannot be used; the message names it and says why."""


def read_picture(path: Path, width: int | None, height: int | None, bit_depth: int) -> np.ndarray:
    """The (H, W) uint16 picture in ``path`` (``.npy`` or raw ``.yuv``), checked against the bit depth."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            picture = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
        if picture.ndim != 2 or not np.issubdtype(picture.dtype, np.integer):
            raise InputError(f"{path}: need a 2-D integer array (H, W), got {picture.dtype} {picture.shape}")
        if (width and width != picture.shape[1]) or (height and height != picture.shape[0]):
            raise InputError(f"{path}: the array is {picture.shape[1]}x{picture.shape[0]}, "
                             f"not the {width}x{height} given")
    else:
        if not (width and height):
            raise InputError(f"{path}: a raw picture needs --width and --height")
        expected = frame_num_bytes(FrameSpec(height, width, bit_depth, "400"))
        data = path.read_bytes()
        if len(data) != expected:
            raise InputError(f"{path}: {len(data)} bytes, but one {width}x{height} 4:0:0 {bit_depth}-bit picture "
                             f"has {expected} (check --width/--height/--bit-depth; one picture per file)")
        dtype = "<u2" if bit_depth > 8 else "u1"
        picture = np.frombuffer(data, dtype=dtype).reshape(height, width)
    peak = (1 << bit_depth) - 1
    if picture.min() < 0 or picture.max() > peak:
        raise InputError(f"{path}: samples span {picture.min()}..{picture.max()}, outside 0..{peak} "
                         f"of {bit_depth} bits (--bit-depth)")
    return picture.astype(np.uint16)


def parse_settings(items: list[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: yaml(value)}`` (``timeout_s=60`` gives an int, ``x=null`` None)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes key=value, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return settings


def build_codec(name: str, settings: dict) -> VideoCodec:
    try:
        return CODECS[name](**settings)
    except TypeError as exc:
        raise InputError(f"codec {name}: {exc} (see conf/codec/{name}.yaml for its keys)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="raw 4:0:0 picture (.yuv) or 2-D integer array (.npy)")
    parser.add_argument("--width", type=int, help="picture width (needed for .yuv)")
    parser.add_argument("--height", type=int, help="picture height (needed for .yuv)")
    parser.add_argument("--bit-depth", type=int, default=10, help="bits per sample (default 10)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="x265")
    parser.add_argument("--qp", type=int, required=True)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="codec constructor argument, e.g. vtm_dir=/opt/VTM, preset=fast, decoder=binary")
    parser.add_argument("--out-dir", type=Path, default=Path("."), help="where outputs go (default: here)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    try:
        picture = read_picture(args.input, args.width, args.height, args.bit_depth)
        codec = build_codec(args.codec, parse_settings(args.settings))
        codec.check_available()
        identity = codec.identity()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CodecUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    frame = Frame.gray(picture, args.bit_depth)
    label = f"{args.input.name} QP {args.qp}"
    try:
        coded = codec.encode(frame, args.qp, label=args.input.name)
        start = time.perf_counter()
        decoded = codec.decode(coded.bitstream, FrameSpec.of(frame), label=args.input.name)
        decode_s = time.perf_counter() - start
    except CodecUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CodecError as exc:
        print(f"error: coding {label} failed:\n{exc}", file=sys.stderr)
        return 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.input.stem}_{args.codec}_qp{args.qp}"
    bitstream_path = args.out_dir / (stem + EXTENSIONS[args.codec])
    bitstream_path.write_bytes(coded.bitstream)
    if args.input.suffix.lower() == ".npy":
        decoded_path = args.out_dir / (stem + ".dec.npy")
        np.save(decoded_path, decoded.luma)
    else:
        decoded_path = args.out_dir / (stem + ".dec.yuv")
        decoded_path.write_bytes(decoded.luma.astype("<u2" if args.bit_depth > 8 else "u1").tobytes())

    bits = coded.num_bits
    report = {
        "input": str(args.input), "width": frame.width, "height": frame.height, "bit_depth": frame.bit_depth,
        "codec": args.codec, "qp": args.qp, "bytes": len(coded.bitstream), "bits": bits,
        "bpp": bits / (frame.width * frame.height),
        "psnr_db": psnr(picture, decoded.luma, peak=(1 << args.bit_depth) - 1),
        "encode_s": coded.encode_s, "decode_s": decode_s,
        "bitstream": str(bitstream_path), "decoded": str(decoded_path),
        "identity": identity, "command": coded.command,
    }
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    version = identity.get("version") or identity.get("library", "")
    print(f"codec      {args.codec} {version}".rstrip())
    if "version_warning" in identity:
        print(f"WARNING    {identity['version_warning']}")
    print(f"picture    {args.input} {frame.width}x{frame.height} 4:0:0 {frame.bit_depth}-bit, QP {args.qp}")
    print(f"bitstream  {bitstream_path}: {len(coded.bitstream)} bytes = {bits} bits, "
          f"{report['bpp']:.4f} bpp of the picture")
    print(f"decoded    {decoded_path}")
    print(f"PSNR       {report['psnr_db']:.4f} dB (peak {(1 << args.bit_depth) - 1})")
    print(f"time       encode {coded.encode_s:.2f} s, decode {decode_s:.3f} s")
    if coded.command:
        print(f"command    {shlex.join(coded.command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
