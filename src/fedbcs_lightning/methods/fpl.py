"""FPL: federated prototype learning under domain shift (Huang et al., CVPR 2023).

FedBCS's ancestor. Clients upload class prototypes of the *last* layer's features (the
finest decoder level, no projection); the server clusters each class's prototypes with
FINCH; clients add an InfoNCE term against the cluster prototypes and a mean squared
error to the unbiased prototype (their mean). The machinery is FedBCS's, with one level
that is the raw last-layer feature and no style recalibration.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedbcs_lightning.methods.fedbcs.context import Descriptor, LinearPart
from fedbcs_lightning.methods.fedbcs.strategy import PrototypeExchange
from fedbcs_lightning.methods.options import FedBCSOptions, FPLOptions

LEVEL = "last"


class LastLayerDescriptors(nn.Module):
    """The last decoder level as the one prototype level ``"last"`` (identity projection).

    >>> from fedbcs_lightning.models.unet import UNet
    >>> net = UNet(3, 2, width=4)
    >>> d = LastLayerDescriptors()(net.forward_features(torch.zeros(1, 3, 32, 32)))
    >>> list(d), d["last"].dim == net.decoder_channels[-1]
    (['last'], True)
    """

    def forward(self, output: Any) -> dict[str, Descriptor]:
        feature = output.decoder[-1]
        channels = feature.shape[1]
        identity = torch.eye(channels, device=feature.device, dtype=feature.dtype)
        zero = torch.zeros(channels, device=feature.device, dtype=feature.dtype)
        size = tuple(feature.shape[-2:])
        return {LEVEL: Descriptor([([LinearPart(feature, identity)], zero)], size)}


class FPL(PrototypeExchange):
    """FedAvg + last-layer prototypes clustered with FINCH (``fpl.tau``, ``fpl.weight``)."""

    name = "fpl"
    Options = FPLOptions

    def __init__(
        self, tau: float = 0.02, weight: float = 1.0, max_anchors: int = 1024, local_epochs: int = 1
    ) -> None:
        options = FedBCSOptions(
            fsr=False,
            cdpa=True,
            prototype_levels=[LEVEL],
            clustering="finch",
            tau=tau,
            weight=weight,
            max_anchors=max_anchors,
        )
        super().__init__(options, local_epochs)

    @classmethod
    def from_config(cls, config) -> FPL:
        fpl = config.method_options()
        strategy = cls(fpl.tau, fpl.weight, fpl.max_anchors, config.train.local_epochs)
        strategy.collect_prototypes = config.privacy.mode != "sample"
        return strategy

    def configure_backbone(self, backbone: Any) -> Any:
        self.attach_descriptors(
            backbone, LastLayerDescriptors(), {LEVEL: backbone.decoder_channels[-1]}
        )
        return backbone
