"""A learned feature codec: multi-scale fusion of every C-layer into one latent, coded with CompressAI.

The four C-layers ``c2..c5`` (``C`` channels each, strides 4, 8, 16, 32 of the padded input) are fused
into one latent ``y`` at stride 16, as L-MSFC-style fusion codecs do::

    a8  = GDN(convKxK/2(c2))                               stride 8
    a16 = GDN(convKxK/2(GDN(conv3x3([a8, c3]))))           stride 16
    y   = conv3x3(GDN(conv3x3([a16, c4, up2(c5)])))        stride 16, M channels (up2: KxK transposed conv)

(K = ``FusionArch.kernel``, 3 in the shipped checkpoints.)

``y`` is coded with a mean-scale hyperprior (Ballé et al. 2018, Minnen et al. 2018): ``z = h_a(y)`` at
stride 64 goes through CompressAI's ``EntropyBottleneck`` (a learned factorised density), and
``(mu, sigma) = h_s(z^)`` parametrise the ``GaussianConditional`` of ``y``: the symbols
``q = round(y - mu)`` are range coded with the discretised N(0, sigma) and ``y^ = q + mu``. The synthesis
``g_s(y^)`` rebuilds every C-layer at its exact shape (c4 at stride 16, c5 by a stride-2 conv, c3 and c2 by
stride-2 transposed convs), and the model's decoder half runs on them.

Bitstreams are real: ``EntropyBottleneck.compress`` and ``GaussianConditional.compress`` (CompressAI's rANS
range coder) write the bytes, which the store keeps under kind ``bitstreams`` (records ``y`` and ``z``);
bpp counts those bytes plus :data:`SIDE_INFO_BITS` (picture size, the length of the z string that a
single-file container would need, and two CRC-32s).

Exact decoding. The range decoder needs the very CDF indexes the encoder used; a last-bit difference in
``sigma`` between two processes (other thread count, other convolution algorithm) silently decodes
garbage. So the hyper-synthesis runs in float64 on one torch thread (:func:`deterministic_torch`), the whole
coding path runs on one thread, and the record carries ``crc32`` of the int32 CDF indexes and of the int32
symbols: the decoder recomputes both and raises :class:`LearnedFusionError` (naming the image and rate
point) on a mismatch, never returning a wrong reconstruction.

Rate points are indices of trained checkpoints, ``proposals/weights/learned_fusion/rp<i>.pth``: **a larger index
codes with fewer bits** (a smaller lambda in ``loss = lambda * D + R``), like a larger QP. Each checkpoint's
JSON records its lambda, the training settings and the sha256 of the embedded model weights it was trained
on. ``python tools/train_learned_fusion.py`` re-creates them with :mod:`proposals.learned_fusion.train`
(docs/learned.md).

Modules, one job each: :mod:`~proposals.learned_fusion.network` (the architecture and how checkpoints store
it), :mod:`~proposals.learned_fusion.coder` (the exact coding path), :mod:`~proposals.learned_fusion.checkpoints`
(finding and loading checkpoints), :mod:`~proposals.learned_fusion.entry` (the pipeline's entry),
:mod:`~proposals.learned_fusion.train` (training, not imported here). Every public name is re-exported here,
so ``proposals.learned_fusion.LearnedFusionEntry`` (the YAML's ``_target_``) keeps its path.
"""

from proposals.learned_fusion.checkpoints import (
    TRAIN_TOOL,
    WEIGHTS_DIR,
    checkpoint_path,
    load_checkpoint,
    read_checkpoint_meta,
)
from proposals.learned_fusion.coder import SIDE_INFO_BITS, Coded, ExactCoder, crc32_int32, deterministic_torch
from proposals.learned_fusion.entry import LearnedFusionEntry
from proposals.learned_fusion.errors import LearnedFusionError
from proposals.learned_fusion.network import (
    LEVELS,
    STRIDES,
    FusionArch,
    FusionCodec,
    count_parameters,
    round_for_storage,
    storage_state,
)

__all__ = [
    "LEVELS", "SIDE_INFO_BITS", "STRIDES", "TRAIN_TOOL", "WEIGHTS_DIR", "Coded", "ExactCoder", "FusionArch",
    "FusionCodec", "LearnedFusionEntry", "LearnedFusionError", "checkpoint_path", "count_parameters",
    "crc32_int32", "deterministic_torch", "load_checkpoint", "read_checkpoint_meta", "round_for_storage",
    "storage_state",
]
