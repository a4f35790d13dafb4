"""Backbones (and methods, data sets) of the user's own code, from the command line: an
``--import`` of the module that registers them, or an installed package's entry point;
checkpoints remember the import, so evaluating them needs nothing more."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
TINY = ["--image-size", "32", "--clients", "2", "--rounds", "1"]
TINY += ["--set", "data.synthetic.images_per_site=8", "--set", "run.log_images=0"]


def readme_backbone() -> str:
    """The README's "Add a backbone" example, as a user would save it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "tiny-unet" in b]
    return block


def cli(*args, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path), "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, "-m", "fedbcs_cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=path)


def test_import_a_module_that_registers_a_backbone_and_name_it_again_to_load(tmp_path):
    """The import is recorded in the run's config, never imported from it: evaluating,
    exporting or resuming names the module again (a checkpoint cannot run code)."""
    (tmp_path / "my_nets.py").write_text(readme_backbone())
    run = tmp_path / "run"
    args = ["fit", "--import", "my_nets", "--set", "model.backbone=tiny-unet", *TINY]
    trained = cli(*args, "--output", str(run), path=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "imports:\n  - my_nets" in (run / "config.yaml").read_text()
    checkpoint = str(run / "checkpoints" / "last.pt")
    refused = cli("evaluate", checkpoint, path=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "backbone 'tiny-unet' from module(s) my_nets" in refused.stderr
    assert "pass --import my_nets" in refused.stderr
    scored = cli("evaluate", checkpoint, "--import", "my_nets", path=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "site1" in scored.stdout and "mean" in scored.stdout
    resumed = cli(
        "fit", "--resume", str(run), "--rounds", "2", "--import", "my_nets", path=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    unknown = cli("fit", "--set", "model.backbone=tiny-unet", *TINY, path=tmp_path)
    assert unknown.returncode == 2 and "unknown backbone 'tiny-unet'" in unknown.stderr


def test_an_installed_package_registers_through_an_entry_point(tmp_path):
    package = tmp_path / "ep_nets"
    package.mkdir()
    code = readme_backbone().replace(
        '@BACKBONES.register("tiny-unet", description="a two-level U-Net")\n', ""
    )
    (package / "__init__.py").write_text(code)
    info = tmp_path / "ep_nets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-nets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [fedbcs_lightning.backbones]
            ep-unet = ep_nets:TinyUNet
            """
        )
    )
    listed = cli("backbones", path=tmp_path)
    assert "ep-unet" in listed.stdout, listed.stderr
    run = tmp_path / "run"
    trained = cli(
        "fit", "--set", "model.backbone=ep-unet", *TINY, "--output", str(run), path=tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    assert (run / "checkpoints" / "last.pt").is_file()
