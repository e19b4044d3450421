"""The P-layer feature-map anchor: MPEG FCM's split point, after the FPN.

The network is split after the FPN's output 3x3 convolutions: the P-layers
``Pk = output_k(Tk)`` with ``T5 = C5, Tk = Ck + up2(T(k+1))`` (k = 2..5). Each level ``Pk`` is, on its own
and exactly as the C-layer anchor (:mod:`anchors.c_layer`) treats a C-layer:

1. min-max quantised to N bits (10 by default), one (min, max) pair per level:
   ``q = round((P - min) / (max - min) * (2^N - 1))``;
2. packed, channel by channel in index order, into one monochrome picture (16 x 16 tiles for 256 channels,
   4 x 8 for the embedded model's 32);
3. coded as a 4:0:0 picture with the CTC's codec (All-Intra, fixed QP: the rate point plus an optional
   per-level offset, none in the anchor);

and the receiver decodes, unpacks and dequantises each level, derives ``P6 = max_pool(P5, kernel 1,
stride 2)`` from the decoded P5 (the FPN's own top block; P6 is a subsampling of P5, so coding it would
spend bits on samples the receiver can compute; CompressAI-Vision, the FCM CTC's software, codes P2..P5
likewise), and runs the RPN and the ROI heads on the reconstructions.

Unlike the C-layer anchor, the coding error of one level stays in that level: there are no top-down sums
left at the receiver to carry it to the finer ones. In exchange the coded maps are the FPN's outputs, whose
statistics (and so their cost at a given QP) differ from the laterals'. Both split points give maps of the
same shapes (the FPN's width at strides 4..32), so the pictures coded are the same sizes.

The entry only sets ``split = "p"``: the framework hands it the P-layers the model makes from the stored
C-layers, and the model decodes from P-layers; nothing here knows which model it codes for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from anchors.c_layer import CLayerAnchor
from vcm_eval.errors import SettingError


class PLayerAnchor(CLayerAnchor):
    """Quantise -> pack -> code each P-layer independently (the C-layer anchor's chain at the P-layer split).

    Args:
        name: entry name (``p_layer``).
        rate_points: QPs of the CTC (the feature QPs, as the C-layer anchor's).
        bit_depth: quantiser and picture bit depth (10 in the CTC).
        levels: levels coded, coarse to fine: ``p5, p4, p3, p2`` (P6 is derived by the receiver).
        qp_offsets: as :class:`~anchors.c_layer.CLayerAnchor`, per P-level; none in the anchor.

    Example::

        >>> anchor = PLayerAnchor(rate_points=[41, 43])
        >>> anchor.identity()["split"]
        'p'
    """

    split: ClassVar[str] = "p"

    def __init__(self, *, name: str = "p_layer", rate_points: Sequence[int], bit_depth: int = 10,
                 levels: Sequence[str] = ("p5", "p4", "p3", "p2"),
                 qp_offsets: Mapping[str, int] | None = None) -> None:
        not_p = [level for level in levels if not str(level).startswith("p")]
        if not_p:
            # a C-layer name here would code a level the framework never hands this entry
            raise SettingError(f"{name}: the P-layer anchor codes P-layers (p2..p5); levels {not_p} are not")
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth, levels=levels,
                         qp_offsets=qp_offsets)
