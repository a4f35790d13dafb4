"""High-level entry points: build a federation from a config and train it.

Example
-------
>>> from fedbcs_lightning.config import resolve
>>> from fedbcs_lightning.api import fit
>>> cfg = resolve(options={"train": {"rounds": 1, "clients": 2}, "data": {"image_size": 32}})
>>> run = fit(cfg, run_dir="/tmp/fedbcs-doc-run", progress=False)  # doctest: +SKIP
>>> print(run.summary_table())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import lightning as L

from fedbcs_lightning.client import FederatedClient, SegmentationClientModule
from fedbcs_lightning.config import Config
from fedbcs_lightning.data import (
    DataError,
    FederatedData,
    SegmentationDataset,
    build_augmentation,
    make_loader,
)
from fedbcs_lightning.models import BACKBONES
from fedbcs_lightning.strategies import Strategy


def default_run_dir(config: Config) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.data.name}-{config.train.method}-{stamp}"


def build_backbone(config: Config, data: FederatedData):
    return BACKBONES.get(config.model.backbone).from_config(
        config.model, in_channels=data.in_channels, num_classes=data.num_classes
    )


def build_clients(
    config: Config, data: FederatedData, splits: dict, strategy: Strategy
) -> list[FederatedClient]:
    """One client per site, all starting from the same initial weights."""
    L.seed_everything(config.run.seed, verbose=False)
    template = strategy.configure_backbone(build_backbone(config, data))
    clients = []
    for k, site in enumerate(data.sites):
        backbone = strategy.configure_backbone(build_backbone(config, data))
        backbone.load_state_dict(template.state_dict())
        module = SegmentationClientModule(
            backbone,
            optimizer=config.train.optimizer,
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            momentum=config.train.momentum,
            hooks=strategy.client_hooks(),
        )
        seed = config.run.seed * 1000 + k
        idx = splits[site.name]
        clients.append(
            FederatedClient(
                site.name,
                module,
                site_loaders(config, data, site, idx, seed),
                len(idx["train"]),
                data.regions,
                config.train.local_epochs,
                config.run.accelerator,
                window=config.data.image_size if data.whole_images else None,
            )
        )
    return clients


def site_loaders(config: Config, data: FederatedData, site, idx: dict, seed: int) -> dict:
    """Train/val/test loaders of one site.

    Whole-image data sets train on random crops of ``data.image_size`` and evaluate one
    whole image at a time (with sliding windows).
    """
    crop = config.data.image_size if data.whole_images else None
    transform = build_augmentation(seed, augment=config.data.augment, crop=crop)
    foreground_only = config.data.train_foreground_only
    if foreground_only is None:
        foreground_only = data.train_foreground_only
    train = [i for i in idx["train"] if site.masks[i].any()] if foreground_only else idx["train"]
    if not train:
        raise DataError(f"site {site.name!r} has no training image with foreground")
    eval_batch = 1 if data.whole_images else config.train.batch_size
    return {
        "train": make_loader(
            SegmentationDataset(site, train, transform),
            config.train.batch_size,
            train=True,
            seed=seed,
            shuffle=config.train.shuffle,
        ),
        "val": make_loader(SegmentationDataset(site, idx["val"]), eval_batch, False, seed),
        "test": make_loader(SegmentationDataset(site, idx["test"]), eval_batch, False, seed),
    }
