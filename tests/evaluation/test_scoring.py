import json

import pytest

from fedbcs_lightning.data import DataError
from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint
from tests.helpers import last, same


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
    with pytest.raises(DataError, match="data set 'synthetic' has no site 'site9'; its sites"):
        evaluate_checkpoint(last(fedbcs_run), site="site9")
    with pytest.raises(ValueError, match="unknown split 'every'"):
        evaluate_checkpoint(last(fedbcs_run), split="every")


def test_evaluate_recomputes_the_seeded_split_without_splits_json(fedbcs_run, tmp_path):
    copy = tmp_path / "last.pt"
    copy.write_bytes(last(fedbcs_run).read_bytes())
    result = evaluate_checkpoint(copy)
    assert result.splits_source == "seeded split (seed 0)"
    summary = json.loads((fedbcs_run.run_dir / "summary.json").read_text())["test_last"]["sites"]
    assert all(same(result.sites[s]["dice"], summary[s]["dice"]) for s in summary)


def test_split_all_scores_every_image_of_each_site(fedbcs_run):
    from fedbcs_lightning.data import SegmentationDataset, make_loader
    from fedbcs_lightning.evaluation.checkpoints import load_model
    from fedbcs_lightning.evaluation.metrics import evaluate

    result = evaluate_checkpoint(last(fedbcs_run), split="all")
    assert result.splits_source == "every image" and result.split == "all"
    model, _ = load_model(last(fedbcs_run))
    for site in fedbcs_run.data.sites:
        loader = make_loader(SegmentationDataset(site, list(range(len(site)))), 4, False, 0)
        expected = evaluate(model, loader, fedbcs_run.data.regions, surface_metrics=True)
        assert same(result.sites[site.name]["dice"], expected["dice"])
        assert same(result.sites[site.name]["hd95"], expected["hd95"])


@pytest.mark.parametrize("method", ["fedavg", "harmofl", "local"])
def test_a_site_left_out_of_training_is_scored_on_every_image(tmp_path, method):
    """FedAvg's one model, HarmoFL's with the sites' mean local amplitude; ``local`` has
    no model for a site that no training used."""
    from fedbcs_lightning.api import fit
    from fedbcs_lightning.config import resolve
    from fedbcs_lightning.data import load_dataset

    config = resolve(
        options={
            "data": {
                "image_size": 32,
                "synthetic": {"sites": 3, "images_per_site": 6},
                "leave_out": ["site2"],
            },
            "model": {"width": 4},
            "train": {"rounds": 1, "batch_size": 4, "method": method},
            "run": {"log_images": 0},
        }
    )
    assert [s.name for s in load_dataset(config).sites] == ["site1", "site3"]
    run = fit(config, run_dir=tmp_path / "run", progress=False)
    assert set(run.result.test_last) == {"site1", "site3"}
    if method == "local":
        with pytest.raises(ValueError, match="whole model per site .* no training used"):
            evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", split="all")
        return
    unseen = evaluate_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", split="all", site="site2"
    )
    assert list(unseen.sites) == ["site2"] and 0 <= unseen.sites["site2"]["dice"] <= 1
    with pytest.raises(DataError, match="no site 'site2'"):  # the test split: trained sites only
        evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", site="site2")
    with pytest.raises(DataError, match=r"data.leave_out: data set .* has no site\(s\) site9"):
        load_dataset(resolve(options={"data": {"leave_out": ["site9"]}}))


def test_a_fold_run_tests_its_fold_and_evaluate_finds_it_without_splits_json(tmp_path):
    from fedbcs_lightning.api import fit
    from fedbcs_lightning.config import resolve
    from fedbcs_lightning.data import load_dataset, make_splits

    config = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 10}},
            "model": {"width": 4},
            "train": {"rounds": 1, "batch_size": 4},
            "run": {"log_images": 0},
        },
        overrides=["data.folds=3", "data.fold=2"],
    )
    run = fit(config, run_dir=tmp_path / "run", progress=False)
    recorded = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert recorded == make_splits(load_dataset(config), 0.2, 0.2, 0, folds=3, fold=2)
    copy = tmp_path / "last.pt"
    copy.write_bytes((tmp_path / "run" / "checkpoints" / "last.pt").read_bytes())
    result = evaluate_checkpoint(copy)
    assert result.splits_source == "seeded split (seed 0, fold 2 of 3)"
    for site, scores in run.result.test_last.items():
        assert same(result.sites[site]["dice"], scores["dice"])
