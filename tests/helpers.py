"""Small builders shared by several test modules."""

import math

from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.federation.build import build_clients
from fedbcs_lightning.methods import create_strategy


def federation(cfg):
    """The strategy and clients ``cfg`` describes, without running anything."""
    strategy = create_strategy(cfg)
    data = load_dataset(cfg)
    splits = make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.run.seed)
    return strategy, build_clients(cfg, data, splits, strategy)


def tiny_fedbcs(rounds: int = 2, **run):
    """A 2-site FedBCS run (FSR and CDPA) on 32x32 synthetic images; ``run`` sets ``run.*``
    keys."""
    return resolve(
        options={
            "data": {
                "image_size": 32,
                "val_fraction": 0.3,
                "synthetic": {"sites": 2, "images_per_site": 6},
            },
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4, "method": "fedbcs"},
            "fedbcs": {"cdpa": True},
            "run": run,
        }
    )


def last(run):
    return run.run_dir / "checkpoints" / "last.pt"


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


class StopBefore(FederatedCallback):
    """Stops a fit as Ctrl-C would, at the start of round ``server_round``."""

    def __init__(self, server_round):
        self.server_round = server_round

    def on_round_start(self, trainer, server_round):
        if server_round == self.server_round:
            raise KeyboardInterrupt
