"""Where the coding error of features ends up: PSNR of the FPN's top-down maps.

The compensation (DESIGN.md section 2) is about the top-down sums ``T^k = C^k + up(T^(k+1))``: a level's
error reaches every finer level through them. Measuring PSNR there, against the sums of the uncoded
C-layers, shows what the detector's heads actually receive.
"""

from __future__ import annotations

from vcm_eval.evaluation.bitrate import psnr_db
from vcm_eval.features.compensation import top_down_sums
from vcm_eval.types import SplitFeatures


def topdown_psnr(original: SplitFeatures, reconstruction: SplitFeatures) -> dict[str, float]:
    """PSNR of each reconstructed top-down map ``T^k`` against ``Tk`` of the uncoded C-layers, with peak
    = max - min of ``Tk``: where the coding error ends up after the FPN's sums."""
    order = tuple(sorted(original.layers, reverse=True))
    reference = top_down_sums(original.layers, order)
    decoded = top_down_sums(reconstruction.layers, order)
    return {level: psnr_db(reference[level], decoded[level], float(reference[level].max() - reference[level].min()))
            for level in order}
