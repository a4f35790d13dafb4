"""Small builders shared by several test modules."""

from fedbcs_lightning.api import build_clients
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.strategies import create_strategy


def federation(cfg):
    """The strategy and clients ``cfg`` describes, without running anything."""
    strategy = create_strategy(cfg)
    data = load_dataset(cfg)
    splits = make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.run.seed)
    return strategy, build_clients(cfg, data, splits, strategy)


def tiny_fedbcs(rounds: int = 2, **run):
    """A 2-site FedBCS run on 32x32 synthetic images; ``run`` sets ``run.*`` keys."""
    return resolve(
        options={
            "data": {
                "image_size": 32,
                "val_fraction": 0.3,
                "synthetic": {"sites": 2, "images_per_site": 6},
            },
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4, "method": "fedbcs"},
            "run": run,
        }
    )
