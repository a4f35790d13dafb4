"""The reference 2-D U-Net of FedBCS (4 levels, double conv blocks, transposed-conv up)."""

from __future__ import annotations

import math

import torch
from torch import nn

from fedbcs_lightning.models.base import BackboneOutput, SegmentationBackbone


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch``; ``batch_stateless`` = the reference's BN (no affine, batch statistics
    even in eval); ``instance``; ``group`` (``gcd(32, channels)`` groups, what
    ``privacy.mode=sample`` puts in place of BatchNorm)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "batch_stateless":
        return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; choose batch, batch_stateless, instance or group")


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            make_norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            make_norm(norm, cout),
            nn.ReLU(inplace=True),
        )


class UNet(SegmentationBackbone):
    """Reference U-Net: widths w, 2w, 4w, 8w, bottleneck 16w (w = 32 in the paper).

    Examples
    --------
    >>> import torch
    >>> net = UNet(in_channels=1, num_classes=3, width=4, norm="batch_stateless")
    >>> net(torch.zeros(2, 1, 32, 48)).shape
    torch.Size([2, 3, 32, 48])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 2, width: int = 32, norm: str = "batch"
    ) -> None:
        super().__init__(in_channels, num_classes)
        widths = [width * 2**i for i in range(4)]
        self.encoder_channels = tuple(widths)
        self.decoder_channels = tuple(reversed(widths))
        self.encoder_strides = (1, 2, 4, 8)
        self.decoder_strides = (8, 4, 2, 1)
        self.bottleneck_channels = width * 16
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(DoubleConv(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.center = DoubleConv(widths[-1], self.bottleneck_channels, norm)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        cin = self.bottleneck_channels
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.up_blocks.append(DoubleConv(2 * w, w, norm))
            cin = w
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @classmethod
    def from_config(cls, config, in_channels: int, num_classes: int) -> UNet:
        return cls(in_channels, num_classes, width=config.width, norm=config.norm)

    def encoder_level_modules(self) -> list[nn.Module]:
        return list(self.down)

    def forward_levels(self, x: torch.Tensor) -> BackboneOutput:
        encoder = []
        for block in self.down:
            x = block(x)
            encoder.append(x)
            x = self.pool(x)
        bottleneck = self.center(x)
        x = bottleneck
        decoder = []
        for up, block, skip in zip(self.up, self.up_blocks, reversed(encoder), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
            decoder.append(x)
        return BackboneOutput(self.head(x), encoder, decoder, bottleneck)
