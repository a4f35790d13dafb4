import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    """The real sample data beside the checkout; skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED} (only present in the development checkout)")
    return SHARED


@pytest.fixture
def tiny_config():
    from fedbcs_lightning.config import resolve

    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 10}},
            "model": {"width": 4},
            "train": {"rounds": 2, "batch_size": 4},
        }
    )
