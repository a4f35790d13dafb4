"""Figures of a run: validation Dice curves, prediction overlays, server-side metrics.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, no display
needed); matplotlib and torch are imported only by the functions that need them.

Examples
--------
>>> from fedbcs_lightning.reporting.plots import write_dice_curves
>>> write_dice_curves("runs/demo")  # doctest: +SKIP
PosixPath('runs/demo/plots/dice_curves.png')
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbcs_lightning.io import atomic_write
from fedbcs_lightning.reporting.visualize import PALETTE, overlay, to_rgb

PLOTS_DIR = "plots"
DICE_CURVES = "dice_curves.png"
OVERLAYS = "overlays.png"


@dataclass
class Sample:
    """One validation image of a site with its ground truth and the model's prediction."""

    site: str
    index: int  # position in the site's validation set
    image: np.ndarray  # (C, H, W) float
    truth: np.ndarray  # (H, W) class indices
    prediction: np.ndarray  # (H, W) class indices
    regions: dict[str, list[int]] | None = None  # nested regions are drawn as contours


def predict_samples(client: Any, count: int) -> list[Sample]:
    """Predict the first ``count`` validation images of a :class:`FederatedClient` with the
    weights its model holds now (sliding windows for whole-image data sets)."""
    import torch

    from fedbcs_lightning.evaluation.metrics import predict_logits

    loader = client.loaders.get("val")
    if loader is None or count <= 0:
        return []
    dataset = loader.dataset
    model = client.module.backbone
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    samples = []
    try:
        with torch.no_grad():
            for i in range(min(count, len(dataset))):
                image, mask = dataset[i]
                logits = predict_logits(
                    model, image[None].to(device), client.window, client.whole_image_pixels
                )
                prediction = logits.argmax(1)[0].cpu().numpy()
                samples.append(
                    Sample(client.name, i, image.numpy(), mask.numpy(), prediction, client.regions)
                )
    finally:
        model.train(was_training)
    return samples


def overlay_strip(samples: list[Sample]) -> np.ndarray:
    """``uint8 (H, W, 3)`` picture: one row per sample of image | ground truth | prediction
    (rows padded to the widest image)."""
    rows = [
        np.concatenate(
            [
                to_rgb(s.image),
                overlay(s.image, s.truth, regions=s.regions),
                overlay(s.image, s.prediction, regions=s.regions),
            ],
            axis=1,
        )
        for s in samples
    ]
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return np.concatenate(padded, axis=0)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; a row repeated for the same round, split and site (a
    resumed run) keeps its latest value."""
    rows: dict[tuple, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[(row.get("round"), row.get("split"), row.get("site"))] = row
    return sorted(rows.values(), key=lambda r: r.get("round", 0))


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_figure(figure, path: str | Path) -> Path:
    """Write the figure as a PNG file, atomically."""
    data = figure_png(figure)
    return atomic_write(path, lambda handle: handle.write(data))


def dice_curves_figure(rows: Iterable[Mapping[str, Any]]):
    """Validation Dice over rounds, one line per site (the mean over sites dashed), one
    panel for the mean over regions and one per region; the round with the best mean
    (the model selected on validation) is marked."""
    from matplotlib.ticker import MaxNLocator

    val = [r for r in rows if r.get("split") == "val"]
    if not val:
        raise ValueError("no validation rows in the metrics: nothing to plot")
    metrics = ["dice"] + list(dict.fromkeys(k for r in val for k in r if k.startswith("dice/")))
    sites = list(dict.fromkeys(r["site"] for r in val))
    sites = [s for s in sites if s != "mean"] + (["mean"] if "mean" in sites else [])
    mean_rows = sorted((r for r in val if r["site"] == "mean"), key=lambda r: r["round"])
    best = max(mean_rows, key=lambda r: r.get("dice", -math.inf))["round"] if mean_rows else None
    figure = _new_figure(4.0 * len(metrics), 3.4)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for site in sites:
            points = sorted(
                (r["round"], r[metric]) for r in val if r["site"] == site and metric in r
            )
            if not points:
                continue
            x, y = zip(*points, strict=True)
            style = {"color": "black", "linestyle": "--", "linewidth": 2} if site == "mean" else {}
            ax.plot(x, y, marker="." if len(x) < 30 else None, label=site, **style)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1)
        ax.set_title("validation " + metric.replace("dice", "Dice").replace("/", " "))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize="small", loc="outside right center")
    if best is not None:
        figure.suptitle(f"dotted line: round selected on validation ({best})", fontsize="small")
    return figure


def write_dice_curves(run_dir: str | Path) -> Path:
    """Draw ``plots/dice_curves.png`` of a run directory from its ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} does not exist: no metrics to plot")
    return save_figure(dice_curves_figure(read_metrics(metrics)), run_dir / PLOTS_DIR / DICE_CURVES)


def overlay_grid_figure(
    samples: Mapping[str, list[Sample]], class_names: list[str] | None = None, title: str = ""
):
    """Rows: sites; columns: image, ground truth and prediction of each sample."""
    sites = [site for site, items in samples.items() if items]
    if not sites:
        raise ValueError("no samples to draw")
    per_row = max(len(samples[site]) for site in sites)
    figure = _new_figure(1.5 * 3 * per_row, 1.6 * len(sites) + 0.8)
    axes = figure.subplots(len(sites), 3 * per_row, squeeze=False)
    for row, site in enumerate(sites):
        for col in range(per_row):
            cells = axes[row, 3 * col : 3 * col + 3]
            for ax in cells:
                ax.set_xticks([])
                ax.set_yticks([])
            if col >= len(samples[site]):
                for ax in cells:
                    ax.axis("off")
                continue
            sample = samples[site][col]
            pictures = (
                to_rgb(sample.image),
                overlay(sample.image, sample.truth, regions=sample.regions),
                overlay(sample.image, sample.prediction, regions=sample.regions),
            )
            for ax, picture, name in zip(
                cells, pictures, ("image", "truth", "prediction"), strict=True
            ):
                ax.imshow(picture, interpolation="nearest")
                ax.set_title(f"#{sample.index} {name}" if name == "image" else name, fontsize=8)
        axes[row, 0].set_ylabel(site)
    if class_names and len(class_names) > 1:
        from matplotlib.patches import Patch

        handles = [
            Patch(color=PALETTE[i % len(PALETTE)] / 255.0, label=name)
            for i, name in enumerate(class_names)
            if i > 0
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    if title:
        figure.suptitle(title)
    return figure


def write_overlay_grid(
    samples: Mapping[str, list[Sample]],
    path: str | Path,
    class_names: list[str] | None = None,
    title: str = "",
) -> Path:
    """Draw :func:`overlay_grid_figure` to a PNG file."""
    return save_figure(overlay_grid_figure(samples, class_names, title), path)


def server_label(key: str, class_names: list[str] | None = None) -> str:
    """``clusters/decoder/2`` -> ``clusters/decoder/cup`` when the classes have names.

    >>> server_label("clusters/decoder/2", ["background", "rim", "cup"])
    'clusters/decoder/cup'
    """
    parts = key.split("/")
    if class_names and parts[0] == "clusters" and parts[-1].isdigit():
        k = int(parts[-1])
        if k < len(class_names):
            parts[-1] = class_names[k]
    return "/".join(parts)


def server_metrics_figure(rows: Iterable[Mapping[str, Any]], class_names: list[str] | None = None):
    """Server-side metrics over rounds (FedBCS: prototype clusters per level and class,
    FSR mixing weights), one panel per key prefix; ``None`` when there are none."""
    from matplotlib.ticker import MaxNLocator

    server = sorted((r for r in rows if r.get("split") == "server"), key=lambda r: r["round"])
    keys = list(dict.fromkeys(k for r in server for k in r if k not in ("round", "split", "site")))
    if not keys:
        return None
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split("/")[0], []).append(key)
    figure = _new_figure(4.5 * len(groups), 3.4)
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    for ax, (group, members) in zip(axes, groups.items(), strict=True):
        for key in members:
            points = [(r["round"], r[key]) for r in server if _is_number(r.get(key))]
            if points:
                x, y = zip(*points, strict=True)
                label = server_label(key, class_names)[len(group) + 1 :]
                ax.plot(x, y, marker="." if len(x) < 30 else None, label=label)
        ax.set_title(group)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return figure


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
