import numpy as np
import pytest
import torch

from fedbcs_lightning.data import (
    DataError,
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


@pytest.mark.parametrize("folds", [2, 5])
def test_folds_test_every_image_once_and_keep_validation_out_of_test(folds):
    data = FederatedData("toy", [_site("a", n=23), _site("b", n=11)], ["bg", "fg"])
    for site in data.sites:
        tests = []
        for fold in range(folds):
            parts = make_splits(data, 0.2, 0.2, seed=1, folds=folds, fold=fold)[site.name]
            assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(len(site)))
            assert len(parts["val"]) == round(0.2 * len(site))
            tests.append(parts["test"])
        assert sorted(i for t in tests for i in t) == list(range(len(site)))
        sizes = [len(t) for t in tests]
        assert max(sizes) - min(sizes) <= 1
    assert make_splits(data, 0.2, 0.2, 1, folds=folds) != make_splits(
        data, 0.2, 0.2, 2, folds=folds
    )


def test_folds_keep_groups_together_and_balance_images():
    site = _site("slides", n=30)
    site.groups = [f"s{i}" for i in [0] * 8 + [1] * 6 + [2] * 5 + [3] * 4 + [4] * 4 + [5] * 3]
    data = FederatedData("toy", [site], ["bg", "fg"])
    seen = []
    for fold in range(3):
        parts = make_splits(data, 0.2, 0.2, seed=0, folds=3, fold=fold)["slides"]
        of = {name: {site.groups[i] for i in parts[name]} for name in ("train", "val", "test")}
        assert not (of["train"] & of["val"] or of["train"] & of["test"] or of["val"] & of["test"])
        seen.append(len(parts["test"]))
    assert sum(seen) == 30 and max(seen) - min(seen) <= 2  # 10 images per fold, within a group


def test_folds_pool_a_published_test_split():
    site = _site("pub", n=12)
    site.fixed_test = [9, 10, 11]
    data = FederatedData("toy", [site], ["bg", "fg"])
    assert make_splits(data, 0.2, 0.2, seed=0)["pub"]["test"] == [9, 10, 11]
    tests = [make_splits(data, 0.2, 0.2, 0, folds=4, fold=k)["pub"]["test"] for k in range(4)]
    assert sorted(i for t in tests for i in t) == list(range(12))


def test_more_folds_than_images_is_a_clear_error():
    data = FederatedData("toy", [_site("few", n=4)], ["bg", "fg"])
    with pytest.raises(ValueError, match="site 'few' has 4 images: too few for data.folds=5"):
        make_splits(data, 0.2, 0.2, seed=0, folds=5)


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


def test_rot90_flip_augmentation_turns_image_and_mask_together():
    site = _site(n=1, size=16)
    site.images[:] = 0
    site.images[0, :4, :8] = 255  # a bar along the top edge, left half
    site.masks[:] = 0
    site.masks[0, :4, :8] = 1
    ds = SegmentationDataset(site, [0], build_augmentation(seed=0, kind="rot90_flip"))
    corners = set()
    for _ in range(40):
        image, mask = ds[0]
        assert torch.equal(image[0] > 0.5, mask == 1)  # no interpolation, no colour change
        assert int(mask.sum()) == 32
        corners.add((int(mask[0, 0]), int(mask[0, -1]), int(mask[-1, 0]), int(mask[-1, -1])))
    assert len(corners) == 4  # the bar reaches every corner: rotations and flips
    with pytest.raises(ValueError, match="data.augmentation: 'elastic' is not one of"):
        build_augmentation(seed=0, kind="elastic")


def test_intensity_unit_minmax_and_raw():
    site = _site(n=1, size=8)
    site.images[:] = 100
    site.images[0, 0, 0] = 50
    site.images[0, 0, 1] = 150
    unit, _ = SegmentationDataset(site, [0])[0]
    minmax, _ = SegmentationDataset(site, [0], intensity="minmax")[0]
    raw, _ = SegmentationDataset(site, [0], intensity="raw")[0]
    assert torch.allclose(unit, raw / 255.0) and raw.max() == 150 and raw.min() == 50
    assert minmax.min() == 0 and minmax.max() == 1 and minmax[0, 1, 1] == 0.5


def test_loader_workers_augment_each_pass_anew_and_reproducibly():
    site = _site(n=4, size=32)

    def passes(seed, workers):
        transform = build_augmentation(seed=0)
        loader = make_loader(SegmentationDataset(site, [0, 1, 2, 3], transform), 4, True, seed,
                             shuffle=False, workers=workers)  # fmt: skip
        return [torch.cat([x for x, _ in loader]) for _ in range(2)]

    first, second = passes(1, workers=2)
    assert not torch.equal(first, second)  # workers do not replay one augmentation each pass
    again = passes(1, workers=2)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, passes(2, workers=2)[0])


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


def test_a_site_named_mean_is_refused():
    with pytest.raises(DataError, match="may not be named 'mean'"):
        FederatedData("toy", [_site("a"), _site("mean")], ["bg", "fg"])
