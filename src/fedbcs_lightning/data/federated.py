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

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedbcs_lightning.config.schema import AUGMENTATIONS, INTENSITIES
from fedbcs_lightning.rng import site_seed

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data file, folder or data set is unusable; the message names it and the fix."""


@dataclass
class Site:
    """One client's images ``(H, W, C)`` uint8 and label maps ``(H, W)`` uint8.

    ``images`` and ``masks`` are stacked arrays or lists (images of varied size).
    ``groups`` (e.g. the patient of each slice) keeps a group inside one split;
    ``fixed_test`` holds the indices of a published test split; ``sources`` the files read.
    """

    name: str
    images: Sequence[np.ndarray]
    masks: Sequence[np.ndarray]
    groups: list[str] | None = None
    fixed_test: list[int] | None = None
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.masks):
            raise DataError(
                f"site {self.name!r}: {len(self.images)} images but {len(self.masks)} masks"
            )
        if isinstance(self.images, np.ndarray) and (
            self.images.ndim != 4 or not isinstance(self.masks, np.ndarray) or self.masks.ndim != 3
        ):
            raise DataError(
                f"site {self.name!r}: images must be (N, H, W, C) and masks (N, H, W); got "
                f"{self.images.shape} and {np.shape(self.masks)}"
            )
        for i, (image, mask) in enumerate(zip(self.images, self.masks, strict=True)):
            if image.ndim != 3 or image.shape[:2] != mask.shape:
                raise DataError(
                    f"site {self.name!r}, item {i}: image {image.shape} and mask {mask.shape} "
                    "do not match (image (H, W, C), mask (H, W))"
                )
        if self.groups is not None and len(self.groups) != len(self.images):
            raise DataError(f"site {self.name!r}: one group per image is needed")

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
    #: images keep their native size: train on random crops, evaluate with sliding windows
    whole_images: bool = False
    #: train only on images that contain foreground (e.g. prostate slices)
    train_foreground_only: bool = False
    #: images are slices of a case's volume: score Dice per case over all its slices
    case_dice: bool = False

    def __post_init__(self) -> None:
        if not self.regions:
            self.regions = {n: [i] for i, n in enumerate(self.class_names) if i > 0}
        if not self.sites:
            raise DataError(f"data set {self.name!r} has no sites")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.sites[0].images[0].shape[-1])

    def without(self, names: Sequence[str]) -> FederatedData:
        """The data set without the sites ``names`` (e.g. one kept unseen by training)."""
        if not names:
            return self
        known = [s.name for s in self.sites]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DataError(
                f"data.leave_out: data set {self.name!r} has no site(s) {', '.join(unknown)}; "
                f"its sites: {', '.join(known)}"
            )
        kept = [s for s in self.sites if s.name not in names]
        if not kept:
            raise DataError(f"data.leave_out leaves no site of data set {self.name!r} to train")
        return dataclasses.replace(self, sites=kept)

    def resized(self, size: int) -> FederatedData:
        """Every image resized to ``size`` x ``size`` (masks with nearest neighbours), as a
        data set of fixed-size images (``data.resize_whole``: the reference's nuclei
        protocol, where whole images are otherwise trained on crops and scored whole)."""
        from fedbcs_lightning.data.readers import resize_pair

        sites = []
        for site in self.sites:
            pairs = [resize_pair(i, m, size) for i, m in zip(site.images, site.masks, strict=True)]
            images = np.stack([i for i, _ in pairs])
            sites.append(
                dataclasses.replace(site, images=images, masks=np.stack([m for _, m in pairs]))
            )
        return dataclasses.replace(self, sites=sites, whole_images=False)

    def subset(self, num_sites: int | None) -> FederatedData:
        """The first ``num_sites`` sites (all when ``None``)."""
        if num_sites is None:
            return self
        if num_sites > len(self.sites):
            raise DataError(
                f"{num_sites} clients requested but data set {self.name!r} has "
                f"{len(self.sites)} sites"
            )
        return dataclasses.replace(self, sites=self.sites[:num_sites])


def make_splits(
    data: FederatedData,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int = 0,
    fold: int = 0,
) -> dict[str, dict[str, list[int]]]:
    """Per-site train/val/test indices, a deterministic function of ``seed``.

    A site's published test split (``fixed_test``) is kept and validation comes out of
    the rest; items of one group (a patient's slices, a slide's tiles) always land in
    the same split.

    With ``folds`` = k >= 2 (k-fold cross-validation), each site's groups are dealt into
    k folds of about equal image counts (seeded; published test splits are pooled with
    the rest); fold ``fold`` is the test split, so over the k folds every image is a test
    image once, and validation (``val_fraction`` of the site's groups) comes out of the
    other folds. ``test_fraction`` is not used then.

    >>> import numpy as np
    >>> site = Site("a", np.zeros((10, 4, 4, 3), np.uint8), np.zeros((10, 4, 4), np.uint8))
    >>> data = FederatedData("toy", [site], ["background", "thing"])
    >>> tests = [make_splits(data, 0.2, 0.2, 0, folds=5, fold=k)["a"]["test"] for k in range(5)]
    >>> sorted(i for test in tests for i in test) == list(range(10))
    True
    """
    splits = {}
    for site in data.sites:
        groups = site.groups or [str(i) for i in range(len(site))]
        fixed = None if folds else site.fixed_test
        pool = [i for i in range(len(site)) if i not in set(fixed or [])]
        units = sorted({groups[i] for i in pool}) if site.groups else [groups[i] for i in pool]
        shuffle = np.random.default_rng(site_seed(seed, site.name, 2))
        order = [units[j] for j in shuffle.permutation(len(units))]
        if folds:
            test_units = _fold_units(site, order, groups, folds)[fold]
            rest = [u for u in order if u not in test_units]
        else:
            n_test = 0 if fixed else max(1, int(round(len(units) * test_fraction)))
            test_units, rest = set(order[:n_test]), order[n_test:]
        n_val = max(1, int(round(len(units) * val_fraction)))
        if len(rest) - n_val < 1 or (fixed is not None and not fixed):
            unit = "cases" if site.groups else "images"
            raise DataError(
                f"site {site.name!r} has {len(units)} {unit} to split: too few for training, "
                "validation and test; add data to the site or leave it out"
            )
        val_units = set(rest[:n_val])
        test = sorted(fixed or [i for i in pool if groups[i] in test_units])
        splits[site.name] = {
            "train": [i for i in pool if groups[i] not in test_units | val_units],
            "val": [i for i in pool if groups[i] in val_units],
            "test": test,
        }
    return splits


def _fold_units(site: Site, order: list[str], groups: list[str], folds: int) -> list[set[str]]:
    """``order``'s groups dealt into ``folds`` folds: largest group first, each to the
    fold with the fewest images so far (ties: the shuffled order, then the first fold)."""
    if len(order) < folds:
        unit = "cases" if site.groups else "images"
        raise DataError(
            f"site {site.name!r} has {len(order)} {unit}: too few for data.folds={folds} "
            "(each fold needs one); use fewer folds or leave the site out"
        )
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    dealt: list[set[str]] = [set() for _ in range(folds)]
    counts = [0] * folds
    for unit in sorted(order, key=lambda u: -sizes[u]):  # stable: shuffled among equals
        k = counts.index(min(counts))
        dealt[k].add(unit)
        counts[k] += sizes[unit]
    return dealt


def config_splits(data: FederatedData, config) -> dict[str, dict[str, list[int]]]:
    """:func:`make_splits` as ``config`` sets it (``data.*`` fractions and folds,
    ``run.seed``): the splits of a run, on either engine and in ``fedbcs evaluate``."""
    d = config.data
    return make_splits(
        data, d.val_fraction, d.test_fraction, config.run.seed, folds=d.folds, fold=d.fold
    )


def dice_by_case(config, data: FederatedData) -> bool:
    """Whether Dice is scored per case over its slices (``data.case_dice``, else the
    data set's default)."""
    return data.case_dice if config.data.case_dice is None else config.data.case_dice


def eval_dataset(config, data: FederatedData, site: Site, indices: list[int]):
    """The images of ``indices`` as scored: only those with foreground where
    ``data.eval_foreground_only`` says so (the reference's prostate protocol), with cases
    for Dice per case (:func:`dice_by_case`) and the run's ``data.intensity``."""
    if config.data.eval_foreground_only:
        indices = [i for i in indices if site.masks[i].any()]
    return SegmentationDataset(
        site, indices, by_case=dice_by_case(config, data), intensity=config.data.intensity
    )


def eval_batch_size(config, data: FederatedData) -> int:
    """Images per evaluation batch: ``data.eval_batch_size``, else (0) one whole image at
    a time (whole-image data sets: sizes differ) or ``train.batch_size``. It matters where
    BatchNorm normalises with each batch's statistics (``model.norm=batch_stateless``)."""
    size = config.data.eval_batch_size
    if size > 1 and data.whole_images:
        raise DataError(
            f"data.eval_batch_size: {size} images per batch, but data set {data.name!r} keeps "
            "whole images of different sizes, scored one at a time; set it to 0 (or 1), or "
            "resize them (data.resize_whole=true)"
        )
    if size:
        return size
    return 1 if data.whole_images else config.train.batch_size


def build_augmentation(
    seed: int, augment: bool = True, crop: int | None = None, kind: str = "affine"
):
    """Random ``crop`` (padding smaller images), then, with ``augment``, the ``kind`` of
    augmentation: ``affine`` (the default: flips, small affine moves on image and mask,
    brightness and contrast on the image) or ``rot90_flip`` (a random multiple of 90
    degrees and flips, the reference's prostate augmentation). ``None`` when there is
    nothing to do."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    if kind not in AUGMENTATIONS:
        raise ValueError(f"data.augmentation: {kind!r} is not one of {', '.join(AUGMENTATIONS)}")
    transforms = []
    if crop:
        transforms += [
            A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
            A.RandomCrop(crop, crop),
        ]
    if augment and kind == "affine":
        transforms += [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        ]
    elif augment:
        transforms += [A.RandomRotate90(p=1.0), A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return A.Compose(transforms, seed=seed) if transforms else None


class SegmentationDataset:
    """A torch-style dataset over a subset of a site: float image (C, H, W), long mask.

    ``repeats`` visits every image that many times per epoch (several random crops of a
    large image). With ``by_case`` (evaluation of slices of volumes) :attr:`cases` names
    each item's case, so that Dice is computed per case. ``intensity`` says how pixel
    values become inputs (:func:`to_intensity`).
    """

    def __init__(
        self,
        site: Site,
        indices: list[int],
        transform=None,
        repeats: int = 1,
        by_case: bool = False,
        intensity: str = "unit",
    ) -> None:
        self.site = site
        self.indices = list(indices)
        self.transform = transform
        self.repeats = repeats
        self.by_case = by_case
        self.intensity = intensity

    @property
    def cases(self) -> list[str] | None:
        """The case of each item in order (``by_case`` and a site with cases), else None."""
        if not self.by_case or self.site.groups is None:
            return None
        return [self.site.groups[i] for i in self.indices] * self.repeats

    def __len__(self) -> int:
        return len(self.indices) * self.repeats

    def __getitem__(self, i: int):
        import torch

        index = self.indices[i % len(self.indices)]
        image = self.site.images[index]
        mask = self.site.masks[index]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = to_intensity(
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            self.intensity,
        )
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()


def to_intensity(image, intensity: str = "unit"):
    """A ``(C, H, W)`` float tensor of ``0..255`` values as the network takes it: ``unit``
    divides by 255; ``minmax`` scales each image's own range to ``[0, 1]`` (the reference's
    nuclei input); ``raw`` keeps ``0..255`` (the reference's prostate input).

    >>> import torch
    >>> to_intensity(torch.tensor([[[51.0, 102.0]]]), "minmax").tolist()
    [[[0.0, 1.0]]]
    """
    if intensity == "raw":
        return image
    if intensity == "minmax":
        low, high = image.min(), image.max()
        return (image - low) / (high - low).clamp(min=1e-8)
    if intensity == "unit":
        return image / 255.0
    raise ValueError(f"data.intensity: {intensity!r} is not one of {', '.join(INTENSITIES)}")


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
