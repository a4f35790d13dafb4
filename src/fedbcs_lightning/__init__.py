"""fedbcs-lightning: federated medical image segmentation with FedBCS and its baselines.

Importing the package is cheap; torch and Lightning load when a submodule needs them.

Examples
--------
>>> import fedbcs_lightning as fb
>>> "synthetic" in fb.DATASETS.names()
True
"""

from __future__ import annotations

from fedbcs_lightning.catalog import BACKBONES, DATASETS, METHODS
from fedbcs_lightning.config import Config, ConfigError, resolve

__version__ = "0.1.0"

__all__ = ["BACKBONES", "DATASETS", "METHODS", "Config", "ConfigError", "__version__", "resolve"]
