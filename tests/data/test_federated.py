import numpy as np
import pytest
import torch

from fedbcs_lightning.data import (
    FederatedData,
    SegmentationDataset,
    Site,
    build_augmentation,
    load_dataset,
    make_loader,
    make_splits,
)


def _site(name="a", n=20, size=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, :8, :8] = 1
    return Site(name, images, masks)


def test_splits_are_disjoint_complete_and_seeded():
    data = FederatedData("toy", [_site("a"), _site("b", n=13)], ["bg", "fg"])
    s1 = make_splits(data, 0.2, 0.2, seed=3)
    assert s1 == make_splits(data, 0.2, 0.2, seed=3)
    assert s1 != make_splits(data, 0.2, 0.2, seed=4)
    for site in data.sites:
        parts = s1[site.name]
        joined = parts["train"] + parts["val"] + parts["test"]
        assert sorted(joined) == list(range(len(site)))


def test_too_small_site_is_a_clear_error():
    data = FederatedData("toy", [_site("tiny", n=2)], ["bg", "fg"])
    with pytest.raises(ValueError, match="site 'tiny' has 2 images"):
        make_splits(data, 0.2, 0.2, seed=0)


def test_site_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="site 'x'"):
        Site("x", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9), np.uint8))


def test_default_regions_are_foreground_classes():
    data = FederatedData("toy", [_site()], ["bg", "a", "b"])
    assert data.regions == {"a": [1], "b": [2]}


def test_augmentation_moves_mask_with_image_and_keeps_labels():
    site = _site(n=4, size=32)
    site.images[:] = 0
    site.images[:, :16, :16] = 255  # image bright exactly where mask = 1 (top-left)
    site.masks[:] = 0
    site.masks[:, :16, :16] = 1
    ds = SegmentationDataset(site, [0, 1, 2, 3], build_augmentation(seed=0))
    flipped = 0
    for _ in range(10):
        for i in range(4):
            image, mask = ds[i]
            assert set(mask.unique().tolist()) <= {0, 1}
            bright = image[0] > 0.5
            agree = (bright == (mask == 1)).float().mean()
            assert agree > 0.9  # geometric transforms applied to both
            flipped += int(mask[:, -4:].sum() > 0)
    assert flipped > 0  # the augmentation does change geometry


def test_train_loader_shuffles_reproducibly():
    site = _site(n=12)
    ds = SegmentationDataset(site, list(range(12)))
    site.images[:, 0, 0, 0] = np.arange(12)
    order = lambda seed: torch.cat([x[:, 0, 0, 0] for x, _ in make_loader(ds, 4, True, seed)])  # noqa: E731
    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), torch.arange(12) / 255.0)
    val = torch.cat([x[:, 0, 0, 0] for x, _ in make_loader(ds, 4, False, 0)])
    assert torch.allclose(val, torch.arange(12) / 255.0)


def test_load_dataset_limits_clients(tiny_config):
    from fedbcs_lightning.config import merge

    cfg = merge(tiny_config, {"train": {"clients": 1}})
    assert [s.name for s in load_dataset(cfg).sites] == ["site1"]
    cfg = merge(tiny_config, {"train": {"clients": 5}})
    with pytest.raises(ValueError, match="5 clients requested but .* has 2 sites"):
        load_dataset(cfg)
