"""Run configuration: typed sections, YAML presets, overrides and validation.

Everything a run needs is in one :class:`Config`. Defaults live here; presets in
``configs/*.yaml`` overlay them; ``--set section.key=value`` and the CLI options overlay
the preset. Unknown keys and bad values raise :class:`ConfigError` with the key named.

Example
-------
>>> from fedbcs_lightning.config import Config, merge
>>> cfg = merge(Config(), {"train": {"rounds": 3}, "data": {"image_size": 32}})
>>> cfg.train.rounds, cfg.data.image_size
(3, 32)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and why."""


@dataclass
class SyntheticConfig:
    """Options of the built-in synthetic multi-site data sets."""

    sites: int = 4
    images_per_site: int = 48
    style_strength: float = 1.0


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None  # folder of a real data set (else $FEDBCS_DATA/<name>)
    cache: str | None = None  # HDF5 file written by `fedbcs prepare`
    image_size: int = 64  # resize to (fundus, prostate) or crop/window size (nuclei, sites)
    augment: bool = True
    crops_per_image: int = 4  # random crops per image and epoch (whole-image data sets)
    skip_unpaired: bool = False  # skip images without masks (with a warning) instead of failing
    label_values: list[int] = field(default_factory=list)  # mask values -> classes 1..n (sites)
    train_foreground_only: bool | None = None  # None: the data set's default
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    backbone: str = "unet"
    width: int = 16  # base width of the reference U-Net (the paper uses 32)
    norm: str = "batch"  # batch | batch_stateless (the reference's) | instance
    encoder: str = "resnet18"  # smp encoder name, for backbone smp-unet
    encoder_weights: str | None = None  # never downloaded implicitly


@dataclass
class TrainConfig:
    method: str = "fedavg"
    rounds: int = 30
    local_epochs: int = 1
    clients: int | None = None  # use the first N sites; None = all
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.0
    shuffle: bool = True  # shuffle training batches (the reference does not)


@dataclass
class FedBCSConfig:
    """Options of method ``fedbcs``; the ablations are switches here."""

    fsr: bool = True  # frequency-domain style recalibration in the encoder
    fsr_levels: list[int] = field(default_factory=lambda: [2, 3, 4])  # 1-based encoder levels
    fsr_mode: str = "closed"  # closed (exact fast path) | fft | band
    fsr_bands: int = 4  # radial bands, for fsr_mode band
    cdpa: bool = True  # context-aware dual-level prototype alignment
    prototype_levels: list[str] = field(default_factory=lambda: ["encoder", "decoder"])
    prototype_dim: int = 256  # channels of each fused level
    prototype_mean: str = "batch"  # batch (mean of batch means, the reference) | pixel
    clustering: str = "finch"  # finch | mean (server-side prototype aggregation)
    max_anchors: int = 1024  # anchors per class, level and batch (random subset); 0 = all
    tau: float = 0.1  # temperature of the contrastive term
    weight: float = 1.0  # lambda, weight of the alignment loss
    alignment: str = "stable"  # stable (log-sum-exp) | paper (the reference's clamps)


@dataclass
class FedProxConfig:
    """Options of method ``fedprox``."""

    mu: float = 0.01  # weight of the proximal term


@dataclass
class MoonConfig:
    """Options of method ``moon``."""

    mu: float = 1.0  # weight of the model-contrastive loss
    tau: float = 0.5  # temperature
    projection_dim: int = 64  # output size of the projection head on the pooled bottleneck


@dataclass
class FPLConfig:
    """Options of method ``fpl`` (prototypes of the last decoder layer)."""

    tau: float = 0.02  # temperature of the cluster-prototype contrastive term
    weight: float = 1.0  # weight of the prototype loss (contrastive + consistency)
    max_anchors: int = 1024  # anchors per class and batch (random subset); 0 = all


@dataclass
class HarmoFLConfig:
    """Options of method ``harmofl``."""

    alpha: float = 0.05  # radius of the weight perturbation (gradient direction)
    momentum: float = 0.1  # update rate of each site's running amplitude spectrum


@dataclass
class RunConfig:
    seed: int = 0
    output: str | None = None
    accelerator: str = "cpu"
    loggers: list[str] = field(default_factory=list)  # experiment trackers: wandb, csv, tensorboard
    log_images: int = 4  # validation images per site in logged overlays and plots (0 = none)
    checkpoint_every: int = 1  # write the resumable state every N rounds (and at the end)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    fedbcs: FedBCSConfig = field(default_factory=FedBCSConfig)
    fedprox: FedProxConfig = field(default_factory=FedProxConfig)
    moon: MoonConfig = field(default_factory=MoonConfig)
    fpl: FPLConfig = field(default_factory=FPLConfig)
    harmofl: HarmoFLConfig = field(default_factory=HarmoFLConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTIMIZERS = ("adam", "adamw", "sgd")
NORMS = ("batch", "batch_stateless", "instance")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


def merge(config: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``config`` with nested ``updates`` applied and typed."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), hints, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key {path!r}; valid keys here: {', '.join(hints)}.{hint}"
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, prefix=f"{path}.")
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(config, **changes)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").strip("[]").split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {hint}")  # pragma: no cover


def parse_override(text: str) -> dict[str, Any]:
    """``"train.rounds=5"`` -> ``{"train": {"rounds": "5"}}`` (typed later by :func:`merge`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    parsed = yaml.safe_load(value) if value else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return nested


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files("fedbcs_lightning.presets").iterdir()
        if p.name.endswith(".yaml")
    )


def load_yaml(source: str | Path) -> dict[str, Any]:
    """Read a preset by name (``configs/<name>.yaml``) or a YAML file by path."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        preset = resources.files("fedbcs_lightning.presets") / f"{source}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"config {str(source)!r} is neither a file nor a preset; presets: "
                f"{', '.join(preset_names())}"
            )
        text = preset.read_text()
        where = f"preset {source!r}"
    else:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        where = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections at the top level")
    return data


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def resolve(
    preset: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- preset/YAML file <- ``key=value`` overrides <- explicit options; validated."""
    updates: dict[str, Any] = load_yaml(preset) if preset else {}
    for text in overrides:
        updates = deep_update(updates, parse_override(text))
    updates = deep_update(updates, options or {})
    config = merge(Config(), updates)
    validate(config)
    return config


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a saved (resolved) config."""
    config = merge(Config(), data)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Check values and registered names; raise :class:`ConfigError` naming the key."""
    from fedbcs_lightning.catalog import BACKBONES, DATASETS, METHODS
    from fedbcs_lightning.registry import RegistryError

    for registry, value, key in (
        (DATASETS, config.data.name, "data.name"),
        (METHODS, config.train.method, "train.method"),
        (BACKBONES, config.model.backbone, "model.backbone"),
    ):
        try:
            registry.check(value)
        except RegistryError as err:
            raise ConfigError(f"{key}: {err}") from None
    _choice(config.train.optimizer, OPTIMIZERS, "train.optimizer")
    _choice(config.model.norm, NORMS, "model.norm")
    _choice(config.run.accelerator, ACCELERATORS, "run.accelerator")
    _check_loggers(config.run.loggers)
    _positive(config, "run.checkpoint_every")
    if config.run.log_images < 0:
        raise ConfigError(f"run.log_images: must be >= 0, got {config.run.log_images}")
    _positive(
        config,
        "train.rounds",
        "train.local_epochs",
        "train.batch_size",
        "train.lr",
        "data.image_size",
        "model.width",
        "data.synthetic.sites",
        "data.synthetic.images_per_site",
        "data.crops_per_image",
    )
    if config.train.clients is not None and config.train.clients < 1:
        raise ConfigError(f"train.clients: must be at least 1, got {config.train.clients}")
    for key in ("data.val_fraction", "data.test_fraction"):
        value = _get(config, key)
        if not 0.0 < value < 0.5:
            raise ConfigError(f"{key}: must lie in (0, 0.5), got {value}")
    if config.data.image_size % 16:
        raise ConfigError(
            f"data.image_size: must be a multiple of 16 (the U-Net halves it 4 times), "
            f"got {config.data.image_size}; try {-(-config.data.image_size // 16) * 16}"
        )
    fb = config.fedbcs
    _choice(fb.fsr_mode, ("closed", "fft", "band"), "fedbcs.fsr_mode")
    _choice(fb.prototype_mean, ("batch", "pixel"), "fedbcs.prototype_mean")
    _choice(fb.clustering, ("finch", "mean"), "fedbcs.clustering")
    _choice(fb.alignment, ("stable", "paper"), "fedbcs.alignment")
    for level in fb.prototype_levels:
        _choice(level, ("encoder", "decoder"), "fedbcs.prototype_levels")
    if fb.cdpa and not fb.prototype_levels:
        raise ConfigError("fedbcs.prototype_levels: name encoder and/or decoder (or cdpa: false)")
    if any(level < 1 for level in fb.fsr_levels):
        raise ConfigError(f"fedbcs.fsr_levels: levels count from 1, got {fb.fsr_levels}")
    _positive(config, "fedbcs.tau", "fedbcs.prototype_dim", "fedbcs.fsr_bands")
    if config.fedprox.mu < 0:
        raise ConfigError(f"fedprox.mu: must be >= 0, got {config.fedprox.mu}")
    _positive(config, "moon.tau", "moon.projection_dim", "fpl.tau")
    for key in ("moon.mu", "fpl.weight", "fpl.max_anchors", "harmofl.alpha"):
        if _get(config, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(config, key)}")
    if not 0.0 < config.harmofl.momentum <= 1.0:
        raise ConfigError(f"harmofl.momentum: must lie in (0, 1], got {config.harmofl.momentum}")
    if fb.max_anchors < 0:
        raise ConfigError(f"fedbcs.max_anchors: must be >= 0 (0 = all), got {fb.max_anchors}")
    if fb.weight < 0:
        raise ConfigError(f"fedbcs.weight: must be >= 0, got {fb.weight}")
    if config.train.weight_decay < 0 or config.data.synthetic.style_strength < 0:
        raise ConfigError("train.weight_decay and data.synthetic.style_strength must be >= 0")


def _check_loggers(names: list[str]) -> None:
    from fedbcs_lightning.callbacks.loggers import LOGGERS

    for name in names:
        _choice(name, LOGGERS, "run.loggers")


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _positive(config: Config, *keys: str) -> None:
    for key in keys:
        value = _get(config, key)
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def save(config: Config, path: str | Path) -> None:
    from fedbcs_lightning.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
