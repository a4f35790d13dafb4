"""Data sets: every built-in or registered data set yields a :class:`FederatedData`."""

from __future__ import annotations

from fedbcs_lightning.catalog import DATASETS
from fedbcs_lightning.data.federated import (
    SPLITS,
    DataError,
    FederatedData,
    SegmentationDataset,
    Site,
    build_augmentation,
    make_loader,
    make_splits,
)


def load_dataset(config) -> FederatedData:
    """Build the data set named by ``config.data.name`` (from ``config.data.cache`` when
    given), limited to ``config.train.clients``."""
    if config.data.cache:
        from fedbcs_lightning.data.cache import read_cache

        data = read_cache(config.data.cache, config.data.name, config.data.image_size)
    else:
        data = DATASETS.get(config.data.name)(config)
    return data.subset(config.train.clients)


__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "FederatedData",
    "SegmentationDataset",
    "Site",
    "build_augmentation",
    "load_dataset",
    "make_loader",
    "make_splits",
]
