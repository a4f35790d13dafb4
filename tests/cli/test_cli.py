import json
import subprocess
import sys

import torch
import yaml
from typer.testing import CliRunner

from fedbcs_cli.main import app

runner = CliRunner()
TINY = ["--set", "data.synthetic.images_per_site=10", "--set", "model.width=4"]


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from fedbcs_cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'fit' in r.output; "
        "heavy = ('torch', 'lightning', 'albumentations', 'wandb'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_dataset_lists_valid_ones_without_traceback():
    result = runner.invoke(app, ["fit", "--dataset", "nope"])
    assert result.exit_code != 0
    assert "unknown data set 'nope'" in result.output and "synthetic" in result.output
    assert "Traceback" not in result.output


def test_listings():
    assert "synthetic" in runner.invoke(app, ["datasets"]).output
    assert "fedavg" in runner.invoke(app, ["methods"]).output
    assert "smp-unet" in runner.invoke(app, ["backbones"]).output
    shown = yaml.safe_load(runner.invoke(app, ["config", "--config", "smoke"]).output)
    assert shown["data"]["image_size"] == 32


def test_fit_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "fit",
            "--dataset",
            "synthetic",
            "--method",
            "fedavg",
            "--rounds",
            "3",
            "--clients",
            "2",
            "--image-size",
            "32",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "site1" in result.output and "site2" in result.output and "dice disc" in result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["rounds"] == 3 and saved["data"]["image_size"] == 32
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert {r["round"] for r in val} == {1, 2, 3}
    assert {r["site"] for r in val} == {"site1", "site2", "mean"}
    assert all(0.0 <= r["dice/cup"] <= 1.0 for r in val)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test_last"]["sites"]) == {"site1", "site2"}
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["round"] == 3 and "head.weight" in ckpt["state_dict"]
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits) == {"site1", "site2"}


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    args = ["fit", "--rounds", "2", "--clients", "2", "--image-size", "32", *TINY]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = runner.invoke(app, [*args, "--seed", str(seed), "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "c")


def test_bad_override_is_a_clean_error():
    result = runner.invoke(app, ["fit", "--set", "train.lr=fast"])
    assert result.exit_code == 2
    assert "train.lr: expected a number" in result.output and "Traceback" not in result.output


def test_prepare_fundus_samples_writes_a_valid_cache(shared_datasets, tmp_path):
    out = tmp_path / "fundus.h5"
    result = runner.invoke(
        app,
        [
            "prepare",
            "--dataset",
            "fundus",
            "--data-root",
            str(shared_datasets / "samples" / "fundus-dofe"),
            "--out",
            str(out),
            "--image-size",
            "32",
        ],
    )
    # one image per site: prepare caches what is there; too few to split is fit's question
    assert result.exit_code == 0, result.output
    assert out.is_file() and "Drishti-GS" in result.output
    args = ["fit", "--dataset", "fundus", "--cache", str(out), "--image-size", "32"]
    fitted = runner.invoke(app, [*args, "--output", str(tmp_path / "run")])
    assert fitted.exit_code == 1 and "site 'Drishti-GS' has 1 images to split: too few" in (
        fitted.output
    )
    out.unlink()
    from fedbcs_lightning.config import resolve
    from fedbcs_lightning.data import load_dataset
    from fedbcs_lightning.data.cache import read_cache, write_cache

    root = str(shared_datasets / "samples" / "fundus-dofe")
    data = load_dataset(resolve(options={"data": {"name": "fundus", "root": root}}))
    write_cache(data, out, 32)
    assert len(read_cache(out, "fundus", 32).sites) == 4


def test_prepare_prostate_samples_names_the_unpaired_file(shared_datasets, tmp_path):
    root = str(shared_datasets / "samples" / "prostate-slices")
    out = tmp_path / "prostate.h5"
    args = [
        "prepare",
        "--dataset",
        "prostate",
        "--data-root",
        root,
        "--out",
        str(out),
        "--image-size",
        "32",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and not out.exists()
    assert "I2CVB/train/image/00_01.png" in result.output and "skip_unpaired" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, [*args, "--skip-unpaired"])
    assert "warning: skipping" in result.output
    assert result.exit_code == 0 and out.is_file()  # one case a site: cached, fit refuses it


def test_fit_without_data_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDBCS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["fit", "--dataset", "fundus"])
    assert result.exit_code == 1
    assert "--data-root (not given)" in result.output and "DoFE" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


def test_fit_on_real_nuclei_sites_reports_each_site(shared_datasets, tmp_path):
    result = runner.invoke(
        app,
        [
            "fit",
            "--dataset",
            "nuclei",
            "--data-root",
            str(shared_datasets / "nuclei"),
            "--rounds",
            "2",
            "--output",
            str(tmp_path / "run"),
            "--set",
            "model.width=4",
        ],
    )
    assert result.exit_code == 0, result.output
    for site in ("cpm15", "kumar", "tnbc"):
        assert site in result.output
    assert "dice nucleus" in result.output


def test_fit_reads_the_cache_it_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere.h5"
    result = runner.invoke(app, ["fit", "--dataset", "fundus", "--cache", str(missing)])
    assert result.exit_code == 1
    assert str(missing) in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


def test_a_fit_that_fails_on_its_data_fails_before_torch_is_imported(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from fedbcs_cli.main import app; "
        f"r = CliRunner().invoke(app, ['fit', '--dataset', 'nuclei', '--data-root', "
        f"'{tmp_path / 'missing'}', '--output', '{tmp_path / 'run'}']); "
        "assert r.exit_code == 1 and 'no nuclei data found' in r.output, r.output; "
        "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
