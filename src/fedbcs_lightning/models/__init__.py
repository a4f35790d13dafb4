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


__all__ = ["BACKBONES", "BackboneOutput", "SegmentationBackbone", "create_backbone"]
