"""Federated strategies (server side) and their client hooks."""

from __future__ import annotations

from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.strategies.base import (
    ClientHook,
    ClientUpdate,
    Instruction,
    Strategy,
    Weights,
    weighted_average,
)


def create_strategy(config) -> Strategy:
    """Build the strategy named by ``config.train.method``."""
    return METHODS.get(config.train.method).from_config(config)


__all__ = [
    "METHODS",
    "ClientHook",
    "ClientUpdate",
    "Instruction",
    "Strategy",
    "Weights",
    "create_strategy",
    "weighted_average",
]
