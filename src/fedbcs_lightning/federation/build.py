"""Build a federation from a config: the backbone, one client per site, their loaders.

Both engines build their clients here, so a site trains the same way in-process and on
another machine.

Examples
--------
>>> from fedbcs_lightning.config import resolve
>>> from fedbcs_lightning.data import load_dataset, make_splits
>>> from fedbcs_lightning.methods import create_strategy
>>> cfg = resolve(options={"data": {"image_size": 32, "synthetic": {"sites": 2,
...     "images_per_site": 6}}, "model": {"width": 4}})
>>> data = load_dataset(cfg)
>>> splits = make_splits(data, 0.2, 0.2, seed=0)
>>> [c.name for c in build_clients(cfg, data, splits, create_strategy(cfg))]
['site1', 'site2']
"""

from __future__ import annotations

import lightning as L

from fedbcs_lightning.config import Config, ConfigError
from fedbcs_lightning.data import (
    DataError,
    FederatedData,
    SegmentationDataset,
    build_augmentation,
    eval_batch_size,
    eval_dataset,
    make_loader,
)
from fedbcs_lightning.federation.client import FederatedClient, SegmentationClientModule
from fedbcs_lightning.federation.private import PrivateSegmentationModule
from fedbcs_lightning.methods import Strategy
from fedbcs_lightning.methods.base import POOLED_CLIENT
from fedbcs_lightning.models import BACKBONES, backbone_from_config
from fedbcs_lightning.rng import site_seed


def check_setup(config: Config) -> None:
    """What the config's names imply and plain validation cannot see, checked before any
    data are read: the backbone takes ``data.image_size`` (its own ``input_divisor``),
    and the accelerator named by ``run.accelerator`` exists here."""
    backbone = BACKBONES.get(config.model.backbone).from_config(
        config.model, in_channels=1, num_classes=2
    )  # the divisor may depend on the backbone's options (its depth)
    divisor = int(backbone.input_divisor)
    size = config.data.image_size
    if size % divisor:
        raise ConfigError(
            f"data.image_size: backbone {config.model.backbone!r} needs a multiple of "
            f"{divisor}, got {size}; try {-(-size // divisor) * divisor}"
        )
    accelerator = config.run.accelerator
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"run.accelerator: {accelerator!r} but torch {torch.__version__} sees no CUDA "
                "GPU here; use run.accelerator=cpu (or auto), or install a CUDA build of torch"
            )
    if accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(
                "run.accelerator: 'mps' but no Apple GPU is available here; use cpu or auto"
            )


def build_backbone(config: Config, data: FederatedData):
    return backbone_from_config(config, data.in_channels, data.num_classes)


def build_clients(
    config: Config, data: FederatedData, splits: dict, strategy: Strategy
) -> list[FederatedClient]:
    """One client per site, all starting from the same initial weights."""
    L.seed_everything(config.run.seed, verbose=False)
    template = strategy.configure_backbone(build_backbone(config, data))

    def client(name: str, loaders: dict) -> FederatedClient:
        backbone = strategy.configure_backbone(build_backbone(config, data))
        backbone.load_state_dict(template.state_dict())
        module_class, hooks = SegmentationClientModule, strategy.client_hooks()
        if config.privacy.mode == "sample":
            module_class = PrivateSegmentationModule
            hooks.append(sample_privacy(config, name, loaders, strategy))
        module = module_class(
            backbone,
            optimizer=config.train.optimizer,
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            momentum=config.train.momentum,
            hooks=hooks,
            channels_last=config.run.channels_last,
            compile=config.run.compile,
        )
        return FederatedClient(
            name,
            module,
            loaders,
            _num_images(loaders["train"].dataset),
            data.regions,
            config.train.local_epochs,
            config.run.accelerator,
            window=config.data.image_size if data.whole_images else None,
            whole_image_pixels=config.run.whole_image_pixels,
            largest_component=config.data.largest_component,
            seed=config.run.seed,
            precision=config.run.precision,
        )

    clients = [
        client(
            site.name, site_loaders(config, data, site, splits[site.name], _seed(config, site.name))
        )
        for site in data.sites
    ]
    if strategy.pools_training_data:
        clients.append(client("pooled", pooled_loaders(config, clients)))
    return clients


def sample_privacy(config: Config, site: str, loaders: dict, strategy: Strategy):
    """DP-SGD for one site: its training loader becomes Poisson-sampled (in ``loaders``)
    and the returned hook clips, noises and accounts (``privacy.mode=sample``); a method
    that shares prototypes has them released with noise instead."""
    from fedbcs_lightning.methods.base import PrototypeSharing
    from fedbcs_lightning.privacy.dpsgd import poisson_loader, private_generator
    from fedbcs_lightning.privacy.hooks import SamplePrivacy

    options = config.privacy
    loaders["train"] = poisson_loader(
        loaders["train"], private_generator(options.noise_seed, site, 1)
    )
    return SamplePrivacy(
        options,
        loaders["train"],
        steps_per_round=config.train.local_epochs * len(loaders["train"]),
        rounds=config.train.rounds,
        noise=private_generator(options.noise_seed, site, 2),
        describe=strategy.prototype_descriptors
        if isinstance(strategy, PrototypeSharing) and strategy.shares_prototypes()
        else None,
    )


def _num_images(dataset) -> int:
    parts = getattr(dataset, "datasets", [dataset])  # a ConcatDataset has several
    return sum(len(part.indices) for part in parts)


def _seed(config: Config, site: str) -> int:
    return site_seed(config.run.seed, site, 0)


def loader_options(config: Config) -> dict:
    """Worker processes (``data.num_workers``) and pinned memory (where training runs on a
    CUDA GPU) of every loader of a run."""
    import torch

    on_cuda = config.run.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return {"workers": config.data.num_workers, "pin_memory": on_cuda}


def pooled_loaders(config: Config, clients: list[FederatedClient]) -> dict:
    """One training loader over the union of the clients' training sets."""
    from torch.utils.data import ConcatDataset

    names = [c.name for c in clients]
    if POOLED_CLIENT in names:
        raise DataError(f"method pooled adds a client named {POOLED_CLIENT!r}; rename that site")
    union = ConcatDataset([c.loaders["train"].dataset for c in clients])
    loader = make_loader(
        union,
        config.train.batch_size,
        train=True,
        seed=_seed(config, POOLED_CLIENT),
        shuffle=config.train.shuffle,
        **loader_options(config),
    )
    return {"train": loader}


def site_loaders(config: Config, data: FederatedData, site, idx: dict, seed: int) -> dict:
    """Train/val/test loaders of one site.

    Whole-image data sets train on random crops of ``data.image_size`` and evaluate one
    whole image at a time (with sliding windows).
    """
    crop = config.data.image_size if data.whole_images else None
    transform = build_augmentation(
        seed, augment=config.data.augment, crop=crop, kind=config.data.augmentation
    )
    foreground_only = config.data.train_foreground_only
    if foreground_only is None:
        foreground_only = data.train_foreground_only
    train = [i for i in idx["train"] if site.masks[i].any()] if foreground_only else idx["train"]
    if not train:
        raise DataError(f"site {site.name!r} has no training image with foreground")
    repeats = config.data.crops_per_image if data.whole_images else 1
    options = loader_options(config)
    if repeats > 1 and config.privacy.mode == "sample":
        raise ConfigError(
            f"data.crops_per_image: {repeats} crops of each image per epoch, but "
            "privacy.mode=sample protects images as single samples; set data.crops_per_image=1"
        )
    return {
        "train": make_loader(
            SegmentationDataset(site, train, transform, repeats, intensity=config.data.intensity),
            config.train.batch_size,
            train=True,
            seed=seed,
            shuffle=config.train.shuffle,
            **options,
        ),
        **{
            split: make_loader(
                eval_dataset(config, data, site, idx[split]),
                eval_batch_size(config, data),
                False,
                seed,
                **options,
            )
            for split in ("val", "test")
        },
    }


def describe_data(data: FederatedData) -> dict:
    """What a checkpoint records about the data: enough to rebuild and use the model."""
    return {
        "name": data.name,
        "class_names": data.class_names,
        "regions": data.regions,
        "in_channels": data.in_channels,
        "sites": [s.name for s in data.sites],
        "whole_images": data.whole_images,
    }
