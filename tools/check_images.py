#!/usr/bin/env python
"""Report which listed pictures are missing or unreadable, before a long run starts.

Every listed file is read with vcm_eval's own reader (``vcm_eval.data.images.read_image``), so a
picture that passes here also loads in the pipeline. Exit status: 0 when all are fine, 1 when any
is missing or unreadable (each is printed, one a line), 2 for bad arguments.

Examples::

    # the oiv6_vcm set: folders from VCM_EVAL_OIV6_ANNOTATIONS / VCM_EVAL_OIV6_IMAGES
    python tools/check_images.py --num-images 1000

    python tools/check_images.py --list my_images.lst --images /data/openimages/validation
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from vcm_eval.data.images import ImageReadError, read_image
from vcm_eval.data.openimages import (
    ENV_ANNOTATIONS,
    ENV_IMAGES,
    ENV_LIST,
    MPEG_VCM_LIST,
    read_image_list,
    select_images,
)
from vcm_eval.evaluation.openimages_files import OpenImagesFormatError


def build_parser() -> argparse.ArgumentParser:
    head, _, tail = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=tail, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=os.environ.get(ENV_IMAGES),
                   help=f"folder of the pictures (default: ${ENV_IMAGES})")
    p.add_argument("--list", type=Path, default=None,
                   help=f"image list, one file name a line (default: ${ENV_LIST}, else {MPEG_VCM_LIST} in "
                        f"${ENV_ANNOTATIONS})")
    p.add_argument("--num-images", type=int, default=None, help="check only the first N listed pictures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _list_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env_list = os.environ.get(ENV_LIST)
    annotations = os.environ.get(ENV_ANNOTATIONS)
    if env_list and Path(env_list).is_absolute():
        return Path(env_list)
    if annotations:
        return Path(annotations) / (env_list or MPEG_VCM_LIST)
    raise SystemExit(f"error: give --list, or set {ENV_ANNOTATIONS} to the folder holding {MPEG_VCM_LIST}")


def check(images: Path, names: list[str], progress: bool = True) -> tuple[list[str], list[str]]:
    """(missing, unreadable) lines for the pictures ``names`` under ``images``."""
    missing: list[str] = []
    unreadable: list[str] = []
    for name in tqdm(names, desc="checking pictures", unit="img", disable=not progress, file=sys.stderr):
        path = images / name
        if not path.is_file():
            missing.append(str(path))
            continue
        try:
            read_image(path)
        except ImageReadError as exc:
            unreadable.append(f"{path}: {exc}")
    return missing, unreadable


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images is None:
        print(f"error: give --images or set {ENV_IMAGES} to the picture folder", file=sys.stderr)
        return 2
    if not args.images.is_dir():
        print(f"error: {args.images} is not a folder", file=sys.stderr)
        return 2
    try:
        names = select_images(read_image_list(_list_path(args.list)), args.num_images)
    except (OpenImagesFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing, unreadable = check(args.images, names, progress=not args.no_progress)
    for line in missing:
        print(f"missing {line}")
    for line in unreadable:
        print(f"unreadable {line}")
    ok = len(names) - len(missing) - len(unreadable)
    print(f"{ok} of {len(names)} pictures readable, {len(missing)} missing, {len(unreadable)} unreadable",
          file=sys.stderr)
    return 1 if missing or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
