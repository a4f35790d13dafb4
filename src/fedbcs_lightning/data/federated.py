"""Federated data: sites of (image, mask) pairs, what is scored, augmentation, loaders.

Examples
--------
>>> import numpy as np
>>> from fedbcs_lightning.data.federated import FederatedData, Site
>>> site = Site("a", np.zeros((10, 16, 16, 3), np.uint8), np.zeros((10, 16, 16), np.uint8))
>>> FederatedData("toy", [site], ["background", "thing"], {"thing": [1]}).num_classes
2
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedbcs_lightning.config.schema import AUGMENTATIONS, INTENSITIES
from fedbcs_lightning.data.readers import DataError, resize_pair

SPLITS = ("train", "val", "test")


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
        if any(s.name == "mean" for s in self.sites):  # every table's mean-over-sites row
            raise DataError(
                f"data set {self.name!r}: a site may not be named 'mean' (the name of the "
                "mean over sites in every table, and of a new site's model); rename its folder"
            )

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
    dataset: SegmentationDataset,
    batch_size: int,
    train: bool,
    seed: int,
    shuffle: bool = True,
    workers: int = 0,
    pin_memory: bool = False,
):
    """Training loaders shuffle (seeded) unless told not to, and drop a last batch of one
    (BatchNorm needs two samples).

    With ``workers`` > 0 images are read and augmented in that many worker processes,
    started for each pass over the data; each worker reseeds the augmentation from the
    seed torch gives it (drawn from the loader's generator), so epochs differ, and what a
    run draws stays a function of the states an exact resume restores. ``pin_memory``
    speeds up copies to a GPU.
    """
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
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker_augmentation if workers else None,
    )


def seed_worker_augmentation(worker_id: int) -> None:
    """In a loader's worker process: seed the augmentation of its data set(s) from the
    worker's torch seed (a fresh one per worker and pass over the data)."""
    import torch

    info = torch.utils.data.get_worker_info()
    for dataset in getattr(info.dataset, "datasets", [info.dataset]):  # ConcatDataset: several
        transform = getattr(dataset, "transform", None)
        if transform is not None:
            transform.set_random_seed(info.seed % 2**32)
