"""The strategy a config names: looked up, checked to be a strategy, built, wrapped."""

from __future__ import annotations

from typing import Any

from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.config import ConfigError
from fedbcs_lightning.methods.base import Strategy


def strategy_class(name: str) -> type[Strategy]:
    """The :class:`Strategy` subclass registered as method ``name``; anything else is a
    :class:`ConfigError` that names it and says what a method must be."""
    target = METHODS.get(name)
    if not (isinstance(target, type) and issubclass(target, Strategy)):
        shown = getattr(target, "__qualname__", repr(target))
        module = getattr(target, "__module__", None)
        where = f"{module}.{shown}" if module else shown
        raise ConfigError(
            f"train.method: method {name!r} is registered as {where}, which is not a "
            "subclass of fedbcs_lightning.methods.Strategy; register the strategy class "
            "(METHODS.register(name, MyStrategy))"
        )
    return target


def create_strategy(config: Any) -> Strategy:
    """Build the strategy named by ``config.train.method``, aggregating weights by the rule
    of ``config.server.aggregation``, under the differential privacy of ``config.privacy``
    (a method that cannot support it is refused with the reason)."""
    from fedbcs_lightning.privacy import check_method, wrap_strategy

    cls = strategy_class(config.train.method)
    strategy = cls.from_config(config)
    if not isinstance(strategy, Strategy):
        raise ConfigError(
            f"train.method: {cls.__qualname__}.from_config returned "
            f"{type(strategy).__qualname__}, not a Strategy"
        )
    strategy.configure_aggregation(config.server.aggregation, config.server.trim_fraction)
    check_method(strategy, config.privacy.mode)
    return wrap_strategy(strategy, config)
