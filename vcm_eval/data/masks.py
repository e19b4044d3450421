"""Instance masks as COCO run-length encodings (RLE): encoding, decoding, and checking annotations.

COCO stores a mask as ``{"size": [H, W], "counts": ...}``: the column-major (Fortran order) run lengths of
the (H, W) 0/1 picture, alternating 0-runs and 1-runs starting with a 0-run; pycocotools' *compressed* form
writes ``counts`` as an ASCII string (6 bits a character, each run a difference to the run two back), which is
what vcm_eval stores (in annotation files and in detection records) because it fits JSON and is small: a mask
costs a few bytes per run instead of ``H * W`` bits. Polygons (``[[x0, y0, x1, y1, ...], ...]``) and
uncompressed RLE (``counts`` a list of ints) are accepted in ground truth, as COCO allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_masks(masks: np.ndarray) -> list[dict]:
    """COCO compressed RLEs ``{"size": [H, W], "counts": str}`` of (N, H, W) bool masks (in order)."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def encode_box_mask(mask: np.ndarray, box: Sequence[int], height: int, width: int) -> dict:
    """The RLE of a picture-sized (height, width) mask that is ``mask`` (bool, (y1 - y0, x1 - x0)) placed at the
    integer ``box`` (x0, y0, x1, y1) and False elsewhere."""
    x0, y0, x1, y1 = (int(v) for v in box)
    full = np.zeros((1, height, width), dtype=bool)
    full[0, y0:y1, x0:x1] = mask
    return encode_masks(full)[0]


def decode_rles(rles: Sequence[dict]) -> np.ndarray:
    """(N, H, W) bool masks of COCO RLEs of one picture (N >= 1; all of the same size)."""
    from pycocotools import mask as mask_utils

    coded = [{"size": list(r["size"]), "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str)
              else r["counts"]} for r in rles]
    return mask_utils.decode(coded).transpose(2, 0, 1).astype(bool)


def check_segmentation(segmentation: object, height: int, width: int) -> str | None:
    """Why ``segmentation`` is not a usable COCO mask of an (height, width) picture, or None when it is.

    A usable mask is a non-empty list of polygons (each a flat list of at least 6 finite numbers, an even
    count), or an RLE mapping whose ``size`` is ``[height, width]`` and whose ``counts`` is a compressed string
    pycocotools can decode, or a list of non-negative run lengths summing to ``height * width``.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation:
            return "an empty polygon list"
        for poly in segmentation:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "a polygon that is not a flat list of at least 3 (x, y) pairs"
            if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in poly):
                return "a polygon with a coordinate that is not a finite number"
        return None
    if not isinstance(segmentation, dict):
        return f"neither a polygon list nor an RLE mapping ({type(segmentation).__name__})"
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not isinstance(size, list) or [int(v) if isinstance(v, (int, float)) else None for v in size] != [height,
                                                                                                        width]:
        return f"RLE size {size!r}, not the picture's [{height}, {width}]"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            return f"uncompressed RLE counts that are not non-negative integers summing to {height} x {width}"
        return None
    if not isinstance(counts, str) or not counts:
        return f"RLE counts of type {type(counts).__name__}, not a compressed string"
    try:
        decoded = mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")})
    except (ValueError, UnicodeEncodeError) as exc:
        return f"RLE counts pycocotools cannot decode ({exc})"
    # pycocotools decodes a string whose runs overshoot or fall short of H x W into garbage rather than failing:
    # a mask that round-trips to the same string is one whose runs cover the picture exactly.
    again = mask_utils.encode(np.asfortranarray(decoded))["counts"].decode("ascii")
    if again != counts:
        return "RLE counts whose runs do not cover the picture exactly (truncated or corrupt)"
    return None
