import numpy as np
import pytest

from fedbcs_lightning.data.synthetic import SiteStyle, render_sites


@pytest.mark.parametrize(
    "variant, channels, classes", [("fundus", 3, {0, 1, 2}), ("prostate", 1, {0, 1})]
)
def test_shapes_labels_and_class_presence(variant, channels, classes):
    data = render_sites(variant, num_sites=3, images_per_site=4, size=32, seed=1)
    assert len(data.sites) == 3 and data.in_channels == channels
    for site in data.sites:
        assert site.images.shape == (4, 32, 32, channels) and site.images.dtype == np.uint8
        assert set(np.unique(site.masks)) == classes


def test_deterministic_given_seed_and_different_across_seeds():
    a = render_sites("fundus", 2, 3, 32, seed=5)
    b = render_sites("fundus", 2, 3, 32, seed=5)
    c = render_sites("fundus", 2, 3, 32, seed=6)
    for sa, sb, sc in zip(a.sites, b.sites, c.sites, strict=True):
        assert np.array_equal(sa.images, sb.images) and np.array_equal(sa.masks, sb.masks)
        assert not np.array_equal(sa.images, sc.images)


def test_style_strength_zero_makes_sites_share_one_style():
    rng = np.random.default_rng(0)
    neutral = SiteStyle.draw(rng, 3, strength=0.0)
    image = rng.uniform(0.2, 0.8, size=(16, 16, 3))
    out = neutral.apply(image, np.random.default_rng(1))
    assert np.allclose(out, image, atol=1e-5)


def test_sites_differ_in_intensity_statistics_with_style():
    data = render_sites("fundus", 4, 8, 32, seed=0, style_strength=1.0)
    means = np.array([s.images.reshape(-1, 3).mean(0) for s in data.sites])
    assert np.ptp(means, axis=0).max() > 10  # grey levels: the style shift is visible
    flat = render_sites("fundus", 4, 8, 32, seed=0, style_strength=0.0)
    flat_means = np.array([s.images.reshape(-1, 3).mean(0) for s in flat.sites])
    assert np.ptp(flat_means, axis=0).max() < np.ptp(means, axis=0).max() / 3


def test_fundus_regions_follow_the_field_convention():
    data = render_sites("fundus", 1, 2, 32, seed=0)
    assert data.regions == {"disc": [1, 2], "cup": [2]}
    assert data.class_names == ["background", "disc rim", "cup"]
