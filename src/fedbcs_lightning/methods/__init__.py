"""Federated methods (the `--method` word): server-side strategies, their client hooks,
and the prototype machinery FedBCS and FPL share."""

from __future__ import annotations

from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.methods.base import (
    ClientHook,
    ClientUpdate,
    Instruction,
    Strategy,
    Weights,
    robust_average,
    weighted_average,
)


def create_strategy(config) -> Strategy:
    """Build the strategy named by ``config.train.method``, aggregating weights by the rule
    of ``config.server.aggregation``, under the differential privacy of ``config.privacy``
    (a method that cannot support it is refused with the reason)."""
    from fedbcs_lightning.privacy import check_method, wrap_strategy

    strategy = METHODS.get(config.train.method).from_config(config)
    strategy.configure_aggregation(config.server.aggregation, config.server.trim_fraction)
    check_method(strategy, config.privacy.mode)
    return wrap_strategy(strategy, config)


__all__ = [
    "METHODS",
    "ClientHook",
    "ClientUpdate",
    "Instruction",
    "Strategy",
    "Weights",
    "create_strategy",
    "robust_average",
    "weighted_average",
]
