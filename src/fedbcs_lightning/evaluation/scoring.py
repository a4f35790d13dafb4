"""Score a checkpoint on a data set: per-site Dice, HD95 and ASSD on one split.

Examples
--------
>>> from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint
>>> print(evaluate_checkpoint("runs/demo/checkpoints/last.pt").table())  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedbcs_lightning.config import Config, merge
from fedbcs_lightning.data import (
    SPLITS,
    DataError,
    FederatedData,
    config_splits,
    eval_batch_size,
    eval_dataset,
    load_dataset,
    make_loader,
)
from fedbcs_lightning.evaluation.checkpoints import (
    NEW_SITE,
    ModelInfo,
    checkpoint_label,
    model_from_checkpoint,
    per_site_models,
    read_info,
)
from fedbcs_lightning.evaluation.metrics import SURFACE_METRICS, evaluate, mean_over_sites
from fedbcs_lightning.io import atomic_write_json, atomic_write_text, load_checkpoint


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
        """Column order: per region then overall, for Dice, HD95 and ASSD; then the
        vertical cup-to-disc ratio error where the sites have it (fundus)."""
        keys = []
        for metric in ("dice", *SURFACE_METRICS):
            keys += [f"{metric}/{r}" for r in self.regions] + [metric]
        if any("vcdr_error" in scores for scores in self.sites.values()):
            keys.append("vcdr_error")
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
    return "–" if not math.isfinite(value) else f"{value:.4f}"  # none: e.g. HD95 of no region


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
            f"channels, but {checkpoint_label(info.path)} was trained for "
            f"{info.num_classes} classes and {info.in_channels} channels"
        )


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    split: str = "test",
    site: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    cache: str | None = None,
    largest_component: bool | None = None,
) -> Evaluation:
    """Score a checkpoint with :func:`fedbcs_lightning.evaluation.metrics.evaluate`
    (Dice, HD95, ASSD) on one split of each site (or of ``site``); ``split="all"`` scores
    every image (a site that no training used, say a hospital that joins later).

    The data set is the checkpoint's unless ``dataset``, ``data_root`` or ``cache`` say
    otherwise. The split is the run's ``splits.json`` when it fits the data, else the
    seeded split of the checkpoint's config (the same function that made it). Batches,
    sliding windows and regions are those of training-time evaluation, so the checkpoint
    of a run's last round reproduces the run's ``test_last`` scores. A checkpoint with
    per-site tensors (``local``, ``fedbn``, ``harmofl``) scores each site with its own
    model, and a site that no training used with the mean of the sites' local tensors
    (:data:`~fedbcs_lightning.evaluation.checkpoints.NEW_SITE`; ``local`` has no model
    for it: an error says so). ``largest_component`` overrides the run's
    ``data.largest_component`` (each predicted region reduced to its largest component).
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; choose {', '.join(SPLITS)} or all")
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    info = read_info(checkpoint_path, checkpoint)
    config = evaluation_config(info.config, dataset, data_root, cache)
    if largest_component is not None:
        config = merge(config, {"data": {"largest_component": largest_component}})
    if split == "all":  # every site of the data set, those training left out included
        config = merge(config, {"data": {"leave_out": []}, "train": {"clients": None}})
    data = load_dataset(config)
    check_compatible(info, data)
    names = [s.name for s in data.sites]
    if site is not None and site not in names:
        raise DataError(
            f"data set {config.data.name!r} has no site {site!r}; its sites: {', '.join(names)}"
        )
    recorded = (
        recorded_splits(checkpoint_path, data)
        if config.data.name == info.config.data.name and split != "all"
        else None
    )
    if split == "all":  # e.g. a site that no training used
        splits = {s.name: {"all": list(range(len(s)))} for s in data.sites}
        source = "every image"
    elif recorded:
        splits, source = recorded
    else:
        splits = config_splits(data, config)
        source = (
            f"seeded split (seed {config.run.seed}"
            + (f", fold {config.data.fold} of {config.data.folds}" if config.data.folds else "")
            + ")"
        )
    owners = per_site_models(checkpoint["state_dict"])
    shared = None if owners else model_from_checkpoint(checkpoint, info)
    window = config.data.image_size if data.whole_images else None
    result = Evaluation(checkpoint_path, info.round, split, source, list(data.regions))
    for s in data.sites:
        if site is not None and s.name != site:
            continue
        if shared is not None:
            model = shared
        else:
            own = s.name if s.name in owners else NEW_SITE
            model = model_from_checkpoint(checkpoint, info, own)
        dataset = eval_dataset(config, data, s, splits[s.name][split])
        loader = make_loader(dataset, eval_batch_size(config, data), False, config.run.seed)
        result.sites[s.name] = evaluate(
            model,
            loader,
            data.regions,
            surface_metrics=True,
            window=window,
            whole_image_pixels=config.run.whole_image_pixels,
            cases=dataset.cases,
            largest_component=config.data.largest_component,
        )
    return result
