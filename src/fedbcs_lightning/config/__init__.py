"""Run configuration: typed sections, YAML presets, overrides and validation.

Everything a run needs is in one :class:`Config`. Defaults live in :mod:`.schema`; presets
in ``configs/*.yaml`` overlay them; ``--set section.key=value`` and the CLI options overlay
the preset (:mod:`.parsing`). Unknown keys and bad values raise :class:`ConfigError` with
the key named (:mod:`.validation`).

Examples
--------
>>> from fedbcs_lightning.config import Config, merge
>>> cfg = merge(Config(), {"train": {"rounds": 3}, "data": {"image_size": 32}})
>>> cfg.train.rounds, cfg.data.image_size
(3, 32)
"""

from __future__ import annotations

from fedbcs_lightning.config.parsing import (
    finish,
    from_dict,
    load_yaml,
    merge,
    parse_override,
    preset_names,
    resolve,
    save,
)
from fedbcs_lightning.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    ServerConfig,
    SyntheticConfig,
    TrainConfig,
)
from fedbcs_lightning.config.validation import validate

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PrivacyConfig",
    "RunConfig",
    "ServerConfig",
    "SyntheticConfig",
    "TrainConfig",
    "finish",
    "from_dict",
    "load_yaml",
    "merge",
    "parse_override",
    "preset_names",
    "resolve",
    "save",
    "validate",
]
