"""ResNet trunks with configurable width and depth, built from torchvision's residual blocks.

Module names match torchvision's ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` ... ``layer4``), so with ``width=64`` a locally stored torchvision state dict
loads into it (``strict=False`` for the missing ``fc``). Weights start random: nothing is
ever downloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

#: arch -> (block class, blocks per stage)
_ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def stage_channels(arch: str, width: int, stage: int) -> int:
    """Output channels of residual stage ``stage`` (1..4) of a trunk."""
    block, _ = _ARCHS[arch]
    return width * 2 ** (stage - 1) * block.expansion


class ResNetTrunk(nn.Module):
    """Stem + the first ``stages`` residual stages of a ResNet; no pooling head, no fc.

    Input ``(N, 3, H, W)`` float32; output ``(N, C, H / s, W / s)`` with
    ``s = 2 ** (stages + 1)`` and ``C = stage_channels(arch, width, stages)``.

    Args:
        arch: ``resnet18`` | ``resnet34`` | ``resnet50``.
        width: stem / first-stage channels (torchvision: 64).
        stages: residual stages kept (1..4).
    """

    def __init__(self, arch: str = "resnet18", width: int = 64, stages: int = 4) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown ResNet arch {arch!r}; choose from {sorted(_ARCHS)}")
        if stages not in (1, 2, 3, 4):
            raise ValueError(f"stages must be 1..4, got {stages}")
        block, counts = _ARCHS[arch]
        self.arch, self.width, self.stages = arch, width, stages
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for s in range(1, stages + 1):
            planes = width * 2 ** (s - 1)
            stride = 1 if s == 1 else 2
            layer, in_ch = _make_stage(block, in_ch, planes, counts[s - 1], stride)
            self.add_module(f"layer{s}", layer)
        self.out_channels = in_ch
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(1, self.stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return x


def _make_stage(block: type[nn.Module], in_ch: int, planes: int, n_blocks: int,
                stride: int) -> tuple[nn.Sequential, int]:
    """One residual stage; returns it and its output channels."""
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_ch))
    blocks = [block(in_ch, planes, stride, downsample)]
    blocks += [block(out_ch, planes) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks), out_ch
