"""Adapter: a segmentation-models-pytorch U-Net as a :class:`SegmentationBackbone`."""

from __future__ import annotations

import torch
from torch import nn

from fedbcs_lightning.models.base import BackboneOutput, SegmentationBackbone

# Modules whose outputs are the encoder's feature levels 1..4 (ResNet-style encoders).
_RESNET_STAGES = ("relu", "layer1", "layer2", "layer3")


class SmpUNet(SegmentationBackbone):
    """Any smp U-Net encoder; weights are never downloaded unless ``encoder_weights`` says so.

    Encoder levels are the skip features at strides 2, 4, 8, 16; decoder levels the outputs
    of the first four decoder blocks (strides 16, 8, 4, 2).

    Examples
    --------
    >>> import torch
    >>> net = SmpUNet(in_channels=3, num_classes=2, encoder="resnet18")
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2, 64, 64])
    """

    input_divisor = 32

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ) -> None:
        import segmentation_models_pytorch as smp

        super().__init__(in_channels, num_classes)
        self.net = smp.Unet(
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=num_classes,
            decoder_channels=decoder_channels,
        )
        channels = self.net.encoder.out_channels
        self.encoder_channels = tuple(channels[1:-1])
        self.encoder_strides = (2, 4, 8, 16)
        self.bottleneck_channels = channels[-1]
        self.decoder_channels = tuple(decoder_channels[:4])
        self.decoder_strides = (16, 8, 4, 2)
        self._captured: list[torch.Tensor] = []
        for block in self.net.decoder.blocks[:4]:
            block.register_forward_hook(self._capture)
        stages = [getattr(self.net.encoder, name, None) for name in _RESNET_STAGES]
        self._stages = stages if all(isinstance(s, nn.Module) for s in stages) else None

    @classmethod
    def from_config(cls, config, in_channels: int, num_classes: int) -> SmpUNet:
        return cls(
            in_channels, num_classes, encoder=config.encoder, encoder_weights=config.encoder_weights
        )

    def _capture(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        self._captured.append(output)

    def encoder_level_modules(self) -> list[nn.Module] | None:
        # ResNet-style encoders name their stages; others cannot host FSR
        return self._stages

    def forward_levels(self, x: torch.Tensor) -> BackboneOutput:
        self._captured = []
        features = self.net.encoder(x)
        decoded = self.net.decoder(features)
        logits = self.net.segmentation_head(decoded)
        decoder, self._captured = self._captured, []
        return BackboneOutput(logits, list(features[1:-1]), decoder, features[-1])
