"""Differential privacy of what leaves a site (``privacy.*``; docs/privacy.md).

``privacy.mode=sample``: DP-SGD at each site (per-image clipping and noise through
Opacus) and noised prototypes, with each site's epsilon from Opacus's accountant.
``privacy.mode=client``: clipped site updates and noise added by the server.
Both act on the one path every upload takes (:meth:`ClientHook.before_upload` and the
strategy's aggregation), so they work the same in-process and on Flower.
"""

from __future__ import annotations


def check_method(strategy, mode: str) -> None:
    """Raise ``ConfigError`` if ``strategy`` cannot run under ``privacy.mode=mode``."""
    from fedbcs_lightning.config import ConfigError

    if mode == "off":
        return
    reason = strategy.privacy_refusal(mode)
    if reason:
        raise ConfigError(f"privacy.mode={mode}: method {strategy.name!r} {reason}")


def wrap_strategy(strategy, config):
    """The strategy ``config.privacy`` asks for (client-level DP wraps it)."""
    if config.privacy.mode != "client":
        return strategy
    from fedbcs_lightning.privacy.dpsgd import private_generator
    from fedbcs_lightning.privacy.server import ClientLevelPrivacy

    noise = private_generator(config.privacy.noise_seed, "server", 3)
    return ClientLevelPrivacy(strategy, config.privacy, config.train.rounds, noise)
