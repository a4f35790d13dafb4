"""Commands that use what ``fedbcs fit`` wrote: a run directory (``report``) or a
checkpoint (``evaluate``, ``predict``, ``export``). ``fedbcs_cli.main`` registers them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fedbcs_cli.common import IMPORTS, fail, import_or_fail


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `fedbcs fit`.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML page: config, per-site test tables, curves, overlays."""
    from fedbcs_lightning.reporting.report import write_report
    from fedbcs_lightning.rundir import RunDirectoryError

    try:
        path = write_report(run_dir, out)
    except RunDirectoryError as err:
        fail(str(err), code=1)
    typer.echo(f"wrote {path}")


CHECKPOINT = typer.Argument(help="Checkpoint written by `fedbcs fit` (RUN/checkpoints/*.pt).")
SITE_MODEL = typer.Option(
    help="Site whose model to use (required for checkpoints of methods local, fedbn and "
    "harmofl, which hold one model per site; 'mean' for a site that no training used: the "
    "sites' local layers averaged, fedbn and harmofl only)."
)


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
    largest_component: Annotated[
        bool | None,
        typer.Option(
            "--largest-component/--all-components",
            help="Keep only each predicted region's largest connected component (default: "
            "the run's data.largest_component).",
        ),
    ] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Score a checkpoint per site and region: Dice, HD95 and ASSD (pixels), and the
    vertical cup-to-disc ratio error for fundus."""
    import_or_fail(imports)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from fedbcs_lightning.data import SPLITS

    if split not in (*SPLITS, "all"):
        fail(f"--split {split!r}: choose {', '.join(SPLITS)} or all")
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        fail(f"--out {out}: write to a .csv or .json file")
    from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(
            checkpoint, split, site, dataset, data_root, cache, largest_component
        )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err), code=1)
    typer.echo(f"{checkpoint} (round {result.round}), {split} split: {result.splits_source}")
    typer.echo(result.table())
    if out is not None:
        typer.echo(f"wrote {result.write(out)}")


def predict(
    checkpoint: Annotated[Path, CHECKPOINT],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    out: Annotated[Path, typer.Option(help="Folder for <stem>_mask.png and <stem>_overlay.png.")],
    site: Annotated[str | None, SITE_MODEL] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Segment images: write each one's label map (class indices, uint8) and an overlay."""
    import_or_fail(imports)
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
            written = save_prediction(out, path.stem, image, mask, names, info.data["regions"])
            shares = foreground_shares(mask, names)
            found = ", ".join(f"{name} {share:.1%}" for name, share in shares.items() if share)
            typer.echo(
                f"{path} -> {', '.join(p.name for p in written)}  "
                f"({found or 'no foreground predicted'})"
            )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err), code=1)
    typer.echo(f"wrote {2 * len(files)} files to {out}")


def export(
    checkpoint: Annotated[Path, CHECKPOINT],
    out: Annotated[Path, typer.Option(help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    site: Annotated[str | None, SITE_MODEL] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
) -> None:
    """Export a checkpoint's network to ONNX or TorchScript, checked against PyTorch."""
    import_or_fail(imports)
    if fmt not in ("onnx", "torchscript"):
        fail(f"--format {fmt!r}: choose onnx or torchscript")
    from fedbcs_lightning.evaluation.checkpoints import load_model
    from fedbcs_lightning.evaluation.export import ExportError, export_model

    try:
        model, info = load_model(checkpoint, site)
        result = export_model(model, out, fmt, info.image_size, info.in_channels)
    except (ValueError, FileNotFoundError, ExportError) as err:
        fail(str(err), code=1)
    size = info.image_size
    typer.echo(
        f"wrote {result.path} ({fmt}, {result.exporter} exporter): input 'image' "
        f"(N, {info.in_channels}, {size}, {size}) in [0, 1], output 'logits' "
        f"(N, {info.num_classes}, {size}, {size})"
    )
    typer.echo(f"max abs difference from PyTorch on a random batch: {result.max_abs_diff:.3g}")
