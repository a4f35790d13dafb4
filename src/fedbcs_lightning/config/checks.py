"""Checks an options dataclass runs on its own values, with the messages of the config.

A component's options (a method's section, a backbone's ``model.options``) validate
themselves in a ``validate()`` method; these helpers raise
:class:`~fedbcs_lightning.config.schema.ConfigError` naming the key relative to the
section, and the config puts the section in front (``fedbcs.tau: must be positive``).

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass
... class Options:
...     tau: float = 0.0
>>> positive(Options(), "tau")
Traceback (most recent call last):
...
fedbcs_lightning.config.schema.ConfigError: tau: must be positive, got 0.0
"""

from __future__ import annotations

from typing import Any

from fedbcs_lightning.config.schema import ConfigError


def positive(options: Any, *names: str) -> None:
    """Each of ``names`` is > 0."""
    for name in names:
        value = getattr(options, name)
        if value <= 0:
            raise ConfigError(f"{name}: must be positive, got {value}")


def non_negative(options: Any, *names: str, note: str = "") -> None:
    """Each of ``names`` is >= 0 (``note`` says what 0 means, e.g. ``"0 = all"``)."""
    for name in names:
        value = getattr(options, name)
        if value < 0:
            said = f" ({note})" if note else ""
            raise ConfigError(f"{name}: must be >= 0{said}, got {value}")


def choice(options: Any, name: str, choices: tuple[str, ...]) -> None:
    """``name`` (or each item of a list) is one of ``choices``."""
    value = getattr(options, name)
    for item in value if isinstance(value, list) else [value]:
        if item not in choices:
            raise ConfigError(f"{name}: {item!r} is not one of {', '.join(choices)}")


def within(options: Any, name: str, low: float, high: float, *, closed: str = "") -> None:
    """``low < value < high``; ``closed`` of ``"low"``, ``"high"`` or ``"both"`` includes
    that end."""
    value = getattr(options, name)
    above = value >= low if closed in ("low", "both") else value > low
    below = value <= high if closed in ("high", "both") else value < high
    if not (above and below):
        left = "[" if closed in ("low", "both") else "("
        right = "]" if closed in ("high", "both") else ")"
        raise ConfigError(f"{name}: must lie in {left}{low}, {high}{right}, got {value}")
