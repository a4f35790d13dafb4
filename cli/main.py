"""``fedbcs``: a thin command line over :mod:`fedbcs_lightning`.

Only cheap modules are imported at start-up; torch and Lightning load inside commands.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fedbcs_cli.checkpoints import evaluate, export, predict, report
from fedbcs_cli.common import IMPORTS, fail, import_or_fail, nested_options, resolve_or_fail
from fedbcs_cli.federation import join, serve
from fedbcs_lightning.catalog import BACKBONES, DATASETS, METHODS
from fedbcs_lightning.config import ConfigError, preset_names, resolve

app = typer.Typer(
    help="Federated medical image segmentation with FedBCS and its baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fedbcs-lightning {version('fedbcs-lightning')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Federated medical image segmentation with FedBCS and its baselines."""


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
    image_size: Annotated[
        int | None,
        typer.Option(help="Image size (a multiple of the backbone's input_divisor: 16 for unet)."),
    ] = None,
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
    logger: Annotated[
        list[str] | None,
        typer.Option(
            "--logger",
            help="Experiment tracker: wandb (offline without WANDB_API_KEY), csv, tensorboard "
            "or none (repeatable; sets run.loggers).",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this directory from its last saved round "
            "(only --rounds may be given with it, to train longer)."
        ),
    ] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Write into a non-empty --output folder, replacing the files an earlier run "
            "wrote there (other files stay).",
        ),
    ] = False,
) -> None:
    """Train a federation and print per-site test Dice."""
    if resume is not None:
        given = {
            "--dataset": dataset, "--method": method, "--local-epochs": local_epochs,
            "--clients": clients, "--batch-size": batch_size, "--lr": lr,
            "--image-size": image_size, "--seed": seed, "--data-root": data_root,
            "--cache": cache, "--config": config, "--output": output, "--set": set_,
            "--logger": logger, "--overwrite": overwrite,
        }  # fmt: skip
        extra = [name for name, value in given.items() if value]
        if extra:
            fail(f"--resume continues the saved configuration; drop {', '.join(extra)}")
        import_or_fail(imports)
        _resume(resume, rounds)
        return
    import_or_fail(imports)
    cfg = resolve_or_fail(
        config,
        set_,
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
            "data.cache": cache,
            "run.output": str(output) if output else None,
            "run.loggers": [n for n in logger if n != "none"] if logger else None,
            "run.imports": imports or None,
        },
    )
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.api import default_run_dir
    from fedbcs_lightning.api import fit as run_fit

    run_dir = Path(cfg.run.output) if cfg.run.output else default_run_dir(cfg)
    typer.echo(f"reading data set {cfg.data.name!r} and building {cfg.train.method} clients ...")
    with _run_errors(run_dir):
        run = run_fit(cfg, run_dir=run_dir, overwrite=overwrite)
    typer.echo("")
    typer.echo(run.summary_table())
    typer.echo(f"\nrun directory: {run.run_dir}")


@contextlib.contextmanager
def _run_errors(run_dir: Path):
    """Turn the errors a fit or resume reports to its user into one message and exit 1;
    Ctrl-C into the way to continue and exit 130."""
    from fedbcs_lightning.api import ResumeError
    from fedbcs_lightning.data import DataError
    from fedbcs_lightning.federation.updates import FederationStopped
    from fedbcs_lightning.io import FULL, DiskFullError
    from fedbcs_lightning.rundir import RunDirectoryError

    try:
        yield
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "state.pt").is_file():
            message = f"interrupted; continue with: fedbcs fit --resume {run_dir}"
        else:
            message = "interrupted before a round was saved; nothing was kept"
        typer.echo(f"\n{message}", err=True)
        raise typer.Exit(130) from None
    except (
        FederationStopped,
        ResumeError,
        ConfigError,
        DataError,
        FileNotFoundError,
        RunDirectoryError,
        DiskFullError,
    ) as err:
        fail(str(err), code=1)
    except OSError as err:
        if err.errno not in FULL:
            raise
        saved = (run_dir / "checkpoints" / "state.pt").is_file()
        then = f"continue with: fedbcs fit --resume {run_dir}" if saved else "run it again"
        fail(
            f"the disk is full: {err.filename or run_dir} cannot be written; nothing was "
            f"half-written, so free some space and {then}",
            code=1,
        )


def _resume(run_dir: Path, rounds: int | None) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.api import resume as run_resume

    with _run_errors(run_dir):
        run = run_resume(run_dir, rounds)
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
        bool,
        typer.Option(
            "--skip-unpaired", help="Skip images without masks (with a warning) instead of failing."
        ),
    ] = False,
    config: Annotated[str | None, typer.Option("--config", help="YAML file or preset.")] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Check a data set once and write it to an HDF5 cache (atomic, idempotent)."""
    import_or_fail(imports)
    try:
        cfg = resolve(
            config,
            options=nested_options(
                **{
                    "data.name": dataset,
                    "data.root": data_root,
                    "data.image_size": image_size,
                    "data.skip_unpaired": skip_unpaired or None,
                }
            ),
        )
    except ConfigError as err:
        fail(str(err))
    import warnings

    from fedbcs_lightning.data import DATASETS, DataError, check_data
    from fedbcs_lightning.data.cache import write_cache
    from fedbcs_lightning.io import FULL, DiskFullError

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = DATASETS.get(cfg.data.name)(cfg)
            check_data(data)  # whether a site is big enough to split is fit's question
        manifest = write_cache(data, out, cfg.data.image_size)
    except (DataError, DiskFullError) as err:
        fail(str(err), code=1)
    except OSError as err:
        if err.errno not in FULL:
            raise
        fail(f"the disk is full: {err.filename or out} cannot be written", code=1)
    finally:
        for warning in caught:
            typer.echo(f"warning: {warning.message}", err=True)
    for name, site in manifest["sites"].items():
        typer.echo(f"{name:<16} {site['images']:>6} images  {len(site['sources']):>6} files")
    typer.echo(f"wrote {out}")


# Commands that use what a fit wrote (a run directory or a checkpoint), in help order.
app.command()(report)
app.command()(evaluate)
app.command()(predict)
app.command()(export)
app.command()(serve)
app.command()(join)


def _listing(registry, imports: list[str] | None) -> None:
    import_or_fail(imports)
    for name in registry.names():
        typer.echo(f"{name:<20} {registry.describe(name)}")
        options = _option_names(registry, name)
        if options:
            typer.echo(f"{'':<20}   options: {options}")


def _option_names(registry, name: str) -> str:
    """The keys of an entry's own options (a method's section, a backbone's
    ``model.options``); a plugin that cannot be loaded says why."""
    import dataclasses

    try:
        options = registry.options(name)
    except Exception as err:  # a broken plugin: listed with the reason, not a crash
        return f"(cannot load: {type(err).__name__}: {err})"
    if options is None:
        return ""
    section = "model.options" if registry is BACKBONES else name
    return ", ".join(f"{section}.{f.name}" for f in dataclasses.fields(options))


@app.command()
def datasets(imports: Annotated[list[str] | None, IMPORTS] = None) -> None:
    """List the data sets."""
    _listing(DATASETS, imports)


@app.command()
def methods(imports: Annotated[list[str] | None, IMPORTS] = None) -> None:
    """List the federated methods and their options."""
    _listing(METHODS, imports)


@app.command()
def backbones(imports: Annotated[list[str] | None, IMPORTS] = None) -> None:
    """List the segmentation backbones and their options."""
    _listing(BACKBONES, imports)


@app.command("config")
def show_config(
    config: Annotated[str | None, typer.Option("--config", help="YAML file or preset.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set name.")] = None,
    method: Annotated[str | None, typer.Option(help="Method (its options are shown).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value")] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Print the resolved configuration as YAML (with the data set's defaults and the
    method's options)."""
    import yaml

    import_or_fail(imports)
    cfg = resolve_or_fail(config, set_, **{"data.name": dataset, "train.method": method})
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())


def main() -> None:
    app(prog_name="fedbcs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
