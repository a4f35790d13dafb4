import csv
import json
import math

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import SegmentationDataset
from fedbcs_lightning.evaluation.checkpoints import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One round of FedAvg on two tiny synthetic sites."""
    config = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 6}},
            "model": {"width": 4},
            "train": {"rounds": 1, "batch_size": 2, "lr": 0.01},
            "run": {"log_images": 0},
        }
    )
    return fit(config, run_dir=tmp_path_factory.mktemp("fedavg"), progress=False)


@pytest.fixture(scope="module")
def checkpoint(run):
    return run.run_dir / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def local_checkpoint(checkpoint, tmp_path_factory):
    """A checkpoint of method local: one model per site under ``<site>/<key>``."""
    saved = torch.load(checkpoint, weights_only=True)
    weights = saved["state_dict"]
    saved["state_dict"] = {
        f"{site}/{k}": v * (1.0 if site == "site1" else 0.5) if v.is_floating_point() else v
        for site in ("site1", "site2")
        for k, v in weights.items()
    }
    saved["config"]["train"]["method"] = "local"
    path = tmp_path_factory.mktemp("local") / "last.pt"
    torch.save(saved, path)
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_evaluate_reproduces_the_runs_test_scores(run, checkpoint, tmp_path):
    out = tmp_path / "scores.json"
    result = invoke("evaluate", checkpoint, "--out", out)
    assert result.exit_code == 0, result.output
    assert "assd disc" in result.output and "hd95 cup" in result.output
    assert "splits.json" in result.output
    for name in ("site1", "site2", "mean"):
        assert f"\n{name} " in result.output
    written = json.loads(out.read_text())
    summary = json.loads((run.run_dir / "summary.json").read_text())["test_last"]
    assert written["split"] == "test" and written["round"] == 1
    for site, scores in summary["sites"].items():
        assert "assd" in scores
        assert all(same(written["sites"][site][k], v) for k, v in scores.items()), site
    assert all(same(written["mean"][k], v) for k, v in summary["mean"].items())


def test_evaluate_one_site_on_the_validation_split_to_csv(checkpoint, tmp_path):
    out = tmp_path / "val.csv"
    result = invoke("evaluate", checkpoint, "--split", "val", "--site", "site1", "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["site"] for r in rows] == ["site1", "mean"]
    assert rows[0]["dice/disc"] == rows[1]["dice/disc"]
    assert {"dice", "hd95", "assd", "assd/cup"} <= rows[0].keys()
    assert 0.0 <= float(rows[0]["dice"]) <= 1.0


def test_evaluate_errors(checkpoint, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(checkpoint.read_bytes()[:5000])
    cases = [
        (["evaluate", tmp_path / "missing.pt"], 1, "missing.pt' does not exist"),
        (["evaluate", damaged], 1, "damaged.pt' is damaged or not a fedbcs checkpoint"),
        (["evaluate", checkpoint, "--site", "site7"], 1, "its sites: site1, site2"),
        (["evaluate", checkpoint, "--split", "every"], 2, "choose train, val, test or all"),
        (["evaluate", checkpoint, "--out", tmp_path / "x.txt"], 2, "a .csv or .json file"),
        (["evaluate", checkpoint, "--dataset", "nope"], 1, "unknown data set 'nope'"),
    ]
    for args, code, message in cases:
        result = invoke(*args)
        assert result.exit_code == code, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output, result.output


def write_site_images(run, folder):
    folder.mkdir()
    site = run.data.sites[0]
    for i in range(2):
        Image.fromarray(site.images[i]).save(folder / f"scan{i}.png")
    return site


def test_predict_writes_masks_equal_to_the_models_argmax(run, checkpoint, tmp_path):
    site = write_site_images(run, tmp_path / "scans")
    out = tmp_path / "pred"
    result = invoke("predict", checkpoint, tmp_path / "scans", "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 4 files" in result.output
    model, _ = load_model(checkpoint)
    for i in range(2):
        mask = np.asarray(Image.open(out / f"scan{i}_mask.png"))
        expected = model(SegmentationDataset(site, [i])[0][0][None]).argmax(1)[0].numpy()
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
        overlay = np.asarray(Image.open(out / f"scan{i}_overlay.png"))
        assert overlay.shape == (32 + 16, 32, 3) and overlay.dtype == np.uint8  # + legend band
        shares = [f"{(mask == k).mean():.1%}" for k in (1, 2) if (mask == k).any()]
        line = next(ln for ln in result.output.splitlines() if f"scan{i}.png ->" in ln)
        assert all(share in line for share in shares)
        assert shares or "no foreground predicted" in line


def test_predict_names_an_unreadable_input(checkpoint, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = invoke("predict", checkpoint, bad, "--out", tmp_path / "pred")
    assert result.exit_code == 1
    assert f"error: {bad}: cannot be read as an image" in result.output
    result = invoke("predict", checkpoint, tmp_path / "nothing", "--out", tmp_path / "pred")
    assert result.exit_code == 1 and "nothing: no such file or folder" in result.output


def test_local_checkpoints_need_a_site(run, local_checkpoint, tmp_path):
    write_site_images(run, tmp_path / "scans")
    out = tmp_path / "pred"
    result = invoke("predict", local_checkpoint, tmp_path / "scans", "--out", out)
    assert result.exit_code == 1
    assert "one model per site (method 'local'); name one with --site: site1, site2" in (
        result.output
    )
    result = invoke("export", local_checkpoint, "--out", tmp_path / "m.pt", "--site", "site9")
    assert result.exit_code == 1 and "no site 'site9'; its sites: site1, site2" in result.output
    args = ["predict", local_checkpoint, tmp_path / "scans", "--out", out, "--site", "site2"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert (out / "scan1_mask.png").is_file()
    result = invoke("evaluate", local_checkpoint)  # each site with its own model
    assert result.exit_code == 0, result.output


def test_export_onnx_matches_the_checkpoint_model(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    result = invoke("export", checkpoint, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    assert "max abs difference from PyTorch on a random batch: " in result.output
    assert "input 'image' (N, 3, 32, 32)" in result.output
    model, _ = load_model(checkpoint)
    images = torch.rand(2, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(images).numpy(), atol=1e-4)


def test_export_errors(checkpoint, tmp_path):
    result = invoke("export", checkpoint, "--format", "tflite", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "error: --format 'tflite': choose onnx or torchscript" in (
        result.output
    )
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    result = invoke("export", text, "--out", tmp_path / "m.pt", "--format", "torchscript")
    assert (
        result.exit_code == 1 and f"checkpoint '{text}' is not a fedbcs checkpoint" in result.output
    )
    assert not (tmp_path / "m.pt").exists()
