"""What training minimises: ``L = lambda * D + R`` on the frozen model's FPN P-maps and the C-layers.

``P_k = layer_blocks[k](T_k)``, ``T_5 = C_5``, ``T_k = C_k + up2(T_{k+1})`` is the frozen model's FPN top-down
pathway with its 3x3 output convolutions, computed from the reconstructed and from the original C-layers;
the per-level variances, measured once on the training C-layers, make every level count alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from proposals.learned_fusion.network import LEVELS


def model_fpn(model) -> torch.nn.Module | None:
    """The torchvision FPN of the model (``layer_blocks`` are its 3x3 output convolutions), or None."""
    net = getattr(model, "net", None)
    fpn = getattr(getattr(net, "backbone", None), "fpn", None)
    return fpn if fpn is not None and hasattr(fpn, "layer_blocks") else None


def p_maps(fpn: torch.nn.Module | None, layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[P2..P5]`` of ``[C2..C5]``: the FPN's top-down sums and 3x3 output convs (differentiable). Without an
    FPN module the top-down sums ``T_k`` themselves."""
    last = layers[-1]
    sums = [last]
    for c in reversed(layers[:-1]):
        last = c + F.interpolate(last, size=c.shape[-2:], mode="nearest")
        sums.insert(0, last)
    if fpn is None:
        return sums
    return [fpn.layer_blocks[k](t) for k, t in enumerate(sums)]


def level_variances(fpn, data: list[list[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Variance of every P-map level and every C-layer over (up to 100 of) the training pictures."""
    sample = data[:: max(1, len(data) // 100)]
    p_acc = np.zeros((len(LEVELS), 2))
    c_acc = np.zeros((len(LEVELS), 2))
    with torch.no_grad():
        for layers in sample:
            x = [torch.from_numpy(a)[None] for a in layers]
            for k, p in enumerate(p_maps(fpn, x)):
                p_acc[k] += [p.mean().item(), (p * p).mean().item()]
            for k, c in enumerate(x):
                c_acc[k] += [c.mean().item(), (c * c).mean().item()]
    p_acc /= len(sample)
    c_acc /= len(sample)
    return ([float(m2 - m * m) for m, m2 in p_acc], [float(m2 - m * m) for m, m2 in c_acc])


def distortion(fpn, recon: list[torch.Tensor], target: list[torch.Tensor], target_p: list[torch.Tensor],
               p_var: list[float], c_var: list[float], clayer_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D, D_P)``: ``D = 1/4 sum_k MSE(P^_k, P_k) / var(P_k) + w_c * 1/4 sum_k MSE(C^_k, C_k) / var(C_k)`` and
    its P-map part ``D_P``."""
    rec_p = p_maps(fpn, recon)
    d_p = sum(F.mse_loss(a, b) / v for a, b, v in zip(rec_p, target_p, p_var)) / len(LEVELS)
    d_c = sum(F.mse_loss(a, b) / v for a, b, v in zip(recon, target, c_var)) / len(LEVELS)
    return d_p + clayer_weight * d_c, d_p


def rate_bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """``R = -(sum log2 p(y^) + sum log2 p(z^)) / num_pixels``: bits per input pixel of a batch."""
    return sum(torch.log(lk).sum() for lk in likelihoods.values()) / (-math.log(2) * num_pixels)
