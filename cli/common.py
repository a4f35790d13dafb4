"""Pieces every ``fedbcs`` command shares: the ``--import`` option, errors, options."""

from __future__ import annotations

from typing import Any

import typer

IMPORTS = typer.Option(
    "--import",
    metavar="MODULE",
    help="Import this module first (repeatable), e.g. one that registers your backbone, "
    "method or data set. Installed packages can register through entry points instead.",
)


def import_or_fail(modules: list[str] | None) -> None:
    from fedbcs_lightning.registry import import_modules

    try:
        import_modules(modules or [])
    except ImportError as err:
        fail(f"--import: {err}")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def nested_options(**flat: Any) -> dict[str, Any]:
    """{"train.rounds": 3, "data.name": None} -> {"train": {"rounds": 3}} (None = not given)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        nested.setdefault(section, {})[key] = value
    return nested


def resolve_or_fail(config: str | None, overrides: list[str] | None, **flat: Any):
    """The run's config from a preset or YAML file, ``--set`` overrides and the command's
    own options (``"section.key": value``, None = not given); a bad value exits with 2."""
    from fedbcs_lightning.config import ConfigError, resolve

    try:
        return resolve(config, overrides=overrides or [], options=nested_options(**flat))
    except ConfigError as err:
        fail(str(err))
