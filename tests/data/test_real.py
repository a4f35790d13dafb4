"""Every supported layout, written tiny by the tests, plus the real samples where present."""

import io
import warnings

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import DataError, load_dataset, make_splits
from fedbcs_lightning.data.cache import read_cache, write_cache

RNG = np.random.default_rng(0)


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, format="PNG")


def _cfg(name, root, **data):
    return resolve(options={"data": {"name": name, "root": str(root), "image_size": 32, **data}})


def _dofe(root, domains=2):
    for d in range(1, domains + 1):
        for split, stems in (("train", ["a", "b", "c"]), ("test", ["t"])):
            for stem in stems:
                base = root / f"Domain{d}" / split / "ROIs"
                _png(base / "image" / f"{stem}.png", RNG.integers(0, 255, (40, 40, 3), np.uint8))
                mask = np.full((40, 40), 255, np.uint8)
                mask[10:30, 10:30] = 128
                mask[15:25, 15:25] = 0
                _png(base / "mask" / f"{stem}.png", np.repeat(mask[..., None], 3, -1))
    return root


def test_fundus_dofe_labels_published_test_split_and_resize(tmp_path):
    data = load_dataset(_cfg("fundus", _dofe(tmp_path)))
    assert [s.name for s in data.sites] == ["Drishti-GS", "RIM-ONE-r3"]
    site = data.sites[0]
    assert site.images.shape == (4, 32, 32, 3)
    assert set(np.unique(site.masks)) == {0, 1, 2}
    assert data.regions == {"disc": [1, 2], "cup": [2]}
    splits = make_splits(data, 0.3, 0.2, seed=0)["Drishti-GS"]
    assert splits["test"] == site.fixed_test == [3] and len(splits["val"]) == 1


@pytest.mark.parametrize("held", [(1, 3), (3,), (2, 4), (1, 2, 3, 4)])
def test_each_fundus_site_is_named_for_its_source_whatever_subset_is_held(tmp_path, held):
    """Domain k of the DoFE release is the same hospital whichever domains a user holds."""
    for k in held:
        _dofe(tmp_path / "all", domains=4)
        (tmp_path / "held").mkdir(exist_ok=True)
        (tmp_path / "all" / f"Domain{k}").rename(tmp_path / "held" / f"Domain{k}")
    names = ["Drishti-GS", "RIM-ONE-r3", "REFUGE-train", "REFUGE-val"]
    data = load_dataset(_cfg("fundus", tmp_path / "held"))
    assert [s.name for s in data.sites] == [names[k - 1] for k in held]


def test_the_real_dofe_domains_1_and_3_are_drishti_gs_and_refuge(shared_datasets):
    data = load_dataset(_cfg("fundus", shared_datasets / "fundus"))
    assert [(s.name, len(s), len(s.fixed_test)) for s in data.sites] == [
        ("Drishti-GS", 71, 21),
        ("REFUGE-train", 150, 30),
    ]


def test_fundus_feddg_npy(tmp_path):
    for k in (1, 2):
        folder = tmp_path / f"client{k}" / "data_npy"
        folder.mkdir(parents=True)
        for i in range(3):
            array = np.zeros((48, 48, 5), np.float32)
            array[..., :3] = RNG.uniform(0, 255, (48, 48, 3))
            array[10:38, 10:38, 3] = 1
            array[18:30, 18:30, 4] = 1
            np.save(folder / f"{i}.npy", array)
    data = load_dataset(_cfg("fundus", tmp_path))
    assert len(data.sites) == 2 and data.sites[0].images.shape == (3, 32, 32, 3)
    mask = data.sites[0].masks[0]
    assert mask[16, 16] == 2 and mask[8, 8] == 1 and mask[0, 0] == 0


def test_fundus_fedlc_npy(tmp_path):
    for split in ("train", "test"):
        for i in range(2):
            base = tmp_path / "Site1" / split
            (base / "image").mkdir(parents=True, exist_ok=True)
            (base / "mask").mkdir(parents=True, exist_ok=True)
            np.save(base / "image" / f"{i}.npy", RNG.uniform(0, 1, (32, 32, 3)).astype(np.float32))
            np.save(base / "mask" / f"{i}.npy", RNG.integers(0, 3, (32, 32)).astype(np.uint8))
    data = load_dataset(_cfg("fundus", tmp_path))
    assert data.sites[0].fixed_test == [2, 3] and data.sites[0].images.dtype == np.uint8


def _nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def test_prostate_volumes_are_2p5d_slices_split_by_case(tmp_path):
    for site, seg in (("BIDMC", "_segmentation"), ("BMC", "_Segmentation")):
        folder = tmp_path / site
        folder.mkdir()
        for case in range(4):
            volume = RNG.normal(100, 20, (32, 32, 5)).astype(np.float32)
            label = np.zeros((32, 32, 5), np.uint8)
            label[8:20, 8:20, 1:4] = 2  # some releases use label 2: binarised with > 0
            _nifti(folder / f"Case{case:02d}.nii.gz", volume)
            _nifti(folder / f"Case{case:02d}{seg}.nii.gz", label)
    data = load_dataset(_cfg("prostate", tmp_path))
    site = data.sites[1]
    assert site.name == "BMC" and site.images.shape == (20, 32, 32, 3)
    assert set(np.unique(site.masks)) == {0, 1} and data.train_foreground_only
    # the middle channel is the slice itself, the others its neighbours
    assert np.array_equal(site.images[1][..., 0], site.images[0][..., 1])
    inner = load_dataset(_cfg("prostate", tmp_path, edge_slices=False)).sites[1]
    assert inner.images.shape == (12, 32, 32, 3)  # slices 1..3 of each case
    assert np.array_equal(inner.images[0], site.images[1]) and inner.groups[:3] == ["Case00"] * 3
    clipped = load_dataset(_cfg("prostate", tmp_path, volume_clip=[0, 99])).sites[1]
    assert not np.array_equal(clipped.images, site.images)
    splits = make_splits(data, 0.25, 0.25, seed=0)["BMC"]
    case_of = {split: {site.groups[i] for i in idx} for split, idx in splits.items()}
    assert not (case_of["train"] & case_of["test"]) and not (case_of["val"] & case_of["test"])
    assert len(case_of["test"]) == 1
    from fedbcs_lightning.federation.build import site_loaders

    loaders = site_loaders(_cfg("prostate", tmp_path), data, site, splits, seed=0)
    assert data.case_dice and loaders["test"].dataset.cases == [
        site.groups[i] for i in splits["test"]
    ]
    off = _cfg("prostate", tmp_path, case_dice=False)
    assert site_loaders(off, data, site, splits, seed=0)["test"].dataset.cases is None


def test_prostate_slice_pngs_invert_the_mask(tmp_path):
    for split in ("train", "test"):
        for stem in ("00_01", "00_02", "01_01"):
            base = tmp_path / "HK" / split
            _png(base / "image" / f"{stem}.png", RNG.integers(0, 255, (32, 32), np.uint8))
            mask = np.full((32, 32), 255, np.uint8)
            mask[8:16, 8:16] = 0
            _png(base / "mask" / f"{stem}.png", mask)
    data = load_dataset(_cfg("prostate", tmp_path))
    site = data.sites[0]
    assert site.images.shape[-1] == 1 and site.masks[0][10, 10] == 1 and site.masks[0][0, 0] == 0
    assert site.groups[:3] == ["00", "00", "01"]


def _sites(root):
    a = root / "alpha"
    _png(a / "images" / "x.png", RNG.integers(0, 255, (40, 50, 4), np.uint8), "RGBA")
    mask = np.zeros((40, 50), np.uint16)
    mask[5:15, 5:15] = 300  # instance ids, 16-bit
    _png(a / "masks" / "x.png", mask)
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (36, 36, 3), np.uint8)).save(buffer, format="JPEG")
    (a / "images" / "y.png").write_bytes(buffer.getvalue())  # JPEG bytes in a .png
    _png(a / "masks" / "y.png", np.zeros((36, 36), np.uint8))
    b = root / "beta"
    for stem in ("p", "q"):
        _png(b / "images" / f"{stem}.tif", RNG.integers(0, 255, (30, 30, 3), np.uint8))
        _png(b / "masks" / f"{stem}.png", (RNG.uniform(size=(30, 30)) > 0.5).astype(np.uint8))
    return root


def test_site_folders_decode_by_content_keep_native_size(tmp_path):
    data = load_dataset(_cfg("sites", _sites(tmp_path)))
    alpha = data.sites[0]
    assert data.whole_images and [im.shape for im in alpha.images] == [(40, 50, 3), (36, 36, 3)]
    assert set(np.unique(alpha.masks[0])) == {0, 1}
    nuclei = load_dataset(_cfg("nuclei", tmp_path))
    assert nuclei.class_names == ["background", "nucleus"]


def test_resize_whole_turns_whole_images_into_fixed_size_batches(tmp_path):
    from fedbcs_lightning.data import eval_batch_size
    from fedbcs_lightning.federation.build import site_loaders

    root = _sites(tmp_path)
    whole = load_dataset(_cfg("sites", root))
    with pytest.raises(DataError, match="data.eval_batch_size: 4 images per batch, but data"):
        eval_batch_size(_cfg("sites", root, eval_batch_size=4), whole)
    config = _cfg("sites", root, resize_whole=True, eval_batch_size=4)
    data = load_dataset(config)
    assert not data.whole_images and data.sites[0].images.shape == (2, 32, 32, 3)
    assert set(np.unique(data.sites[0].masks[0])) == {0, 1}  # nearest: labels stay labels
    site = data.sites[1]
    idx = {"train": [0], "val": [1], "test": [1]}
    loaders = site_loaders(config, data, site, idx, seed=0)
    assert loaders["val"].batch_size == 4 and next(iter(loaders["train"]))[0].shape[-1] == 32
    both = {"train": [0], "val": [0, 1], "test": [0, 1]}
    site.masks[1][:] = 0
    kept = site_loaders(_cfg("sites", root, eval_foreground_only=True), data, site, both, 0)
    assert kept["test"].dataset.indices == [0]  # the image without foreground is not scored


def test_label_values_map_mask_values_to_classes(tmp_path):
    folder = tmp_path / "s"
    _png(folder / "images" / "a.png", RNG.integers(0, 255, (16, 16, 3), np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[:4], mask[4:8] = 50, 200
    _png(folder / "masks" / "a.png", mask)
    data = load_dataset(_cfg("sites", tmp_path, label_values=[200, 50]))
    assert data.sites[0].masks[0][0, 0] == 2 and data.sites[0].masks[0][5, 0] == 1
    mask[0, 0] = 7
    _png(folder / "masks" / "a.png", mask)
    with pytest.raises(DataError, match=r"a.png: unexpected mask values \[7\]"):
        load_dataset(_cfg("sites", tmp_path, label_values=[200, 50]))


# ---------------------------------------------------------------- bad input


def test_unpaired_files_are_named_and_can_be_skipped(tmp_path):
    _sites(tmp_path)
    (tmp_path / "beta" / "masks" / "q.png").unlink()
    with pytest.raises(DataError, match=r"beta/images/q.tif.*skip_unpaired=true"):
        load_dataset(_cfg("sites", tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(_cfg("sites", tmp_path, skip_unpaired=True))
    assert len(data.sites[1]) == 1 and "q.tif" in str(caught[0].message)


def test_truncated_file_is_named(tmp_path):
    _sites(tmp_path)
    path = tmp_path / "beta" / "images" / "p.tif"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"p.tif: cannot be read as an image"):
        load_dataset(_cfg("sites", tmp_path))


def test_size_mismatch_is_named(tmp_path):
    _sites(tmp_path)
    _png(tmp_path / "beta" / "masks" / "p.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(DataError, match=r"p.tif: image is 30x30 but its mask .* is 30x20"):
        load_dataset(_cfg("sites", tmp_path))


def test_unexpected_fundus_mask_value_is_named(tmp_path):
    _dofe(tmp_path, domains=1)
    _png(
        tmp_path / "Domain1" / "train" / "ROIs" / "mask" / "a.png",
        np.full((40, 40, 3), 77, np.uint8),
    )
    with pytest.raises(DataError, match=r"mask/a.png: unexpected mask values \[77\]"):
        load_dataset(_cfg("fundus", tmp_path))


def test_empty_site_is_an_error(tmp_path):
    _sites(tmp_path)
    (tmp_path / "gamma" / "images").mkdir(parents=True)
    (tmp_path / "gamma" / "masks").mkdir()
    with pytest.raises(DataError, match="site 'gamma' has no image/mask pairs"):
        load_dataset(_cfg("sites", tmp_path))


def test_unrecognised_layout_lists_expected_and_found(tmp_path):
    (tmp_path / "whatever").mkdir()
    with pytest.raises(
        DataError, match=r"(?s)unrecognised fundus layout.*DoFE.*FedDG.*Found: whatever/"
    ):
        load_dataset(_cfg("fundus", tmp_path))


def test_missing_root_says_where_it_looked_and_where_to_get_data(monkeypatch):
    monkeypatch.delenv("FEDBCS_DATA", raising=False)
    cfg = resolve(options={"data": {"name": "prostate"}})
    with pytest.raises(DataError, match=r"(?s)--data-root \(not given\).*FEDBCS_DATA.*SAML"):
        load_dataset(cfg)


def test_environment_variable_root(tmp_path, monkeypatch):
    _sites(tmp_path / "sites")
    monkeypatch.setenv("FEDBCS_DATA", str(tmp_path))
    assert len(load_dataset(resolve(options={"data": {"name": "sites"}})).sites) == 2


# ---------------------------------------------------------------- cache


def test_cache_round_trip_atomic_and_checked(tmp_path, monkeypatch):
    data = load_dataset(_cfg("fundus", _dofe(tmp_path / "src")))
    out = tmp_path / "fundus.h5"
    manifest = write_cache(data, out, image_size=32)
    again = read_cache(out, "fundus", 32)
    for a, b in zip(data.sites, again.sites, strict=True):
        assert np.array_equal(a.images, b.images) and a.fixed_test == b.fixed_test
    assert manifest["sites"]["Drishti-GS"]["images"] == 4
    assert all(len(h) == 64 for h in manifest["sites"]["Drishti-GS"]["sources"].values())
    assert write_cache(data, out, image_size=32) == manifest  # idempotent
    with pytest.raises(DataError, match="prepared at image size 32, not 64"):
        read_cache(out, "fundus", 64)
    with pytest.raises(DataError, match="holds data set 'fundus', not 'prostate'"):
        read_cache(out, "prostate")
    assert not again.case_dice
    data.case_dice = True  # what the data set says about scoring travels with the cache
    write_cache(data, out, image_size=32)
    assert read_cache(out).case_dice
    with h5py.File(out, "r+") as f:  # a cache of an older format is refused, not misread
        f.attrs["manifest"] = f.attrs["manifest"].replace('"format": 2', '"format": 1')
    with pytest.raises(DataError, match="cache format 1, this version reads format 2"):
        read_cache(out)
    data.case_dice = False

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError):
        write_cache(data, tmp_path / "new.h5", image_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fundus.h5", "src"]


def test_variable_size_sites_round_trip_through_cache(tmp_path):
    data = load_dataset(_cfg("sites", _sites(tmp_path / "src")))
    write_cache(data, tmp_path / "s.h5", image_size=32)
    again = read_cache(tmp_path / "s.h5")
    assert again.whole_images and [im.shape for im in again.sites[0].images] == [
        (40, 50, 3),
        (36, 36, 3),
    ]


def test_damaged_cache_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a readable fedbcs cache"):
        read_cache(bad)


# ---------------------------------------------------------------- the real samples


def test_real_fundus_samples(shared_datasets):
    data = load_dataset(_cfg("fundus", shared_datasets / "samples" / "fundus-dofe"))
    assert [len(s) for s in data.sites] == [2, 2, 2, 2]
    assert all(set(np.unique(s.masks)) == {0, 1, 2} for s in data.sites)


def test_real_prostate_samples_report_the_unpaired_slice(shared_datasets):
    root = shared_datasets / "samples" / "prostate-slices"
    with pytest.raises(DataError, match=r"I2CVB/train/image/00_01.png.*skip_unpaired"):
        load_dataset(_cfg("prostate", root))


def test_real_nuclei_sites(shared_datasets):
    data = load_dataset(_cfg("nuclei", shared_datasets / "nuclei"))
    assert [s.name for s in data.sites] == ["cpm15", "kumar", "tnbc"]
    assert all(im.shape[-1] == 3 for s in data.sites for im in s.images)  # RGBA dropped
    assert [len(s) for s in data.sites] == [10, 16, 37]


def test_training_uses_the_cache_and_whole_images_train_on_crops(tmp_path):
    from fedbcs_lightning.api import fit

    for site in ("a", "b"):
        for i in range(4):
            image = RNG.integers(0, 255, (48, 40 + 8 * i, 3), np.uint8)
            mask = np.zeros(image.shape[:2], np.uint8)
            mask[10:30, 5:25] = 1
            _png(tmp_path / "src" / site / "images" / f"{i}.png", image)
            _png(tmp_path / "src" / site / "masks" / f"{i}.png", mask)
    cfg = _cfg("sites", tmp_path / "src")
    write_cache(load_dataset(cfg), tmp_path / "s.h5", image_size=32)
    cfg = resolve(
        options={
            "data": {
                "name": "sites",
                "cache": str(tmp_path / "s.h5"),
                "image_size": 32,
                "val_fraction": 0.25,
                "test_fraction": 0.25,
            },
            "model": {"width": 4},
            "train": {"rounds": 1, "batch_size": 2},
        }
    )
    run = fit(cfg, run_dir=tmp_path / "run", progress=False)
    assert set(run.result.test_last) == {"a", "b"}
    assert 0.0 <= run.result.test_last["a"]["dice"] <= 1.0
    from fedbcs_lightning.federation.build import site_loaders

    data = load_dataset(cfg)
    loaders = site_loaders(cfg, data, data.sites[0], {"train": [0, 1], "val": [2], "test": [3]}, 0)
    images, masks = next(iter(loaders["train"]))
    assert images.shape[-2:] == (32, 32) and masks.shape[-2:] == (32, 32)
    assert len(loaders["train"].dataset) == 2 * cfg.data.crops_per_image
    whole, _ = next(iter(loaders["test"]))
    assert whole.shape[-2:] == (48, 64)  # evaluated whole, with sliding windows
