"""Image encoder E: a ResNet without its classification layer (random init, no downloads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genuine_core.models.config import EncoderConfig
from genuine_core.models.trunk import ResNetTrunk


class PatchEncoder(nn.Module):
    """ResNet trunk + global average pooling, with optional input resizing.

    Input ``(N, 3, P, P)`` float32 in [0, 1]; output ``(N, out_dim)`` float32.
    When ``config.input_size`` is set the patch is first resized (bilinear, antialiased
    when shrinking) to ``input_size x input_size``: the encoder sees the whole nucleus at
    lower resolution while the detector keeps full resolution.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.arch, config.width, config.stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = self.trunk.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < x.shape[-1])
        return torch.flatten(self.pool(self.trunk(x)), 1)
