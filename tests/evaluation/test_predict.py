import numpy as np
import pytest
import torch
from PIL import Image

from fedbcs_lightning.data import DataError, SegmentationDataset
from fedbcs_lightning.evaluation.checkpoints import ModelInfo, load_model
from fedbcs_lightning.evaluation.predict import (
    collect_images,
    predict_file,
    predict_masks,
    to_model_input,
)
from tests.helpers import last


def test_predict_masks_is_the_argmax_of_the_model(fedbcs_run):
    model, info = load_model(last(fedbcs_run))
    site = fedbcs_run.data.sites[0]
    images = torch.stack([SegmentationDataset(site, [0, 1, 2])[i][0] for i in range(3)])
    masks = predict_masks(model, images)
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.long
    assert torch.equal(masks, model(images).argmax(1))
    assert masks.min() >= 0 and masks.max() < info.num_classes


def test_predict_file_prepares_images_as_in_training(fedbcs_run, tmp_path):
    model, info = load_model(last(fedbcs_run))
    site = fedbcs_run.data.sites[1]
    Image.fromarray(site.images[0]).save(tmp_path / "scan.png")
    image, mask = predict_file(model, info, tmp_path / "scan.png")
    assert np.array_equal(image, site.images[0])
    expected = model(SegmentationDataset(site, [0])[0][0][None]).argmax(1)[0]
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected.numpy())

    grey = np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    image, mask = predict_file(model, info, tmp_path / "grey.png")
    assert image.shape == (40, 56, 3)  # one channel repeated for an RGB model
    assert mask.shape == (40, 56)  # predicted at 32x32, resized back (nearest)
    assert set(np.unique(mask)) <= {0, 1, 2}


def test_whole_image_checkpoints_use_sliding_windows(fedbcs_run, tmp_path):
    model, info = load_model(last(fedbcs_run))
    whole = ModelInfo(info.path, info.config, {**info.data, "whole_images": True}, info.round)
    image = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "large.png")
    tensor = to_model_input(image, whole)
    assert tensor.shape == (1, 3, 40, 56)  # kept at its size
    _, mask = predict_file(model, whole, tmp_path / "large.png")
    assert np.array_equal(mask, predict_masks(model, tensor, window=32)[0].numpy())
    assert whole.window == 32 and info.window is None


def test_model_input_is_scaled_as_the_run_trained(fedbcs_run):
    from fedbcs_lightning.config import merge

    _, info = load_model(last(fedbcs_run))
    image = np.full((32, 32, 3), 100, np.uint8)
    image[0, 0] = 200
    assert to_model_input(image, info).max() == 200 / 255
    minmax = merge(info.config, {"data": {"intensity": "minmax"}})
    scaled = to_model_input(image, ModelInfo(info.path, minmax, info.data, info.round))
    assert scaled.max() == 1 and scaled.min() == 0


def test_collect_images(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "c.tif"
    single.write_bytes(b"x")
    assert collect_images([folder, single]) == [folder / "a.jpg", folder / "b.png", single]
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match="same name 'a'"):
        collect_images([folder, tmp_path / "a.png"])
    with pytest.raises(DataError, match="missing.png: no such file or folder"):
        collect_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder holds no image files"):
        collect_images([tmp_path / "empty"])
