"""The network of the learned entry: fusion analysis, synthesis and mean-scale hyperprior over the C-layers.

:class:`FusionArch` holds every number that shapes :class:`FusionCodec` (saved in each checkpoint's JSON);
:func:`round_for_storage` and :func:`storage_state` define how a checkpoint stores the weights (convolutions
as float16), so that the network a checkpoint was measured with is, bit for bit, the one that loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.base import get_scale_table
from compressai.models.utils import conv, deconv
from torch import nn

from vcm_eval.errors import SettingError

#: the C-layers the network fuses, and their strides relative to the padded input
LEVELS: tuple[str, ...] = ("c2", "c3", "c4", "c5")
STRIDES: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class FusionArch:
    """Every number that shapes :class:`FusionCodec`; saved in each checkpoint's JSON.

    Attributes:
        channels: channels of every C-layer (the model's FPN width; 32 for the embedded model).
        hidden: channels of the fusion and synthesis trunks (N).
        latent: channels of ``y`` (M).
        hyper: channels of ``z`` and of the hyper transforms.
        fine: channels of the stride-4 synthesis branch that rebuilds c2.
        kernel: kernel of the stride-2 (transposed) convolutions of the main transforms (odd).
        scale_max: largest scale of the Gaussian conditional's CDF table (64 log-spaced scales from 0.11;
            a larger sigma codes with the largest table entry, which stays exact, only costs bits).
    """

    channels: int = 32
    hidden: int = 128
    latent: int = 96
    hyper: int = 32
    fine: int = 80
    kernel: int = 3
    scale_max: float = 64.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FusionArch:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SettingError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**d)

    def scale_table(self) -> torch.Tensor:
        """The 64 log-spaced scales ``exp(linspace(log 0.11, log scale_max, 64))`` of the CDF table."""
        return get_scale_table(0.11, self.scale_max, 64)


class FusionCodec(CompressionModel):
    """Fusion analysis ``g_a``, synthesis ``g_s`` and mean-scale hyperprior (``h_a``, ``h_s``) over C-layers.

    ``forward`` is the training path (uniform noise for the likelihoods, straight-through rounding for the
    synthesis input); the coding path is :class:`~proposals.learned_fusion.coder.ExactCoder`.
    """

    def __init__(self, arch: FusionArch) -> None:
        super().__init__()
        self.arch = arch
        c, n, m, h, f, k = arch.channels, arch.hidden, arch.latent, arch.hyper, arch.fine, arch.kernel
        # analysis: fuse fine to coarse (c2 down to stride 8, merge c3, down to stride 16, merge c4 and up(c5))
        self.down2 = nn.Sequential(conv(c, n, k, 2), GDN(n))
        self.fuse3 = nn.Sequential(conv(n + c, n, 3, 1), GDN(n), conv(n, n, k, 2), GDN(n))
        self.up5 = deconv(c, n, k, 2)
        self.fuse4 = nn.Sequential(conv(n + c + n, n, 3, 1), GDN(n), conv(n, m, 3, 1))
        # hyperprior: z at stride 4 relative to y; h_s gives (sigma, mu)
        self.h_a = nn.Sequential(conv(m, h, 3, 1), nn.LeakyReLU(inplace=True), conv(h, h, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(h, h, 5, 2))
        self.h_s = nn.Sequential(deconv(h, h, 5, 2), nn.LeakyReLU(inplace=True), deconv(h, m * 3 // 2, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(m * 3 // 2, 2 * m, 1, 1))
        self.entropy_bottleneck = EntropyBottleneck(h)
        self.gaussian_conditional = GaussianConditional(None)
        # synthesis: trunk at stride 16, a head per level
        self.trunk = nn.Sequential(conv(m, n, 3, 1), GDN(n, inverse=True), conv(n, n, 3, 1),
                                   nn.LeakyReLU(inplace=True))
        self.head4 = conv(n, c, 3, 1)
        self.head5 = conv(n, c, 3, 2)
        self.up8 = nn.Sequential(deconv(n, n, k, 2), GDN(n, inverse=True), conv(n, n, 3, 1),
                                 nn.LeakyReLU(inplace=True))
        self.head3 = conv(n, c, 3, 1)
        self.up4 = nn.Sequential(deconv(n, f, k, 2), GDN(f, inverse=True), conv(f, f, 3, 1),
                                 nn.LeakyReLU(inplace=True))
        self.head2 = conv(f, c, 3, 1)

    def g_a(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        """The latent ``y`` (stride 16) of the four C-layers (strides 4, 8, 16, 32)."""
        a = self.down2(c2)
        a = self.fuse3(torch.cat([a, c3], 1))
        return self.fuse4(torch.cat([a, c4, self.up5(c5)], 1))

    def g_s(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        """``[c2^, c3^, c4^, c5^]`` of ``y^``: shapes (4h, 2h, h, h/2) for a latent of height h."""
        t = self.trunk(y_hat)
        u8 = self.up8(t)
        u4 = self.up4(u8)
        return [self.head2(u4), self.head3(u8), self.head4(t), self.head5(t)]

    def hyper_params(self, z_hat: torch.Tensor, latent_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigma, mu)`` of ``y`` from ``z^``, cropped to the latent's (h, w)."""
        params = self.h_s(z_hat)[..., :latent_shape[0], :latent_shape[1]]
        scales, means = params.chunk(2, 1)
        return scales, means

    def forward(self, layers: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Training pass: ``{"layers": [c2^..c5^], "likelihoods": {"y", "z"}}``."""
        y = self.g_a(*layers)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.hyper_params(z_hat, y.shape[-2:])
        _, y_likelihoods = self.gaussian_conditional(y, scales, means)
        # straight-through rounding: the synthesis sees what the decoder will see, gradients pass unchanged
        y_hat = y + (torch.round(y - means) + means - y).detach()
        return {"layers": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters (the quantiles of the entropy bottleneck included)."""
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- how checkpoints store it


def _stored_half(name: str) -> bool:
    """Whether the checkpoint stores parameter ``name`` as float16: the weights and biases of the convolutions,
    which are nearly all the bytes. The entropy models and the GDN parameters stay float32 (small, and the
    CDF tables and medians must follow from exactly the stored values)."""
    return name.endswith((".weight", ".bias")) and not name.startswith(("entropy_bottleneck.", "gaussian_conditional."))


def round_for_storage(net: FusionCodec) -> None:
    """Round the convolution weights to float16 precision in place, ``w <- float32(float16(w))``.

    The training tool does it before it saves and measures a checkpoint, so the network whose held-out
    figures its JSON records is, bit for bit, the one that loads from the half-size file. (The CDF tables do
    not depend on these weights: they come from the entropy models, which stay float32.)
    """
    with torch.no_grad():
        for name, param in net.named_parameters():
            if _stored_half(name):
                param.copy_(param.to(torch.float16).to(torch.float32))


def storage_state(net: FusionCodec) -> dict[str, torch.Tensor]:
    """The state dict as a checkpoint stores it (see :func:`_stored_half`); call :func:`round_for_storage` first,
    or the conversion loses what the network was measured with."""
    return {k: (v.to(torch.float16) if _stored_half(k) else v) for k, v in net.state_dict().items()}


def state_from_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`storage_state`: float16 tensors become float32 exactly; older float32 checkpoints
    load as they are."""
    return {k: (v.to(torch.float32) if v.dtype == torch.float16 else v) for k, v in state.items()}
