"""Use a trained checkpoint: rebuild its model, score it on a data set, segment image files.

A checkpoint (``checkpoints/{last,selected}.pt`` of a run) holds the global weights, the
resolved config and a description of the data, which is all it takes to rebuild the
network exactly as it was trained: the backbone from the registry, then the method's own
layers (``create_strategy(config).configure_backbone``, e.g. FedBCS's FSR layers). The
weights load strictly. Checkpoints of methods ``local`` (whole models), ``fedbn`` and
``harmofl`` (local layers) hold per-site tensors under ``<site>/<key>``; loading one of
them needs the site's name.

Images are prepared as in training: read as ``uint8`` ``(H, W, C)``, resized to the
training size with the same interpolation (or, for data sets of whole images, kept at
their size and segmented with sliding windows of the training size), scaled to [0, 1].

Example
-------
>>> from fedbcs_lightning.inference import load_model, predict_file
>>> model, info = load_model("runs/demo/checkpoints/selected.pt")  # doctest: +SKIP
>>> image, mask = predict_file(model, info, "scan.png")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbcs_lightning.config import Config, ConfigError, from_dict, merge
from fedbcs_lightning.data import (
    SPLITS,
    DataError,
    FederatedData,
    SegmentationDataset,
    Site,
    load_dataset,
    make_loader,
    make_splits,
)
from fedbcs_lightning.data.readers import IMAGE_SUFFIXES, read_image, resize_pair
from fedbcs_lightning.io import atomic_write, atomic_write_json, atomic_write_text, load_checkpoint
from fedbcs_lightning.metrics import SURFACE_METRICS, evaluate, mean_over_sites, predict_logits


@dataclass
class ModelInfo:
    """What a checkpoint says about its model: config, data description, round, site."""

    path: Path
    config: Config
    data: dict[str, Any]
    round: int
    site: str | None = None

    @property
    def sites(self) -> list[str]:
        return list(self.data["sites"])

    @property
    def in_channels(self) -> int:
        return int(self.data["in_channels"])

    @property
    def num_classes(self) -> int:
        return len(self.data["class_names"])

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def whole_images(self) -> bool:
        """Images keep their size and are segmented with sliding windows of ``image_size``."""
        return bool(self.data["whole_images"])

    @property
    def window(self) -> int | None:
        return self.image_size if self.whole_images else None


def _where(path: Path) -> str:
    return f"checkpoint {str(path)!r}"


def read_info(path: str | Path, checkpoint: Mapping[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` of a loaded checkpoint; a clear error if parts are missing."""
    path = Path(path)
    missing = [key for key in ("config", "data") if key not in checkpoint]
    if missing:
        raise ValueError(f"{_where(path)} lacks {', '.join(missing)}; not a fedbcs checkpoint")
    try:
        config = from_dict(checkpoint["config"])
    except ConfigError as err:
        raise ValueError(f"{_where(path)}: its config is not valid here ({err})") from None
    data = dict(checkpoint["data"])
    needed = ("class_names", "in_channels", "sites", "regions", "whole_images")
    missing = [k for k in needed if k not in data]
    if missing:
        raise ValueError(f"{_where(path)}: its data description lacks {', '.join(missing)}")
    return ModelInfo(path, config, data, int(checkpoint.get("round", 0)))


def per_site_models(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Sites of a checkpoint whose models differ per site (keys ``<site>/<key>``: whole
    models for ``local``, local layers for ``fedbn`` and ``harmofl``), else ``[]``."""
    return sorted({key.split("/", 1)[0] for key in weights if "/" in key})


def site_weights(
    weights: Mapping[str, torch.Tensor], info: ModelInfo, site: str | None
) -> dict[str, torch.Tensor]:
    """The weights of the model for ``site``: the shared weights with the site's own
    ``<site>/<key>`` tensors, or, for a checkpoint without per-site tensors, the global
    weights (``site`` is then only checked)."""
    owners = per_site_models(weights)
    known = owners or info.sites
    if site is not None and site not in known:
        raise ValueError(f"{_where(info.path)} has no site {site!r}; its sites: {', '.join(known)}")
    if not owners:
        return dict(weights)
    if site is None:
        raise ValueError(
            f"{_where(info.path)} holds one model per site (method "
            f"{info.config.train.method!r}); name one with --site: {', '.join(owners)}"
        )
    prefix = f"{site}/"
    shared = {k: v for k, v in weights.items() if "/" not in k}
    return {**shared, **{k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}}


def build_model(info: ModelInfo) -> torch.nn.Module:
    """The network the checkpoint's config describes, freshly initialised."""
    from fedbcs_lightning.catalog import BACKBONES
    from fedbcs_lightning.strategies import create_strategy

    config = info.config
    backbone = BACKBONES.get(config.model.backbone).from_config(
        config.model, in_channels=info.in_channels, num_classes=info.num_classes
    )
    return create_strategy(config).configure_backbone(backbone)


def model_from_checkpoint(
    checkpoint: Mapping[str, Any], info: ModelInfo, site: str | None = None
) -> torch.nn.Module:
    """Build the network and load the checkpoint's weights (of ``site``) strictly."""
    weights = site_weights(checkpoint["state_dict"], info, site)
    model = build_model(info)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(
            f"{_where(info.path)}: its weights do not fit the {info.config.model.backbone!r} / "
            f"{info.config.train.method!r} model its config describes ({detail[:400]})"
        ) from None
    return model.eval()


def load_model(
    checkpoint_path: str | Path, site: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelInfo]:
    """The trained network of a checkpoint, in eval mode on ``map_location``, and its info.

    ``site`` picks the model of a site in a per-site (``local``) checkpoint; it is
    required there. A missing, damaged or foreign file raises an error naming it.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    info = read_info(checkpoint_path, checkpoint)
    model = model_from_checkpoint(checkpoint, info, site)
    info.site = site
    return model.to(map_location), info


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict_masks(
    model: torch.nn.Module, images: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Label maps ``(B, H, W)`` (long, on the CPU) for images ``(B, C, H, W)`` in [0, 1];
    with ``window``, segmented with overlapping ``window`` x ``window`` tiles."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    try:
        return predict_logits(model, images.to(device), window).argmax(1).cpu()
    finally:
        model.train(was_training)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named, and the image files directly inside the folders named.

    Two inputs with the same file stem are an error (their outputs would collide).
    """
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(
                p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(
                    f"{entry}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            files += found
        elif entry.is_file():
            files.append(entry)
        else:
            raise DataError(f"{entry}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen and seen[path.stem] != path:
            raise DataError(
                f"{seen[path.stem]} and {path} have the same name {path.stem!r}; their "
                "outputs would overwrite each other"
            )
        seen[path.stem] = path
    return list(dict.fromkeys(files))


def match_channels(image: np.ndarray, channels: int, path: str | Path) -> np.ndarray:
    """Give an ``(H, W, C)`` image the model's channel count: one channel is repeated, a
    one-channel model takes the first channel (as grey slices are read for training)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1:
        return image[..., :1]
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    raise DataError(f"{path}: image has {have} channels but the model expects {channels}")


def to_model_input(image: np.ndarray, info: ModelInfo) -> torch.Tensor:
    """``(1, C, H, W)`` float tensor of an ``(H, W, C)`` uint8 image, prepared as in
    training: resized to the training size (unless the data set keeps whole images),
    then converted by :class:`~fedbcs_lightning.data.SegmentationDataset`."""
    placeholder = np.zeros(image.shape[:2], np.uint8)
    if not info.whole_images:
        image, placeholder = resize_pair(image, placeholder, info.image_size)
    tensor, _ = SegmentationDataset(Site("input", [image], [placeholder]), [0])[0]
    return tensor[None]


def predict_file(
    model: torch.nn.Module, info: ModelInfo, path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``path`` and segment it: the image ``(H, W, C)`` uint8 as the model saw it
    before resizing, and its label map ``(H, W)`` uint8 of class indices at that size."""
    import cv2

    image = match_channels(read_image(path), info.in_channels, path)
    mask = predict_masks(model, to_model_input(image, info), info.window)[0]
    mask = mask.numpy().astype(np.uint8)
    h, w = image.shape[:2]
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"))


def save_prediction(
    out_dir: str | Path, stem: str, image: np.ndarray, mask: np.ndarray
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` (class indices, uint8) and ``<stem>_overlay.png``."""
    from fedbcs_lightning.visualize import overlay

    out_dir = Path(out_dir)
    mask_path = _write_png(out_dir / f"{stem}_mask.png", mask)
    overlay_path = _write_png(out_dir / f"{stem}_overlay.png", overlay(image, mask))
    return mask_path, overlay_path


# ---------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Per-site scores of a checkpoint on one split, and where the split came from."""

    checkpoint: Path
    round: int
    split: str
    splits_source: str
    regions: list[str]
    sites: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return mean_over_sites(self.sites)

    @property
    def metrics(self) -> list[str]:
        """Column order: per region then overall, for Dice, HD95 and ASSD."""
        keys = []
        for metric in ("dice", *SURFACE_METRICS):
            keys += [f"{metric}/{r}" for r in self.regions] + [metric]
        return keys

    def rows(self) -> dict[str, dict[str, float]]:
        """Each site's scores and their ``mean``."""
        return {**self.sites, "mean": self.mean}

    def table(self) -> str:
        """A plain-text table, one row per site and a mean row."""
        headers = ["site"] + [k.replace("/", " ") for k in self.metrics]
        cells = [
            [name] + [_fmt(scores.get(k, math.nan)) for k in self.metrics]
            for name, scores in self.rows().items()
        ]
        widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes ``None``)."""
        clean = {
            name: {k: (v if math.isfinite(v) else None) for k, v in scores.items()}
            for name, scores in self.rows().items()
        }
        return {
            "checkpoint": str(self.checkpoint),
            "round": self.round,
            "split": self.split,
            "splits": self.splits_source,
            "sites": {k: v for k, v in clean.items() if k != "mean"},
            "mean": clean["mean"],
        }

    def write(self, path: str | Path) -> Path:
        """Write the scores to ``.csv`` (one row per site) or ``.json``, atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            return atomic_write_json(path, self.to_json())
        if suffix != ".csv":
            raise ValueError(f"{path}: write results to a .csv or .json file")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["site", *self.metrics])
        for name, scores in self.rows().items():
            writer.writerow([name, *(repr(scores.get(k, math.nan)) for k in self.metrics)])
        return atomic_write_text(path, buffer.getvalue())


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4f}"


def evaluation_config(
    config: Config,
    dataset: str | None = None,
    data_root: str | None = None,
    cache: str | None = None,
) -> Config:
    """The checkpoint's config with another data set, folder or cache. Another data set
    uses all its sites (``train.clients`` applies to the training data only)."""
    updates: dict[str, Any] = {}
    if dataset is not None and dataset != config.data.name:
        updates = {"data": {"name": dataset}, "train": {"clients": None}}
    for key, value in (("root", data_root), ("cache", cache)):
        if value is not None:
            updates.setdefault("data", {})[key] = str(value)
    if not updates:
        return config
    from fedbcs_lightning.config import validate

    changed = merge(config, updates)
    validate(changed)
    return changed


def recorded_splits(
    checkpoint_path: Path, data: FederatedData
) -> tuple[dict[str, dict[str, list[int]]], str] | None:
    """The run's ``splits.json`` (beside the checkpoint or one folder up) if it fits
    ``data``: every site present, every index in range."""
    folder = checkpoint_path.parent
    for candidate in (folder / "splits.json", folder.parent / "splits.json"):
        if not candidate.is_file():
            continue
        try:
            splits = json.loads(candidate.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{candidate}: cannot be read as JSON ({err})") from None
        fits = isinstance(splits, dict) and all(
            isinstance(splits.get(site.name), dict)
            and all(
                isinstance(i, int) and 0 <= i < len(site)
                for split in SPLITS
                for i in splits[site.name].get(split, [])
            )
            for site in data.sites
        )
        return (splits, str(candidate)) if fits else None
    return None


def check_compatible(info: ModelInfo, data: FederatedData) -> None:
    """The data set must have the model's classes and channels."""
    if data.num_classes != info.num_classes or data.in_channels != info.in_channels:
        raise DataError(
            f"data set {data.name!r} has {data.num_classes} classes and {data.in_channels} "
            f"channels, but {_where(info.path)} was trained for {info.num_classes} classes "
            f"and {info.in_channels} channels"
        )


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    split: str = "test",
    site: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    cache: str | None = None,
) -> Evaluation:
    """Score a checkpoint with :func:`fedbcs_lightning.metrics.evaluate` (Dice, HD95, ASSD)
    on one split of each site (or of ``site``).

    The data set is the checkpoint's unless ``dataset``, ``data_root`` or ``cache`` say
    otherwise. The split is the run's ``splits.json`` when it fits the data, else the
    seeded split of the checkpoint's config (the same function that made it). Batches,
    sliding windows and regions are those of training-time evaluation, so the checkpoint
    of a run's last round reproduces the run's ``test_last`` scores. (A FedBN checkpoint
    holds the first site's BatchNorm tensors; the other sites' stayed with them, so their
    scores here can differ from the run's.) A per-site (``local``) checkpoint scores each
    site with its own model.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    info = read_info(checkpoint_path, checkpoint)
    config = evaluation_config(info.config, dataset, data_root, cache)
    data = load_dataset(config)
    check_compatible(info, data)
    names = [s.name for s in data.sites]
    if site is not None and site not in names:
        raise DataError(
            f"data set {data.name!r} has no site {site!r}; its sites: {', '.join(names)}"
        )
    recorded = (
        recorded_splits(checkpoint_path, data)
        if config.data.name == info.config.data.name
        else None
    )
    if recorded:
        splits, source = recorded
    else:
        splits = make_splits(
            data, config.data.val_fraction, config.data.test_fraction, config.run.seed
        )
        source = f"seeded split (seed {config.run.seed})"
    per_site_weights = bool(per_site_models(checkpoint["state_dict"]))
    shared = None if per_site_weights else model_from_checkpoint(checkpoint, info)
    window = config.data.image_size if data.whole_images else None
    batch_size = 1 if data.whole_images else config.train.batch_size
    result = Evaluation(checkpoint_path, info.round, split, source, list(data.regions))
    for s in data.sites:
        if site is not None and s.name != site:
            continue
        model = shared if shared is not None else model_from_checkpoint(checkpoint, info, s.name)
        loader = make_loader(
            SegmentationDataset(s, splits[s.name][split]), batch_size, False, config.run.seed
        )
        result.sites[s.name] = evaluate(
            model, loader, data.regions, surface_metrics=True, window=window
        )
    return result
