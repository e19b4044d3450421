"""Feature pyramid network split at the lateral outputs (the paper's C-layers).

Detectron2's ``FPN.forward`` interleaves the lateral 1x1 convolutions with the top-down sums; here
the two halves are separate methods so the split point is explicit:

    c_k = lateral_k(res_k)                                  (encoder side, k = 2..5)
    t_5 = c_5,   t_k = c_k + up2(t_{k+1})                   (decoder side, nearest 2x upsampling)
    p_k = output_k(t_k),   p_6 = max_pool(p_5, kernel 1, stride 2)

Parameter names (``fpn_lateral{k}``, ``fpn_output{k}``, ``bottom_up.*``) are Detectron2's, so the
``backbone.*`` entries of a zoo checkpoint load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vcm_eval.models.rcnn.resnet import ResNet

C_LEVELS = ("c2", "c3", "c4", "c5")
P_LEVELS = ("p2", "p3", "p4", "p5", "p6")


def top_down(c_layers: dict[str, torch.Tensor], output_convs: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """P-layers from C-layers: ``t5 = c5; tk = ck + up2(t(k+1)); pk = output_k(tk); p6 = maxpool(p5)``.

    Args:
        c_layers: ``c2..c5`` tensors (N, C, H_k, W_k) with H_k = 2 * H_(k+1).
        output_convs: ``p2..p5`` -> the 3x3 output convolution of that level.
    """
    prev = c_layers["c5"]
    outputs = {"p5": output_convs["p5"](prev)}
    for k in (4, 3, 2):
        prev = c_layers[f"c{k}"] + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        outputs[f"p{k}"] = output_convs[f"p{k}"](prev)
    outputs["p6"] = last_level_max_pool(outputs["p5"])
    return {name: outputs[name] for name in P_LEVELS}


def last_level_max_pool(p5: torch.Tensor) -> torch.Tensor:
    """Detectron2's ``LastLevelMaxPool``: ``p6 = max_pool(p5, kernel 1, stride 2)``, i.e. every other sample of
    P5 in each direction; the receiver of P-layers derives P6 with it."""
    return F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)


class ResNetFPN(nn.Module):
    """ResNet bottom-up pathway plus FPN (Detectron2's ``build_resnet_fpn_backbone``).

    Example::

        >>> net = ResNetFPN(ResNet((3, 4, 6, 3)))
        >>> c = net.c_layers(torch.zeros(1, 3, 64, 96))
        >>> [tuple(v.shape) for v in net.p_layers(c).values()]
        [(1, 256, 16, 24), (1, 256, 8, 12), (1, 256, 4, 6), (1, 256, 2, 3), (1, 256, 1, 2)]
    """

    def __init__(self, bottom_up: ResNet, out_channels: int = 256):
        super().__init__()
        self.bottom_up = bottom_up
        self.out_channels = out_channels
        for k in (2, 3, 4, 5):
            in_channels = bottom_up.out_channels[f"res{k}"]
            self.add_module(f"fpn_lateral{k}", nn.Conv2d(in_channels, out_channels, 1))
            self.add_module(f"fpn_output{k}", nn.Conv2d(out_channels, out_channels, 3, padding=1))

    def c_layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised, padded input (N, 3, H, W) with H, W multiples of 32 -> ``c2..c5`` (N, 256, H/2^k, W/2^k)."""
        res = self.bottom_up(x)
        return {f"c{k}": getattr(self, f"fpn_lateral{k}")(res[f"res{k}"]) for k in (2, 3, 4, 5)}

    def p_layers(self, c_layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``c2..c5`` -> ``p2..p6`` (see :func:`top_down`)."""
        return top_down(c_layers, {f"p{k}": getattr(self, f"fpn_output{k}") for k in (2, 3, 4, 5)})
