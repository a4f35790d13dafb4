"""Federated data: sites of (image, mask) pairs, seeded splits, augmentation and loaders.

Example
-------
>>> import numpy as np
>>> from fedbcs_lightning.data.federated import FederatedData, Site, make_splits
>>> site = Site("a", np.zeros((10, 16, 16, 3), np.uint8), np.zeros((10, 16, 16), np.uint8))
>>> data = FederatedData("toy", [site], ["background", "thing"], {"thing": [1]})
>>> {k: len(v) for k, v in make_splits(data, 0.2, 0.2, seed=0)["a"].items()}
{'train': 6, 'val': 2, 'test': 2}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Site:
    """One client's images ``(N, H, W, C)`` uint8 and label maps ``(N, H, W)`` uint8."""

    name: str
    images: np.ndarray
    masks: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.masks.ndim != 3:
            raise ValueError(
                f"site {self.name!r}: images must be (N, H, W, C) and masks (N, H, W); got "
                f"{self.images.shape} and {self.masks.shape}"
            )
        if self.images.shape[:3] != self.masks.shape:
            raise ValueError(
                f"site {self.name!r}: {self.images.shape[0]} images of size "
                f"{self.images.shape[1:3]} but masks {self.masks.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class FederatedData:
    """Sites plus what their labels mean.

    ``regions`` names what Dice is reported for, as sets of label values (for fundus,
    disc = rim + cup); by default each foreground class alone.
    """

    name: str
    sites: list[Site]
    class_names: list[str]
    regions: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.regions:
            self.regions = {n: [i] for i, n in enumerate(self.class_names) if i > 0}
        if not self.sites:
            raise ValueError(f"data set {self.name!r} has no sites")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.sites[0].images.shape[-1])

    def subset(self, num_sites: int | None) -> FederatedData:
        """The first ``num_sites`` sites (all when ``None``)."""
        if num_sites is None:
            return self
        if num_sites > len(self.sites):
            raise ValueError(
                f"{num_sites} clients requested but data set {self.name!r} has "
                f"{len(self.sites)} sites"
            )
        return FederatedData(self.name, self.sites[:num_sites], self.class_names, self.regions)


def make_splits(
    data: FederatedData, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, dict[str, list[int]]]:
    """Per-site train/val/test indices, a deterministic function of ``seed``."""
    splits = {}
    for k, site in enumerate(data.sites):
        n = len(site)
        order = np.random.default_rng([seed, k, 2]).permutation(n)
        n_test = max(1, int(round(n * test_fraction)))
        n_val = max(1, int(round(n * val_fraction)))
        if n - n_test - n_val < 1:
            raise ValueError(
                f"site {site.name!r} has {n} images: too few for a train/val/test split"
            )
        splits[site.name] = {
            "train": sorted(order[n_test + n_val :].tolist()),
            "val": sorted(order[n_test : n_test + n_val].tolist()),
            "test": sorted(order[:n_test].tolist()),
        }
    return splits


def build_augmentation(seed: int):
    """Geometric transforms on image and mask, photometric on the image only."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        ],
        seed=seed,
    )


class SegmentationDataset:
    """A torch-style dataset over a subset of a site: float image (C, H, W), long mask."""

    def __init__(self, site: Site, indices: list[int], transform=None) -> None:
        self.site = site
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        import torch

        image = self.site.images[self.indices[i]]
        mask = self.site.masks[self.indices[i]]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()


def make_loader(
    dataset: SegmentationDataset, batch_size: int, train: bool, seed: int, shuffle: bool = True
):
    """Training loaders shuffle (seeded) unless told not to, and drop a last batch of one
    (BatchNorm needs two samples)."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed) if train else None
    drop_last = train and len(dataset) % batch_size == 1 and len(dataset) > batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=0,
    )
