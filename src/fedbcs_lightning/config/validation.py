"""Checking a merged configuration: values in range, names registered, choices known.

Every error is a :class:`~fedbcs_lightning.config.schema.ConfigError` that names the key.
"""

from __future__ import annotations

from typing import Any

from fedbcs_lightning.config.schema import AUGMENTATIONS, INTENSITIES, Config, ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
NORMS = ("batch", "batch_stateless", "instance", "group")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
AGGREGATIONS = ("mean", "median", "trimmed_mean")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
PRIVACY_MODES = ("off", "sample", "client")
GENERATED = ("synthetic", "synthetic-prostate")  # built-in data sets that read no files
ACCOUNTANTS = ("rdp", "prv")


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
            raise ConfigError(
                f"{key}: {err}{imports_hint(config.run.imports, registry.kind, value)}"
            ) from None
    _choice(config.train.optimizer, OPTIMIZERS, "train.optimizer")
    _choice(config.model.norm, NORMS, "model.norm")
    _choice(config.run.accelerator, ACCELERATORS, "run.accelerator")
    _choice(config.run.precision, PRECISIONS, "run.precision")
    _check_loggers(config.run.loggers)
    _positive(config, "run.checkpoint_every", "run.eval_every")
    if config.run.whole_image_pixels < 0:
        raise ConfigError(
            f"run.whole_image_pixels: must be >= 0 (0 = always sliding windows), got "
            f"{config.run.whole_image_pixels}"
        )
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
    if config.run.seed < 0:
        raise ConfigError(f"run.seed: must be >= 0, got {config.run.seed}")
    if not 0.0 <= config.train.momentum < 1.0:
        raise ConfigError(f"train.momentum: must lie in [0, 1), got {config.train.momentum}")
    _check_server(config)
    _check_privacy(config)
    _check_pattern(config.data.group_pattern)
    if config.train.clients is not None and config.train.clients < 1:
        raise ConfigError(f"train.clients: must be at least 1, got {config.train.clients}")
    for key in ("data.val_fraction", "data.test_fraction"):
        value = _get(config, key)
        if not 0.0 < value < 0.5:
            raise ConfigError(f"{key}: must lie in (0, 0.5), got {value}")
    _check_data_source(config)
    _choice(config.data.intensity, INTENSITIES, "data.intensity")
    _choice(config.data.augmentation, AUGMENTATIONS, "data.augmentation")
    if config.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {config.data.num_workers}")
    if config.data.eval_batch_size < 0:
        raise ConfigError(f"data.eval_batch_size: must be >= 0, got {config.data.eval_batch_size}")
    clip = config.data.volume_clip
    if len(clip) != 2 or not 0 <= clip[0] < clip[1] <= 100:
        raise ConfigError(f"data.volume_clip: two percentiles 0 <= low < high <= 100, got {clip}")
    folds, fold = config.data.folds, config.data.fold
    if folds == 1 or folds < 0:
        raise ConfigError(f"data.folds: 0 (one seeded split) or at least 2, got {folds}")
    if not 0 <= fold < max(folds, 1):
        raise ConfigError(
            f"data.fold: must lie in 0..{max(folds, 1) - 1} with data.folds={folds}, got {fold}"
        )
    if config.train.weight_decay < 0 or config.data.synthetic.style_strength < 0:
        raise ConfigError("train.weight_decay and data.synthetic.style_strength must be >= 0")


def _check_pattern(pattern: str | None) -> None:
    import re

    if pattern is None:
        return
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        raise ConfigError(
            f"data.group_pattern: {pattern!r} is not a regular expression ({err})"
        ) from None
    if groups < 1:
        raise ConfigError(
            f"data.group_pattern: {pattern!r} needs a group that names the patient or slide, "
            "e.g. '^(\\d+)_' for TNBC's <slide>_<n> files"
        )


def _check_server(config: Config) -> None:
    server = config.server
    _choice(server.aggregation, AGGREGATIONS, "server.aggregation")
    _positive(config, "server.min_clients", "server.join_timeout", "server.round_timeout")
    if server.sites < 0:
        raise ConfigError(
            f"server.sites: must be >= 0 (0 = server.min_clients), got {server.sites}"
        )
    if server.max_update_norm < 0:
        raise ConfigError(
            f"server.max_update_norm: must be >= 0 (0 = no bound), got {server.max_update_norm}"
        )
    if not 0.0 <= server.trim_fraction < 0.5:
        raise ConfigError(f"server.trim_fraction: must lie in [0, 0.5), got {server.trim_fraction}")


def _check_privacy(config: Config) -> None:
    privacy = config.privacy
    _choice(privacy.mode, PRIVACY_MODES, "privacy.mode")
    _choice(privacy.accountant, ACCOUNTANTS, "privacy.accountant")
    _positive(
        config,
        "privacy.noise_multiplier",
        "privacy.max_grad_norm",
        "privacy.update_clip",
        "privacy.prototype_noise_multiplier",
        "privacy.prototype_clip",
    )
    if not 0.0 < privacy.delta < 1.0:
        raise ConfigError(f"privacy.delta: must lie in (0, 1), got {privacy.delta}")
    if privacy.noise_seed is not None and privacy.noise_seed < 0:
        raise ConfigError(f"privacy.noise_seed: must be >= 0, got {privacy.noise_seed}")
    if privacy.mode == "sample" and config.run.precision != "32":
        raise ConfigError(
            f"run.precision: {config.run.precision!r} with privacy.mode=sample; per-image "
            "gradient clipping runs in 32-bit precision only (use run.precision=32)"
        )
    if privacy.mode == "sample" and config.run.compile:
        raise ConfigError(
            "run.compile: not with privacy.mode=sample, whose per-image gradients are "
            "taken one image at a time (set run.compile=false)"
        )
    if privacy.mode == "client" and config.server.aggregation != "mean":
        raise ConfigError(
            f"server.aggregation: {config.server.aggregation!r} with privacy.mode=client; the "
            "server's noise is calibrated to a mean of clipped updates (use mean)"
        )


def _check_loggers(names: list[str]) -> None:
    from fedbcs_lightning.catalog import LOGGERS

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


def _check_data_source(config: Config) -> None:
    """Options that name where data come from must fit the data set."""
    data = config.data
    if data.name in GENERATED and data.root:
        raise ConfigError(
            f"data.root: data set {data.name!r} is generated, it reads no folder; drop "
            f"--data-root {data.root}, or name the data set of that folder with --dataset"
        )
    values = data.label_values
    if len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1})
        raise ConfigError(
            f"data.label_values: each mask value maps to its own class, but "
            f"{', '.join(map(str, repeated))} is given more than once in {values}"
        )
    if any(v < 0 for v in values):
        raise ConfigError(f"data.label_values: mask values are >= 0, got {values}")


def imports_hint(modules: list, kind: str, name: str) -> str:
    """What to pass when a config names code of modules it records (``run.imports``): a
    config is data, so the modules it lists are reported, never imported from it."""
    modules = [m for m in modules if isinstance(m, str)]
    if not modules:
        return ""
    flags = " ".join(f"--import {m}" for m in modules)
    return (
        f" This config was written with {kind} {name!r} from module(s) {', '.join(modules)} "
        f"(run.imports), which a config or checkpoint never imports by itself; pass {flags} "
        f"(or import them in Python) to load it."
    )


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
