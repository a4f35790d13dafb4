"""Data sets: every built-in or registered data set yields a :class:`FederatedData`."""

from __future__ import annotations

from fedbcs_lightning.catalog import DATASETS
from fedbcs_lightning.data.federated import (
    SPLITS,
    FederatedData,
    SegmentationDataset,
    Site,
    build_augmentation,
    make_loader,
    make_splits,
)


def load_dataset(config) -> FederatedData:
    """Build the data set named by ``config.data.name``, limited to ``config.train.clients``."""
    return DATASETS.get(config.data.name)(config).subset(config.train.clients)


__all__ = [
    "DATASETS",
    "SPLITS",
    "FederatedData",
    "SegmentationDataset",
    "Site",
    "build_augmentation",
    "load_dataset",
    "make_loader",
    "make_splits",
]
