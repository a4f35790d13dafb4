"""The backbone contract every segmentation network implements.

FedBCS and the prototype baselines need more than logits: the multi-level encoder
features (shallow to deep), the decoder features (deep to shallow), and a place to insert
a module after an encoder level whose output replaces that level's feature. A backbone
provides exactly that and nothing else; one shared test class checks every registered
backbone.

Example
-------
>>> import torch
>>> from fedbcs_lightning.models import create_backbone
>>> net = create_backbone("unet", in_channels=3, num_classes=2, width=4)
>>> out = net.forward_features(torch.zeros(1, 3, 32, 32))
>>> [f.shape[1] for f in out.encoder], [f.shape[1] for f in out.decoder]
([4, 8, 16, 32], [32, 16, 8, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from fedbcs_lightning.config import ModelConfig


@dataclass
class BackboneOutput:
    """What one forward pass exposes."""

    logits: torch.Tensor
    encoder: list[torch.Tensor]  # shallow -> deep, the skip levels (bottleneck excluded)
    decoder: list[torch.Tensor]  # deep -> shallow
    bottleneck: torch.Tensor


class SegmentationBackbone(nn.Module):
    """Base class: implement ``forward_features`` and set the channel/stride attributes.

    Subclasses call :meth:`apply_input_transform` on the input (after :meth:`check_input`)
    and :meth:`apply_encoder_transform` on each encoder level's feature before it feeds the
    next level and the skip connection. Methods insert their layers at these two points.
    """

    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    encoder_strides: tuple[int, ...]
    decoder_strides: tuple[int, ...]
    bottleneck_channels: int
    #: input height and width must be multiples of this
    input_divisor: int = 16

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder_transforms = nn.ModuleDict()
        self.input_transform: nn.Module | None = None

    @classmethod
    def from_config(cls, config: ModelConfig, in_channels: int, num_classes: int):
        """Build from the ``model`` config section; override to read backbone options."""
        return cls(in_channels=in_channels, num_classes=num_classes)

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def set_encoder_transform(self, level: int, module: nn.Module) -> None:
        """Insert ``module`` after encoder level ``level`` (0-based, shallow first)."""
        if not 0 <= level < len(self.encoder_channels):
            raise ValueError(
                f"encoder level {level} does not exist; this backbone has levels "
                f"0..{len(self.encoder_channels) - 1}"
            )
        self.encoder_transforms[str(level)] = module

    def set_input_transform(self, module: nn.Module) -> None:
        """Insert ``module`` before the first layer (e.g. HarmoFL's amplitude normalisation)."""
        self.input_transform = module

    def apply_input_transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_transform is None else self.input_transform(x)

    def apply_encoder_transform(self, level: int, feature: torch.Tensor) -> torch.Tensor:
        module = (
            self.encoder_transforms[str(level)] if str(level) in self.encoder_transforms else None
        )
        return feature if module is None else module(feature)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        d = self.input_divisor
        if h % d or w % d:
            raise ValueError(
                f"input size {h}x{w} is not a multiple of {d}; resize or pad to "
                f"{-(-h // d) * d}x{-(-w // d) * d}"
            )
