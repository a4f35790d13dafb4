"""What ``prepare`` and ``fit`` check in a data set, and how readers meet hostile files."""

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import DataError, DataWarning, load_dataset
from fedbcs_lightning.data.readers import read_image, read_mask, read_npy

runner = CliRunner()


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_site(root, site, images=4, channels=3, size=24, foreground=True):
    rng = np.random.default_rng(len(site))
    for i in range(images):
        shape = (size, size, channels) if channels > 1 else (size, size)
        save(root / site / "images" / f"{i:02d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        if foreground:
            mask[4:12, 4:12] = 255
        save(root / site / "masks" / f"{i:02d}.png", mask)


def sites_config(root, **data):
    return resolve(options={"data": {"name": "sites", "root": str(root), "image_size": 16, **data}})


def prepare(root, out):
    args = ["prepare", "--dataset", "sites", "--data-root", str(root), "--out", str(out)]
    return runner.invoke(app, args)


def test_a_grey_image_in_an_rgb_site_is_named(tmp_path):
    write_site(tmp_path, "a")
    save(tmp_path / "a" / "images" / "01.png", np.zeros((24, 24), np.uint8))
    with pytest.raises(
        DataError,
        match=r"site 'a': 1 of 4 images do not have the 3 channels .*01.png \(1 channel\)",
    ):
        load_dataset(sites_config(tmp_path))


def test_sites_with_different_channel_counts_are_named_by_prepare(tmp_path):
    write_site(tmp_path, "grey", channels=1)
    write_site(tmp_path, "rgb", channels=3)
    result = prepare(tmp_path, tmp_path / "out.h5")
    assert result.exit_code == 1 and not (tmp_path / "out.h5").exists()
    assert "sites have different channel counts: 1 channel(s) in grey" in result.output
    assert "3 channel(s) in rgb" in result.output and "Traceback" not in result.output


def test_masks_without_foreground_warn(tmp_path):
    write_site(tmp_path, "a", foreground=False)
    write_site(tmp_path, "b", foreground=False)
    with pytest.warns(DataWarning, match="no mask has any foreground, so every Dice will be 1.0"):
        load_dataset(sites_config(tmp_path))
    write_site(tmp_path, "c")
    with pytest.warns(DataWarning, match=r"no mask of site\(s\) a, b has foreground"):
        load_dataset(sites_config(tmp_path))
    (tmp_path / "a").rename(tmp_path.parent / "moved-a")  # the sites left all have foreground
    (tmp_path / "b").rename(tmp_path.parent / "moved-b")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_dataset(sites_config(tmp_path))


def test_a_site_too_small_to_split_is_cached_by_prepare_and_refused_by_fit(tmp_path):
    write_site(tmp_path, "big")
    write_site(tmp_path, "tiny", images=1)
    out = tmp_path.parent / f"{tmp_path.name}.h5"
    result = prepare(tmp_path, out)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    args = ["fit", "--dataset", "sites", "--cache", str(out), "--image-size", "16",
            "--output", str(tmp_path.parent / f"{tmp_path.name}-run")]  # fmt: skip
    fitted = runner.invoke(app, args)
    assert fitted.exit_code == 1 and "site 'tiny' has 1 images to split: too few" in fitted.output


def test_two_files_with_one_stem_are_named(tmp_path):
    write_site(tmp_path, "a")
    save(tmp_path / "a" / "images" / "01.jpg", np.zeros((24, 24, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"01.jpg and .*01.png have the same name '01'|01.jpg .* same name"
    ):
        load_dataset(sites_config(tmp_path))


def test_hidden_folders_are_skipped_and_a_stray_folder_is_named(tmp_path):
    write_site(tmp_path, "a")
    write_site(tmp_path, "b")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    assert [s.name for s in load_dataset(sites_config(tmp_path)).sites] == ["a", "b"]
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match=r"folder\(s\) notes/ do not fit the sites layout"):
        load_dataset(sites_config(tmp_path))


def test_a_huge_image_names_the_limit_and_how_to_raise_it(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    save(path, np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setenv("FEDBCS_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(
        DataError,
        match=r"big.png: image is larger than the limit of 1000 pixels.*FEDBCS_MAX_IMAGE_PIXELS",
    ):
        read_image(path)
    monkeypatch.setenv("FEDBCS_MAX_IMAGE_PIXELS", "0")
    assert read_image(path).shape == (64, 64, 3)


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


VALID = [
    png_bytes(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)),
    png_bytes(np.arange(16, dtype=np.uint8).reshape(4, 4)),
    npy_bytes(np.ones((3, 3, 3))),
]

HOSTILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HOSTILE
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.sampled_from(VALID).flatmap(
            lambda valid: st.integers(0, len(valid)).map(lambda n: valid[:n])
        ),
    )
)
def test_readers_meet_random_or_truncated_bytes_with_data_errors_only(tmp_path, data):
    for suffix, reader in ((".png", read_image), (".png", read_mask), (".npy", read_npy)):
        path = tmp_path / f"file{suffix}"
        path.write_bytes(data)
        try:
            array = reader(path)
        except DataError as err:
            assert str(path) in str(err)
        else:
            assert isinstance(array, np.ndarray)


@HOSTILE
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    channels=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16]),
)
def test_images_of_odd_shapes_and_depths_read_as_uint8_hwc(
    tmp_path, height, width, channels, dtype
):
    rng = np.random.default_rng(height * width)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if channels == 2 or (dtype == np.uint16 and channels > 1):
        return  # PIL cannot write these; they do not occur as files
    array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    path = tmp_path / "odd.png"
    Image.fromarray(array).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[:2] == (height, width)
    assert image.shape[2] in (1, 3)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.floats(0.0, 0.95), victim=st.integers(0, 3))
def test_prepare_names_a_damaged_file_and_writes_nothing(tmp_path_factory, cut, victim):
    root = tmp_path_factory.mktemp("sites")
    write_site(root, "a")
    write_site(root, "b")
    damaged = root / "a" / "images" / f"{victim:02d}.png"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: int(len(data) * cut)])
    out = root.parent / f"{root.name}.h5"
    result = prepare(root, out)
    assert result.exit_code == 1, result.output
    assert str(damaged) in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_a_group_pattern_keeps_each_slide_in_one_split(tmp_path):
    from fedbcs_lightning.data import make_splits

    for site in ("a", "b"):
        for slide in range(5):
            for n in range(3):
                image = np.full((24, 24, 3), 10 * slide + n, np.uint8)
                save(tmp_path / site / "images" / f"{slide:02d}_{n}.png", image)
                mask = np.zeros((24, 24), np.uint8)
                mask[4:9, 4:9] = 255
                save(tmp_path / site / "masks" / f"{slide:02d}_{n}.png", mask)
    config = sites_config(tmp_path, group_pattern=r"^(\d+)_")
    data = load_dataset(config)
    assert data.sites[0].groups[:4] == ["00", "00", "00", "01"]
    groups = {site.name: site.groups for site in data.sites}
    for site, split in make_splits(data, 0.2, 0.2, seed=0).items():
        slides = {name: {groups[site][i] for i in indices} for name, indices in split.items()}
        assert not (slides["train"] & slides["val"]) and not (slides["train"] & slides["test"])
        assert not (slides["val"] & slides["test"]), site
    with pytest.raises(DataError, match=r"does not match data.group_pattern '\^\(x\)'"):
        load_dataset(sites_config(tmp_path, group_pattern="^(x)"))
    from fedbcs_lightning.config import ConfigError

    with pytest.raises(ConfigError, match="needs a group that names the patient or slide"):
        sites_config(tmp_path, group_pattern=r"^\d+_")
