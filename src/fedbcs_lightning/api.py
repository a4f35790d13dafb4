"""High-level entry points: build a federation from a config and train it.

Example
-------
>>> from fedbcs_lightning.config import resolve
>>> from fedbcs_lightning.api import fit
>>> cfg = resolve(options={"train": {"rounds": 1, "clients": 2}, "data": {"image_size": 32}})
>>> run = fit(cfg, run_dir="/tmp/fedbcs-doc-run", progress=False)  # doctest: +SKIP
>>> print(run.summary_table())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L

from fedbcs_lightning.callbacks import (
    CheckpointWriter,
    FederatedCallback,
    MetricsWriter,
    RoundProgress,
)
from fedbcs_lightning.client import FederatedClient, SegmentationClientModule
from fedbcs_lightning.config import Config, save
from fedbcs_lightning.data import (
    DataError,
    FederatedData,
    SegmentationDataset,
    build_augmentation,
    load_dataset,
    make_loader,
    make_splits,
)
from fedbcs_lightning.io import atomic_write_json
from fedbcs_lightning.metrics import mean_over_sites
from fedbcs_lightning.models import BACKBONES
from fedbcs_lightning.strategies import Strategy, create_strategy
from fedbcs_lightning.trainer import FederatedTrainer, FitResult


def default_run_dir(config: Config) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.data.name}-{config.train.method}-{stamp}"


def build_backbone(config: Config, data: FederatedData):
    return BACKBONES.get(config.model.backbone).from_config(
        config.model, in_channels=data.in_channels, num_classes=data.num_classes
    )


def build_clients(
    config: Config, data: FederatedData, splits: dict, strategy: Strategy
) -> list[FederatedClient]:
    """One client per site, all starting from the same initial weights."""
    L.seed_everything(config.run.seed, verbose=False)
    template = strategy.configure_backbone(build_backbone(config, data))
    clients = []
    for k, site in enumerate(data.sites):
        backbone = strategy.configure_backbone(build_backbone(config, data))
        backbone.load_state_dict(template.state_dict())
        module = SegmentationClientModule(
            backbone,
            optimizer=config.train.optimizer,
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            momentum=config.train.momentum,
            hooks=strategy.client_hooks(),
        )
        loaders = site_loaders(config, data, site, splits[site.name], config.run.seed * 1000 + k)
        clients.append(
            FederatedClient(
                site.name,
                module,
                loaders,
                len(loaders["train"].dataset.indices),
                data.regions,
                config.train.local_epochs,
                config.run.accelerator,
                window=config.data.image_size if data.whole_images else None,
            )
        )
    return clients


def site_loaders(config: Config, data: FederatedData, site, idx: dict, seed: int) -> dict:
    """Train/val/test loaders of one site.

    Whole-image data sets train on random crops of ``data.image_size`` and evaluate one
    whole image at a time (with sliding windows).
    """
    crop = config.data.image_size if data.whole_images else None
    transform = build_augmentation(seed, augment=config.data.augment, crop=crop)
    foreground_only = config.data.train_foreground_only
    if foreground_only is None:
        foreground_only = data.train_foreground_only
    train = [i for i in idx["train"] if site.masks[i].any()] if foreground_only else idx["train"]
    if not train:
        raise DataError(f"site {site.name!r} has no training image with foreground")
    eval_batch = 1 if data.whole_images else config.train.batch_size
    repeats = config.data.crops_per_image if data.whole_images else 1
    return {
        "train": make_loader(
            SegmentationDataset(site, train, transform, repeats),
            config.train.batch_size,
            train=True,
            seed=seed,
            shuffle=config.train.shuffle,
        ),
        "val": make_loader(SegmentationDataset(site, idx["val"]), eval_batch, False, seed),
        "test": make_loader(SegmentationDataset(site, idx["test"]), eval_batch, False, seed),
    }


@dataclass
class RunResult:
    config: Config
    data: FederatedData
    run_dir: Path
    result: FitResult

    def summary_table(self) -> str:
        return format_summary(self.result, list(self.data.regions))


def fit(
    config: Config,
    run_dir: str | Path | None = None,
    callbacks: list[FederatedCallback] | None = None,
    progress: bool = True,
) -> RunResult:
    """Train a federation as ``config`` says; write the run directory; return the results.

    The run directory holds ``config.yaml`` (resolved), ``splits.json``, ``metrics.jsonl``,
    ``summary.json`` and ``checkpoints/{last,selected}.pt``.
    """
    run_dir = Path(run_dir or config.run.output or default_run_dir(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    save(config, run_dir / "config.yaml")
    data = load_dataset(config)
    splits = make_splits(data, config.data.val_fraction, config.data.test_fraction, config.run.seed)
    atomic_write_json(run_dir / "splits.json", splits)
    strategy = create_strategy(config)
    clients = build_clients(config, data, splits, strategy)
    data_info = {
        "name": data.name,
        "class_names": data.class_names,
        "regions": data.regions,
        "in_channels": data.in_channels,
        "sites": [s.name for s in data.sites],
    }
    all_callbacks = [MetricsWriter(run_dir), CheckpointWriter(run_dir, config.to_dict(), data_info)]
    if progress:
        all_callbacks.append(RoundProgress())
    all_callbacks += list(callbacks or [])
    trainer = FederatedTrainer(clients, strategy, config.train.rounds, all_callbacks)
    result = trainer.fit(clients[0].get_weights())
    return RunResult(config, data, run_dir, result)


def format_summary(result: FitResult, regions: list[str]) -> str:
    """Per-site, per-region test Dice (and HD95) for the selected and the last round."""
    lines = []
    for title, per_site in (
        (f"test, model selected on validation (round {result.best_round})", result.test_selected),
        (f"test, last round ({len(result.history)})", result.test_last),
    ):
        rows = {**per_site, "mean": mean_over_sites(per_site)}
        keys = [f"dice/{r}" for r in regions] + ["dice", "hd95"]
        headers = ["site"] + [k.replace("dice/", "dice ") for k in keys]
        widths = [max(8, *(len(n) for n in rows))] + [max(9, len(h)) for h in headers[1:]]
        lines.append(title)
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for name, metrics in rows.items():
            cells = [name] + [_fmt(metrics.get(k, math.nan)) for k in keys]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        lines.append("")
    return "\n".join(lines).rstrip()


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4f}"
