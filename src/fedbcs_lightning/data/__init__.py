"""Data sets: every built-in or registered data set yields a :class:`FederatedData`."""

from __future__ import annotations

import warnings

from fedbcs_lightning.catalog import DATASETS
from fedbcs_lightning.data.federated import (
    SPLITS,
    DataError,
    FederatedData,
    SegmentationDataset,
    Site,
    build_augmentation,
    dice_by_case,
    eval_batch_size,
    eval_dataset,
    make_loader,
)
from fedbcs_lightning.data.splits import config_splits, make_splits


def load_dataset(config) -> FederatedData:
    """Build the data set named by ``config.data.name`` (from ``config.data.cache`` when
    given), without the sites of ``config.data.leave_out``, limited to the first
    ``config.train.clients`` sites, whole images resized where ``config.data.resize_whole``
    says so, and :func:`check_data` it."""
    if config.data.cache:
        from fedbcs_lightning.data.cache import read_cache

        data = read_cache(config.data.cache, config.data.name, config.data.image_size)
    else:
        data = DATASETS.get(config.data.name)(config)
    data = data.without(config.data.leave_out).subset(config.train.clients)
    if config.data.resize_whole and data.whole_images:
        data = data.resized(config.data.image_size)
    check_data(data)
    return data


def check_data(data: FederatedData) -> None:
    """What every use of a data set needs (``fit`` and ``prepare`` both run it): one
    channel count across sites; a warning where masks hold no foreground (Dice would be
    1.0). Training also needs :func:`make_splits` to succeed (enough images per site)."""
    channels: dict[int, list[str]] = {}
    for site in data.sites:
        channels.setdefault(int(site.images[0].shape[-1]), []).append(site.name)
    if len(channels) > 1:
        sites = {s.name: s for s in data.sites}
        parts = []
        for count, names in sorted(channels.items()):
            example = sites[names[0]].sources[:1]
            where = f" (e.g. {example[0]})" if example else ""
            parts.append(f"{count} channel(s) in {', '.join(names)}{where}")
        raise DataError(
            f"data set {data.name!r}: sites have different channel counts: {'; '.join(parts)}. "
            "One model takes one kind of image: convert the images of some sites (e.g. grey "
            "to RGB) or train those sites separately"
        )
    empty = [s.name for s in data.sites if not any(m.any() for m in s.masks)]
    if len(empty) == len(data.sites):
        warnings.warn(
            f"data set {data.name!r}: no mask has any foreground, so every Dice will be 1.0 "
            "for an empty prediction; check the masks (and data.label_values)",
            DataWarning,
            stacklevel=2,
        )
    elif empty:
        warnings.warn(
            f"data set {data.name!r}: no mask of site(s) {', '.join(empty)} has foreground; "
            "their Dice is 1.0 for an empty prediction",
            DataWarning,
            stacklevel=2,
        )


class DataWarning(UserWarning):
    """A data set can be used but its scores may mislead (e.g. no foreground at all)."""


__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "DataWarning",
    "FederatedData",
    "SegmentationDataset",
    "Site",
    "build_augmentation",
    "check_data",
    "config_splits",
    "dice_by_case",
    "eval_batch_size",
    "eval_dataset",
    "load_dataset",
    "make_loader",
    "make_splits",
]
