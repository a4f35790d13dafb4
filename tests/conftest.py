import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    """The real data (``nuclei/``, ``samples/``): ``$FEDBCS_DATA`` if it holds them, else
    the folder beside the development checkout; skip where neither does."""
    candidates = [Path(os.environ["FEDBCS_DATA"])] if os.environ.get("FEDBCS_DATA") else []
    for folder in [*candidates, SHARED]:
        if (folder / "nuclei").is_dir() or (folder / "samples").is_dir():
            return folder
    looked = " or ".join(str(f) for f in [*candidates, SHARED])
    pytest.skip(f"real data (nuclei/, samples/) not found in {looked}; set FEDBCS_DATA")


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
