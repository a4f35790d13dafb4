"""Segmentation backbones behind one contract (:class:`SegmentationBackbone`)."""

from __future__ import annotations

from typing import Any

from fedbcs_lightning.catalog import BACKBONES
from fedbcs_lightning.models.base import BackboneOutput, SegmentationBackbone


def create_backbone(
    name: str, in_channels: int, num_classes: int, **kwargs: Any
) -> SegmentationBackbone:
    """Build a registered backbone by name (see ``fedbcs_lightning.catalog.BACKBONES``)."""
    return BACKBONES.get(name)(in_channels=in_channels, num_classes=num_classes, **kwargs)


def backbone_from_config(config: Any, in_channels: int, num_classes: int) -> SegmentationBackbone:
    """The backbone ``config.model`` names; without BatchNorm (GroupNorm in its place)
    under ``privacy.mode=sample``, whose per-image gradients BatchNorm would mix."""
    backbone = BACKBONES.get(config.model.backbone).from_config(
        config.model, in_channels=in_channels, num_classes=num_classes
    )
    if config.privacy.mode == "sample":
        from opacus.validators import ModuleValidator

        backbone = ModuleValidator.fix(backbone)  # gcd(32, channels) groups
    return backbone


__all__ = [
    "BACKBONES",
    "BackboneOutput",
    "SegmentationBackbone",
    "backbone_from_config",
    "create_backbone",
]
