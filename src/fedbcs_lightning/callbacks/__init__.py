"""Callbacks for the federated loop: metrics, checkpoints, progress, plots and loggers."""

from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.callbacks.builtin import (
    CheckpointWriter,
    MetricsWriter,
    PrivacyReport,
    RoundProgress,
)

__all__ = [
    "CheckpointWriter",
    "FederatedCallback",
    "MetricsWriter",
    "PrivacyReport",
    "RoundProgress",
]
