"""Reading pictures from disk into the one convention vcm_eval uses: RGB uint8 (H, W, 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vcm_eval.errors import UserError


class ImageReadError(UserError, RuntimeError):
    """A picture could not be read; the message names the file and what to do."""


def read_image(path: str | Path) -> np.ndarray:
    """Read any Pillow-readable picture as RGB uint8 (H, W, 3).

    EXIF orientation is applied (as Detectron2's ``read_image`` does); grayscale, palette, RGBA
    (alpha dropped) and 16-bit pictures (scaled to 8 bits) are converted.

    Raises:
        ImageReadError: naming the file, when it is missing, not a picture, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file; check the dataset's image folder setting")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read this picture ({exc}); the file is corrupt or not an image. "
                             "Replace it, or remove it from the image list") from exc
