"""``fedbcs``: a thin command line over :mod:`fedbcs_lightning`.

Only cheap modules are imported at start-up; torch and Lightning load inside commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fedbcs_lightning.catalog import BACKBONES, DATASETS, METHODS
from fedbcs_lightning.config import ConfigError, preset_names, resolve

app = typer.Typer(
    help="Federated medical image segmentation with FedBCS and its baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _options(**flat: Any) -> dict[str, Any]:
    """{"train.rounds": 3, "data.name": None} -> {"train": {"rounds": 3}} (None = not given)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        nested.setdefault(section, {})[key] = value
    return nested


@app.command()
def fit(
    dataset: Annotated[
        str | None, typer.Option(help="Data set name (see `fedbcs datasets`).")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Method (see `fedbcs methods`).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Communication rounds.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    clients: Annotated[int | None, typer.Option(help="Use the first N sites as clients.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Image size (multiple of 16).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (data, splits, init, order).")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder of a real data set.")] = None,
    cache: Annotated[str | None, typer.Option(help="HDF5 cache from `fedbcs prepare`.")] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help=f"YAML file or preset ({', '.join(preset_names())})."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<name>-<time>).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any key: --set section.key=value (repeatable)."),
    ] = None,
) -> None:
    """Train a federation and print per-site test Dice."""
    try:
        cfg = resolve(
            config,
            overrides=set_ or [],
            options=_options(
                **{
                    "data.name": dataset,
                    "train.method": method,
                    "train.rounds": rounds,
                    "train.local_epochs": local_epochs,
                    "train.clients": clients,
                    "train.batch_size": batch_size,
                    "train.lr": lr,
                    "data.image_size": image_size,
                    "run.seed": seed,
                    "data.root": data_root,
                    "run.output": str(output) if output else None,
                }
            ),
        )
    except ConfigError as err:
        _fail(str(err))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.api import fit as run_fit
    from fedbcs_lightning.data import DataError

    try:
        run = run_fit(cfg)
    except (ConfigError, DataError, FileNotFoundError) as err:
        _fail(str(err), code=1)
    typer.echo("")
    typer.echo(run.summary_table())
    typer.echo(f"\nrun directory: {run.run_dir}")


@app.command()
def prepare(
    dataset: Annotated[str, typer.Option(help="Data set name (see `fedbcs datasets`).")],
    data_root: Annotated[str, typer.Option(help="Folder holding the data set.")],
    out: Annotated[Path, typer.Option(help="HDF5 file to write.")],
    image_size: Annotated[int | None, typer.Option(help="Resize to this size.")] = None,
    skip_unpaired: Annotated[
        bool, typer.Option(help="Skip images without masks (with a warning) instead of failing.")
    ] = False,
    config: Annotated[str | None, typer.Option("--config", help="YAML file or preset.")] = None,
) -> None:
    """Check a data set once and write it to an HDF5 cache (atomic, idempotent)."""
    try:
        cfg = resolve(
            config,
            options=_options(
                **{
                    "data.name": dataset,
                    "data.root": data_root,
                    "data.image_size": image_size,
                    "data.skip_unpaired": skip_unpaired or None,
                }
            ),
        )
    except ConfigError as err:
        _fail(str(err))
    import warnings

    from fedbcs_lightning.data import DATASETS, DataError
    from fedbcs_lightning.data.cache import write_cache

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = DATASETS.get(cfg.data.name)(cfg)
        for warning in caught:
            typer.echo(f"warning: {warning.message}", err=True)
        manifest = write_cache(data, out, cfg.data.image_size)
    except DataError as err:
        _fail(str(err), code=1)
    for name, site in manifest["sites"].items():
        typer.echo(f"{name:<16} {site['images']:>6} images  {len(site['sources']):>6} files")
    typer.echo(f"wrote {out}")


def _listing(registry) -> None:
    for name in registry.names():
        typer.echo(f"{name:<20} {registry.describe(name)}")


@app.command()
def datasets() -> None:
    """List the data sets."""
    _listing(DATASETS)


@app.command()
def methods() -> None:
    """List the federated methods."""
    _listing(METHODS)


@app.command()
def backbones() -> None:
    """List the segmentation backbones."""
    _listing(BACKBONES)


@app.command("config")
def show_config(
    config: Annotated[str | None, typer.Option("--config", help="YAML file or preset.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value")] = None,
) -> None:
    """Print the resolved configuration as YAML."""
    import yaml

    try:
        cfg = resolve(config, overrides=set_ or [])
    except ConfigError as err:
        _fail(str(err))
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())


def main() -> None:
    app(prog_name="fedbcs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
