import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import DataError, SegmentationDataset
from fedbcs_lightning.inference import (
    ModelInfo,
    collect_images,
    evaluate_checkpoint,
    load_model,
    predict_file,
    predict_masks,
    to_model_input,
)


def train(tmp_path_factory, method: str):
    """One round of a 2-site federation on tiny synthetic images."""
    config = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 6}},
            "model": {"width": 4},
            "train": {"rounds": 1, "method": method, "batch_size": 2, "lr": 0.01},
            "fedbcs": {"prototype_dim": 8},
            "run": {"log_images": 0},
        }
    )
    return fit(config, run_dir=tmp_path_factory.mktemp(method), progress=False)


@pytest.fixture(scope="module")
def fedbcs_run(tmp_path_factory):
    return train(tmp_path_factory, "fedbcs")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return train(tmp_path_factory, "local")


@pytest.fixture(scope="module")
def fedbn_run(tmp_path_factory):
    return train(tmp_path_factory, "fedbn")


def last(run):
    return run.run_dir / "checkpoints" / "last.pt"


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_load_model_rebuilds_fedbcs_with_the_trained_weights(fedbcs_run):
    model, info = load_model(last(fedbcs_run))
    assert not model.training
    assert sorted(model.encoder_transforms) == ["1", "2", "3"]  # FSR after levels 2-4
    assert hasattr(model, "prototype_descriptors")
    trained = fedbcs_run.result.last_weights
    state = model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert (info.image_size, info.in_channels, info.num_classes) == (32, 3, 3)
    assert info.sites == ["site1", "site2"] and info.window is None and info.round == 1


@pytest.mark.parametrize("run", ["fedbcs_run", "local_run", "fedbn_run"])
def test_evaluate_checkpoint_reproduces_the_runs_test_scores(run, request):
    run = request.getfixturevalue(run)
    result = evaluate_checkpoint(last(run))
    summary = json.loads((run.run_dir / "summary.json").read_text())["test_last"]["sites"]
    assert result.sites.keys() == summary.keys()
    for site, scores in summary.items():
        assert {"assd", "assd/disc", "hd95/cup"} <= scores.keys()
        assert result.sites[site].keys() == scores.keys()
        for key, value in scores.items():
            assert same(result.sites[site][key], value), (site, key)
    assert result.splits_source == str(run.run_dir / "splits.json")


def test_evaluate_one_site_on_another_split(fedbcs_run):
    result = evaluate_checkpoint(last(fedbcs_run), split="val", site="site2")
    assert list(result.sites) == ["site2"] and result.split == "val"
    assert 0.0 <= result.sites["site2"]["dice"] <= 1.0
    assert result.mean == result.sites["site2"]
    with pytest.raises(DataError, match="no site 'site9'; its sites: site1, site2"):
        evaluate_checkpoint(last(fedbcs_run), site="site9")
    with pytest.raises(ValueError, match="unknown split 'all'"):
        evaluate_checkpoint(last(fedbcs_run), split="all")


def test_evaluate_recomputes_the_seeded_split_without_splits_json(fedbcs_run, tmp_path):
    copy = tmp_path / "last.pt"
    copy.write_bytes(last(fedbcs_run).read_bytes())
    result = evaluate_checkpoint(copy)
    assert result.splits_source == "seeded split (seed 0)"
    summary = json.loads((fedbcs_run.run_dir / "summary.json").read_text())["test_last"]["sites"]
    assert all(same(result.sites[s]["dice"], summary[s]["dice"]) for s in summary)


def test_local_checkpoint_needs_a_site(local_run):
    with pytest.raises(ValueError, match=r"one model per site .*--site: site1, site2"):
        load_model(last(local_run))
    with pytest.raises(ValueError, match="no site 'site3'"):
        load_model(last(local_run), site="site3")
    model, info = load_model(last(local_run), site="site2")
    trained = local_run.result.last_weights
    assert info.site == "site2"
    assert all(torch.equal(v, trained[f"site2/{k}"]) for k, v in model.state_dict().items())
    other = load_model(last(local_run), site="site1")[0].state_dict()
    assert not all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_fedbn_checkpoint_gives_each_site_its_own_batchnorm(fedbn_run):
    with pytest.raises(ValueError, match=r"one model per site .*--site: site1, site2"):
        load_model(last(fedbn_run))
    one = load_model(last(fedbn_run), site="site1")[0].state_dict()
    two = load_model(last(fedbn_run), site="site2")[0].state_dict()
    stats = [k for k in one if k.endswith("running_mean")]
    convs = [k for k in one if k.endswith("conv.weight") or k == "head.weight"]
    assert stats and all(not torch.equal(one[k], two[k]) for k in stats)
    assert convs and all(torch.equal(one[k], two[k]) for k in convs)


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


def test_damaged_or_foreign_checkpoints_name_the_file(fedbcs_run, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(last(fedbcs_run).read_bytes()[:4000])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": {}}, foreign)
    for path in (truncated, text, foreign):
        with pytest.raises(ValueError, match=str(path)):
            load_model(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    checkpoint = torch.load(last(fedbcs_run), weights_only=True)
    checkpoint["config"]["train"]["method"] = "fedavg"  # no FSR or descriptor layers
    mismatch = tmp_path / "mismatch.pt"
    torch.save(checkpoint, mismatch)
    with pytest.raises(ValueError, match="weights do not fit the 'unet' / 'fedavg' model"):
        load_model(mismatch)
