"""`fedbcs report`: one self-contained HTML page per run directory."""

import base64
import json
import re

import pytest
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.api import fit
from fedbcs_lightning.reporting.report import write_report
from fedbcs_lightning.rundir import RunDirectoryError
from tests.helpers import tiny_fedbcs

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = tiny_fedbcs(log_images=2)
    out = tmp_path_factory.mktemp("report") / "run"
    fit(config, run_dir=out, progress=False)
    return out


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_is_self_contained_with_tables_curves_overlays_and_internals(run_dir):
    curves = run_dir / "plots" / "dice_curves.png"
    curves.unlink()  # drawn again when missing
    page = write_report(run_dir).read_text()
    assert curves.is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"Model selected on validation (round {summary['best_round']})" in page
    assert "Last round (2)" in page
    assert page.count("<table") >= 4  # overview, 2 test tables, server metrics
    for site, metrics in summary["test_selected"]["sites"].items():
        assert f"<td>{site}</td><td>{metrics['dice/disc']:.4f}</td>" in page
    assert "<th>Dice cup</th>" in page and "<th>HD95</th>" in page
    assert "clusters/encoder/disc rim" in page and "fsr/level2/normalised" in page
    assert "clusters/encoder/1" not in page  # classes are named, not numbered
    images = embedded_pngs(page)
    assert len(images) == 3 and all(image.startswith(PNG) for image in images)
    assert images[0] == curves.read_bytes()
    assert images[1] == (run_dir / "plots" / "overlays.png").read_bytes()
    assert not re.search(r"https?:|<link|<script|url\(", page)
    assert re.findall(r'src="([^"]{0,15})', page) == ["data:image/png;"] * 3


def test_report_command_writes_out_atomically(run_dir, tmp_path):
    out = tmp_path / "page.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_a_folder_that_is_not_a_run_directory_names_what_is_missing(run_dir, tmp_path):
    (tmp_path / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(RunDirectoryError, match=r"missing metrics.jsonl, summary.json"):
        write_report(tmp_path)
    with pytest.raises(RunDirectoryError, match=r"does not exist"):
        write_report(tmp_path / "nope")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a finished run directory" in result.output and "summary.json" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "report.html").exists()
