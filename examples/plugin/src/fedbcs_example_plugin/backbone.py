"""``tiny-unet``: a small U-Net whose depth and width are the backbone's own options."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedbcs_lightning.config.checks import positive, within
from fedbcs_lightning.models import BackboneOutput, SegmentationBackbone


@dataclass
class TinyUNetOptions:
    """``model.options`` of ``tiny-unet``."""

    depth: int = 4  # encoder levels
    width: int = 8  # channels of the first level, doubled at each level

    def validate(self) -> None:
        positive(self, "width")
        within(self, "depth", 1, 5, closed="both")


def conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyUNet(SegmentationBackbone):
    """A U-Net of ``depth`` levels: conv blocks, max-pooling down, nearest upsampling."""

    Options = TinyUNetOptions

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 4, width: int = 8):
        super().__init__(in_channels, num_classes)
        widths = [width * 2**i for i in range(depth)]
        self.encoder_channels = tuple(widths)
        self.encoder_strides = tuple(2**i for i in range(depth))
        self.decoder_channels = tuple(reversed(widths))
        self.decoder_strides = tuple(reversed(self.encoder_strides))
        self.bottleneck_channels = 2 * widths[-1]
        self.input_divisor = 2**depth
        self.down = nn.ModuleList()
        for cin, w in zip([in_channels, *widths], widths, strict=False):
            self.down.append(conv(cin, w))
        self.mid = conv(widths[-1], self.bottleneck_channels)
        self.up = nn.ModuleList()
        for cin, w in zip([self.bottleneck_channels, *widths[:0:-1]], widths[::-1], strict=True):
            self.up.append(conv(cin + w, w))  # the upsampled input and the skip
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encoder_level_modules(self) -> list[nn.Module]:
        return list(self.down)  # their outputs feed the next level and the skips

    def forward_levels(self, x: torch.Tensor) -> BackboneOutput:
        encoder = []
        for block in self.down:
            x = block(x)
            encoder.append(x)
            x = nn.functional.max_pool2d(x, 2)
        bottleneck = x = self.mid(x)
        decoder = []
        for block, skip in zip(self.up, reversed(encoder), strict=True):
            x = block(torch.cat([nn.functional.interpolate(x, scale_factor=2.0), skip], 1))
            decoder.append(x)
        return BackboneOutput(self.head(x), encoder, decoder, bottleneck)
