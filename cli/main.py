"""``fedbcs``: a thin command line over :mod:`fedbcs_lightning`.

Only cheap modules are imported at start-up; torch and Lightning load inside commands.
"""

from __future__ import annotations

import contextlib
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


IMPORTS = typer.Option(
    "--import",
    metavar="MODULE",
    help="Import this module first (repeatable), e.g. one that registers your backbone, "
    "method or data set. Installed packages can register through entry points instead.",
)


def _import(modules: list[str] | None) -> None:
    from fedbcs_lightning.registry import import_modules

    try:
        import_modules(modules or [])
    except ImportError as err:
        _fail(f"--import: {err}")


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
            "--logger": logger, "--overwrite": overwrite, "--import": imports,
        }  # fmt: skip
        extra = [name for name, value in given.items() if value]
        if extra:
            _fail(f"--resume continues the saved configuration; drop {', '.join(extra)}")
        _resume(resume, rounds)
        return
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
                    "data.cache": cache,
                    "run.output": str(output) if output else None,
                    "run.loggers": [n for n in logger if n != "none"] if logger else None,
                    "run.imports": imports or None,
                }
            ),
        )
    except ConfigError as err:
        _fail(str(err))
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
    from fedbcs_lightning.io import DiskFullError
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
        _fail(str(err), code=1)


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
    _import(imports)
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

    from fedbcs_lightning.data import DATASETS, DataError, check_data, make_splits
    from fedbcs_lightning.data.cache import write_cache
    from fedbcs_lightning.io import DiskFullError

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = DATASETS.get(cfg.data.name)(cfg)
            check_data(data)
            # what fit will do with the cache: fail here, not after a long prepare + load
            make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.run.seed)
        manifest = write_cache(data, out, cfg.data.image_size)
    except (DataError, DiskFullError) as err:
        _fail(str(err), code=1)
    finally:
        for warning in caught:
            typer.echo(f"warning: {warning.message}", err=True)
    for name, site in manifest["sites"].items():
        typer.echo(f"{name:<16} {site['images']:>6} images  {len(site['sources']):>6} files")
    typer.echo(f"wrote {out}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `fedbcs fit`.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML page: config, per-site test tables, curves, overlays."""
    from fedbcs_lightning.reporting.report import RunDirectoryError, write_report

    try:
        path = write_report(run_dir, out)
    except RunDirectoryError as err:
        _fail(str(err), code=1)
    typer.echo(f"wrote {path}")


CHECKPOINT = typer.Argument(help="Checkpoint written by `fedbcs fit` (RUN/checkpoints/*.pt).")
SITE_MODEL = typer.Option(
    help="Site whose model to use (required for checkpoints of methods local, fedbn and "
    "harmofl, which hold one model per site)."
)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, CHECKPOINT],
    dataset: Annotated[
        str | None, typer.Option(help="Data set (default: the checkpoint's).")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder of a real data set.")] = None,
    cache: Annotated[str | None, typer.Option(help="HDF5 cache from `fedbcs prepare`.")] = None,
    split: Annotated[
        str,
        typer.Option(help="test, val, train, or all (every image: for a site no training used)."),
    ] = "test",
    site: Annotated[str | None, typer.Option(help="Evaluate this site only.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the scores to FILE.csv or FILE.json.")
    ] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Score a checkpoint per site and region: Dice, HD95 and ASSD (pixels)."""
    _import(imports)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.data import SPLITS

    if split not in (*SPLITS, "all"):
        _fail(f"--split {split!r}: choose {', '.join(SPLITS)} or all")
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        _fail(f"--out {out}: write to a .csv or .json file")
    from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(checkpoint, split, site, dataset, data_root, cache)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err), code=1)
    typer.echo(f"{checkpoint} (round {result.round}), {split} split: {result.splits_source}")
    typer.echo(result.table())
    if out is not None:
        typer.echo(f"wrote {result.write(out)}")


@app.command()
def predict(
    checkpoint: Annotated[Path, CHECKPOINT],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    out: Annotated[Path, typer.Option(help="Folder for <stem>_mask.png and <stem>_overlay.png.")],
    site: Annotated[str | None, SITE_MODEL] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Segment images: write each one's label map (class indices, uint8) and an overlay."""
    _import(imports)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.evaluation.checkpoints import load_model
    from fedbcs_lightning.evaluation.predict import collect_images, predict_file, save_prediction
    from fedbcs_lightning.reporting.visualize import foreground_shares

    try:
        files = collect_images(inputs)
        model, info = load_model(checkpoint, site)
        names = list(info.data["class_names"])
        for path in files:
            image, mask = predict_file(model, info, path)
            written = save_prediction(out, path.stem, image, mask, names)
            shares = foreground_shares(mask, names)
            found = ", ".join(f"{name} {share:.1%}" for name, share in shares.items() if share)
            typer.echo(
                f"{path} -> {', '.join(p.name for p in written)}  "
                f"({found or 'no foreground predicted'})"
            )
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err), code=1)
    typer.echo(f"wrote {2 * len(files)} files to {out}")


@app.command()
def export(
    checkpoint: Annotated[Path, CHECKPOINT],
    out: Annotated[Path, typer.Option(help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    site: Annotated[str | None, SITE_MODEL] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Export a checkpoint's network to ONNX or TorchScript, checked against PyTorch."""
    _import(imports)
    if fmt not in ("onnx", "torchscript"):
        _fail(f"--format {fmt!r}: choose onnx or torchscript")
    from fedbcs_lightning.evaluation.checkpoints import load_model
    from fedbcs_lightning.evaluation.export import ExportError, export_model

    try:
        model, info = load_model(checkpoint, site)
        result = export_model(model, out, fmt, info.image_size, info.in_channels)
    except (ValueError, FileNotFoundError, ExportError) as err:
        _fail(str(err), code=1)
    size = info.image_size
    typer.echo(
        f"wrote {result.path} ({fmt}, {result.exporter} exporter): input 'image' "
        f"(N, {info.in_channels}, {size}, {size}) in [0, 1], output 'logits' "
        f"(N, {info.num_classes}, {size}, {size})"
    )
    typer.echo(f"max abs difference from PyTorch on a random batch: {result.max_abs_diff:.3g}")


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
