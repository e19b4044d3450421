"""The exact coding path of the learned entry: real rANS bitstreams that decode identically in any process.

The range decoder needs the very CDF indexes the encoder used; a last-bit difference in ``sigma`` between
two processes (other thread count, other convolution algorithm) silently decodes garbage. So the
hyper-synthesis runs in float64, everything runs on one torch thread (:func:`deterministic_torch`), and a
coded picture carries ``crc32`` of the int32 CDF indexes and of the int32 symbols, which the decoder
recomputes: a mismatch is a :class:`LearnedFusionError`, never a wrong reconstruction.
"""

from __future__ import annotations

import contextlib
import copy
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from proposals.learned_fusion.errors import LearnedFusionError
from proposals.learned_fusion.network import FusionCodec
from vcm_eval.evaluation.bitrate import IMAGE_SIZE_SIDE_INFO_BITS

#: per picture: original size (2 x uint16, as every feature entry), the byte length of the z string (uint32,
#: what a single-file container needs to split z from y) and two CRC-32s (indexes, symbols)
SIDE_INFO_BITS = IMAGE_SIZE_SIDE_INFO_BITS + 32 + 2 * 32


@contextlib.contextmanager
def deterministic_torch(threads: int = 1) -> Iterator[None]:
    """Run torch on ``threads`` intra-op threads inside the block and restore the caller's count after.

    Convolution results can differ in their last bits with the thread count; on one thread the coding
    path is the same function in every process, whatever the caller had set.
    """
    previous = torch.get_num_threads()
    if previous != threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def crc32_int32(values: torch.Tensor) -> int:
    """``zlib.crc32`` of the values as little-endian int32, in C order."""
    return zlib.crc32(np.ascontiguousarray(values.cpu().numpy(), dtype="<i4").tobytes()) & 0xFFFFFFFF


@dataclass
class Coded:
    """What the coding path produces for one picture: both strings, shapes, checksums, the reconstruction."""

    y_string: bytes
    z_string: bytes
    latent_shape: tuple[int, int]
    hyper_shape: tuple[int, int]
    crc32_indexes: int
    crc32_symbols: int
    layers: list[np.ndarray]


class ExactCoder:
    """A trained :class:`~proposals.learned_fusion.network.FusionCodec` with the coding path made reproducible
    across processes.

    The hyper-synthesis (which decides the CDF indexes and the means) runs on a float64 copy of ``h_s``;
    everything runs on one thread (:func:`deterministic_torch`).
    """

    def __init__(self, net: FusionCodec) -> None:
        self.net = net.eval()
        self.h_s64 = copy.deepcopy(net.h_s).double().eval()

    def _hyper64(self, z_hat: torch.Tensor, latent_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.h_s64(z_hat.double())[..., :latent_shape[0], :latent_shape[1]]
        scales, means = params.chunk(2, 1)
        return scales, means

    def compress(self, layers: Sequence[np.ndarray]) -> Coded:
        """Code ``[c2, c3, c4, c5]`` (each (C, H, W) float32); returns strings and the decoder's reconstruction."""
        with deterministic_torch():
            x = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None] for a in layers]
            y = self.net.g_a(*x)
            z = self.net.h_a(y)
            eb, gc = self.net.entropy_bottleneck, self.net.gaussian_conditional
            z_string = eb.compress(z)[0]
            hyper_shape = tuple(int(v) for v in z.shape[-2:])
            z_hat = eb.decompress([z_string], hyper_shape)
            latent_shape = tuple(int(v) for v in y.shape[-2:])
            scales, means = self._hyper64(z_hat, latent_shape)
            indexes = gc.build_indexes(scales)
            y64 = y.double()
            symbols = gc.quantize(y64, "symbols", means)
            y_string = gc.compress(y64, indexes, means)[0]
            y_hat = (symbols.double() + means).float()
            recon = self._synthesis(y_hat, [a.shape for a in layers])
            return Coded(y_string, z_string, latent_shape, hyper_shape, crc32_int32(indexes), crc32_int32(symbols),
                         recon)

    def decompress(self, y_string: bytes, z_string: bytes, latent_shape: Sequence[int], hyper_shape: Sequence[int],
                   layer_shapes: Sequence[Sequence[int]], crc32_indexes: int, crc32_symbols: int, *,
                   what: str) -> list[np.ndarray]:
        """Rebuild ``[c2^..c5^]``; raises :class:`LearnedFusionError` naming ``what`` when a checksum differs."""
        with deterministic_torch():
            eb, gc = self.net.entropy_bottleneck, self.net.gaussian_conditional
            z_hat = eb.decompress([z_string], tuple(hyper_shape))
            scales, means = self._hyper64(z_hat, latent_shape)
            indexes = gc.build_indexes(scales)
            if crc32_int32(indexes) != int(crc32_indexes):
                raise LearnedFusionError(
                    f"{what}: the decoder's CDF indexes differ from the encoder's (crc32 {crc32_int32(indexes):08x}, "
                    f"recorded {int(crc32_indexes):08x}): the hyper latent z did not decode to what was coded "
                    "(damaged bitstream) or the hyper-synthesis ran differently; refusing to decode y")
            symbols = gc.decompress([y_string], indexes, dtype=torch.float64)
            if crc32_int32(symbols.to(torch.int32)) != int(crc32_symbols):
                raise LearnedFusionError(
                    f"{what}: the decoded symbols of y do not match the encoder's (crc32 "
                    f"{crc32_int32(symbols.to(torch.int32)):08x}, recorded {int(crc32_symbols):08x}): the y "
                    "bitstream is damaged or does not belong to this record")
            y_hat = (symbols + means).float()
            return self._synthesis(y_hat, layer_shapes)

    def _synthesis(self, y_hat: torch.Tensor, layer_shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = self.net.g_s(y_hat)
        return [o[0, :, :s[-2], :s[-1]].contiguous().numpy().astype(np.float32, copy=False)
                for o, s in zip(out, layer_shapes)]
