"""Rebuild a trained model from a checkpoint.

A checkpoint (``checkpoints/{last,selected}.pt`` of a run) holds the global weights, the
resolved config and a description of the data, which is all it takes to rebuild the
network exactly as it was trained: the backbone from the registry, then the method's own
layers (``create_strategy(config).configure_backbone``, e.g. FedBCS's FSR layers). The
weights load strictly. Checkpoints of methods ``local`` (whole models), ``fedbn`` and
``harmofl`` (local layers) hold per-site tensors under ``<site>/<key>``; loading one of
them needs the site's name, or ``mean`` (:data:`NEW_SITE`) for a site that no training
used: the shared weights with the mean over the sites of each local tensor (FedBN's
BatchNorm statistics and affine weights, HarmoFL's amplitude spectrum). ``local`` keeps
whole models per site, so it has no model for a new site.

Examples
--------
>>> from fedbcs_lightning.evaluation.checkpoints import load_model
>>> model, info = load_model("runs/demo/checkpoints/selected.pt")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedbcs_lightning.config import Config, ConfigError, from_dict
from fedbcs_lightning.io import load_checkpoint


@dataclass
class ModelInfo:
    """What a checkpoint says about its model: config, data description, round, site."""

    path: Path
    config: Config
    data: dict[str, Any]
    round: int
    site: str | None = None

    @property
    def sites(self) -> list[str]:
        return list(self.data["sites"])

    @property
    def in_channels(self) -> int:
        return int(self.data["in_channels"])

    @property
    def num_classes(self) -> int:
        return len(self.data["class_names"])

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def whole_images(self) -> bool:
        """Images keep their size and are segmented with sliding windows of ``image_size``."""
        return bool(self.data["whole_images"])

    @property
    def window(self) -> int | None:
        return self.image_size if self.whole_images else None


#: The ``site`` that asks a per-site checkpoint for a new site's model (mean local tensors).
NEW_SITE = "mean"


def checkpoint_label(path: Path) -> str:
    """How messages name a checkpoint."""
    return f"checkpoint {str(path)!r}"


def read_info(path: str | Path, checkpoint: Mapping[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` of a loaded checkpoint; a clear error if parts are missing."""
    path = Path(path)
    missing = [key for key in ("config", "data") if key not in checkpoint]
    if missing:
        raise ValueError(
            f"{checkpoint_label(path)} lacks {', '.join(missing)}; not a fedbcs checkpoint"
        )
    try:
        config = from_dict(checkpoint["config"])
    except ConfigError as err:
        raise ValueError(
            f"{checkpoint_label(path)}: its config is not valid here ({err})"
        ) from None
    data = dict(checkpoint["data"])
    needed = ("class_names", "in_channels", "sites", "regions", "whole_images")
    missing = [k for k in needed if k not in data]
    if missing:
        raise ValueError(
            f"{checkpoint_label(path)}: its data description lacks {', '.join(missing)}"
        )
    return ModelInfo(path, config, data, int(checkpoint.get("round", 0)))


def per_site_models(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Sites of a checkpoint whose models differ per site (keys ``<site>/<key>``: whole
    models for ``local``, local layers for ``fedbn`` and ``harmofl``), else ``[]``."""
    from fedbcs_lightning.methods.base import split_site_key

    return sorted({parts[0] for key in weights if (parts := split_site_key(key))})


def site_weights(
    weights: Mapping[str, torch.Tensor], info: ModelInfo, site: str | None
) -> dict[str, torch.Tensor]:
    """The weights of the model for ``site``: the shared weights with the site's own
    ``<site>/<key>`` tensors, or with the mean over the sites of each local tensor for
    ``site="mean"`` (:data:`NEW_SITE`, a site that no training used), or, for a checkpoint
    without per-site tensors, the global weights (``site`` is then only checked)."""
    from fedbcs_lightning.methods.base import shared_tensors, site_tensors

    owners = per_site_models(weights)
    shared = shared_tensors(weights)
    if site == NEW_SITE:
        if owners and not shared:
            raise ValueError(
                f"{checkpoint_label(info.path)} holds a whole model per site (method "
                f"{info.config.train.method!r}), so none for a site that no training used; "
                f"name one of its sites: {', '.join(owners)}"
            )
        return {**shared, **mean_local_tensors(weights, owners)}
    known = owners or info.sites
    if site is not None and site not in known:
        new = f", or {NEW_SITE!r} for a site that no training used" if owners and shared else ""
        raise ValueError(
            f"{checkpoint_label(info.path)} has no site {site!r}; its sites: "
            f"{', '.join(known)}{new}"
        )
    if not owners:
        return dict(weights)
    if site is None:
        new = f" (or {NEW_SITE!r}, for a site that no training used)" if shared else ""
        raise ValueError(
            f"{checkpoint_label(info.path)} holds one model per site (method "
            f"{info.config.train.method!r}); name one with --site: {', '.join(owners)}{new}"
        )
    return {**shared, **site_tensors(weights, site)}


def mean_local_tensors(
    weights: Mapping[str, torch.Tensor], sites: list[str]
) -> dict[str, torch.Tensor]:
    """Each local tensor (``<site>/<key>``) averaged over ``sites`` with equal weights, by
    the servers' own rule (integer tensors, BatchNorm's batch counters, take the largest)."""
    from fedbcs_lightning.methods.base import (
        ClientUpdate,
        site_key,
        split_site_key,
        weighted_average,
    )

    keys = sorted({parts[1] for k in weights if (parts := split_site_key(k))})
    per_site = [
        ClientUpdate(site, {key: weights[site_key(site, key)] for key in keys}, 1) for site in sites
    ]
    return weighted_average(per_site)


def build_model(info: ModelInfo) -> torch.nn.Module:
    """The network the checkpoint's config describes, freshly initialised."""
    from fedbcs_lightning.methods import create_strategy
    from fedbcs_lightning.models import backbone_from_config

    config = info.config
    backbone = backbone_from_config(config, info.in_channels, info.num_classes)
    return create_strategy(config).configure_backbone(backbone)


def model_from_checkpoint(
    checkpoint: Mapping[str, Any], info: ModelInfo, site: str | None = None
) -> torch.nn.Module:
    """Build the network and load the checkpoint's weights (of ``site``) strictly."""
    weights = site_weights(checkpoint["state_dict"], info, site)
    model = build_model(info)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(
            f"{checkpoint_label(info.path)}: its weights do not fit the "
            f"{info.config.model.backbone!r} / {info.config.train.method!r} model its config "
            f"describes ({detail[:400]})"
        ) from None
    return model.eval()


def load_model(
    checkpoint_path: str | Path, site: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelInfo]:
    """The trained network of a checkpoint, in eval mode on ``map_location``, and its info.

    ``site`` picks the model of a site in a per-site (``local``) checkpoint; it is
    required there. A missing, damaged or foreign file raises an error naming it.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    info = read_info(checkpoint_path, checkpoint)
    model = model_from_checkpoint(checkpoint, info, site)
    info.site = site
    return model.to(map_location), info
