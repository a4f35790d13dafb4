"""Tiny trained runs shared by the evaluation tests (one training per method and session)."""

import pytest

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve


def train(tmp_path_factory, method: str):
    """One round of a 2-site federation on tiny synthetic images."""
    config = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 6}},
            "model": {"width": 4},
            "train": {"rounds": 1, "method": method, "batch_size": 2, "lr": 0.01},
            "fedbcs": {"cdpa": True, "prototype_dim": 8},
            "run": {"log_images": 0},
        }
    )
    return fit(config, run_dir=tmp_path_factory.mktemp(method), progress=False)


@pytest.fixture(scope="package")
def fedbcs_run(tmp_path_factory):
    return train(tmp_path_factory, "fedbcs")


@pytest.fixture(scope="package")
def local_run(tmp_path_factory):
    return train(tmp_path_factory, "local")


@pytest.fixture(scope="package")
def fedbn_run(tmp_path_factory):
    return train(tmp_path_factory, "fedbn")
