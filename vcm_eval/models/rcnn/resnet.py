"""Bottleneck ResNet / ResNeXt with frozen batch norm, in Detectron2's module layout.

Module and parameter names match Detectron2's ``build_resnet_backbone`` so that model-zoo state
dicts load unchanged: ``stem.conv1.{weight,norm.*}``, ``res{2..5}.{i}.{conv1,conv2,conv3,shortcut}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    Evaluated with ``F.batch_norm(training=False)``, as Detectron2 does when no gradient is needed,
    so the float32 results are the same. The four tensors are buffers, as in Detectron2.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by a frozen BN stored as its ``norm`` child (Detectron2 ``Conv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, groups: int = 1, eps: float = 1e-5):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool (stride 4 in total)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, eps: float = 1e-5):
        super().__init__()
        self.conv1 = ConvNorm(in_channels, out_channels, 7, stride=2, padding=3, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (grouped) -> 1x1 residual block with a projection shortcut when channels change.

    ``stride_in_1x1`` puts the block's stride in the first 1x1 conv (MSRA ResNet) instead of the
    3x3 conv (Caffe2/FAIR ResNeXt).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, stride_in_1x1: bool = False, eps: float = 1e-5):
        super().__init__()
        self.shortcut = (ConvNorm(in_channels, out_channels, 1, stride=stride, eps=eps)
                         if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, eps=eps)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1,
                              groups=num_groups, eps=eps)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


class ResNet(nn.Module):
    """Bottom-up pathway: stem + stages res2..res5, returning every stage's output.

    Args:
        blocks_per_stage: bottleneck blocks in res2..res5, e.g. (3, 4, 23, 3) for depth 101.
        num_groups, width_per_group: ResNeXt cardinality and width; res2's bottleneck has
            ``num_groups * width_per_group`` channels, doubled at every later stage.
        stride_in_1x1: see :class:`BottleneckBlock`.

    Example::

        >>> net = ResNet((3, 4, 6, 3))
        >>> {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, 64, 64)).items()}
        {'res2': (1, 256, 16, 16), 'res3': (1, 512, 8, 8), 'res4': (1, 1024, 4, 4), 'res5': (1, 2048, 2, 2)}
    """

    stage_names: tuple[str, ...] = ("res2", "res3", "res4", "res5")

    def __init__(self, blocks_per_stage: tuple[int, int, int, int], *, num_groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = True, stem_out_channels: int = 64,
                 res2_out_channels: int = 256, eps: float = 1e-5):
        super().__init__()
        self.stem = BasicStem(3, stem_out_channels, eps)
        in_channels, out_channels = stem_out_channels, res2_out_channels
        bottleneck = num_groups * width_per_group
        self.out_channels: dict[str, int] = {}
        for idx, (name, num_blocks) in enumerate(zip(self.stage_names, blocks_per_stage)):
            first_stride = 1 if idx == 0 else 2
            blocks = []
            for i in range(num_blocks):
                blocks.append(BottleneckBlock(in_channels, out_channels, bottleneck_channels=bottleneck,
                                              stride=first_stride if i == 0 else 1, num_groups=num_groups,
                                              stride_in_1x1=stride_in_1x1, eps=eps))
                in_channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out_channels
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs
