"""Backbones and methods of the user's own code, from the command line: an ``--import``
of the module that registers them, or an installed package's entry point; checkpoints
remember the import but never perform it."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
TINY = ["--image-size", "32", "--clients", "2", "--rounds", "1"]
TINY += ["--set", "data.synthetic.images_per_site=8", "--set", "run.log_images=0"]


def readme_block(marker: str) -> str:
    """The documentation's Python example that contains ``marker``, as a user would save
    it."""
    blocks = re.findall(r"```python\n(.*?)```", EXTENDING.read_text(), flags=re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def readme_backbone() -> str:
    return readme_block("@BACKBONES.register")


def readme_method() -> str:
    return readme_block("@METHODS.register")


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
    trained = cli(*args, "--set", "model.options.width=4", "--output", str(run), path=tmp_path)
    assert trained.returncode == 0, trained.stderr
    saved = (run / "config.yaml").read_text()
    assert "imports:\n  - my_nets" in saved and "options:\n    width: 4" in saved
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


def test_a_plugin_backbones_options_are_typed_and_checked(tmp_path):
    (tmp_path / "my_nets.py").write_text(readme_backbone())
    base = ["config", "--import", "my_nets", "--set", "model.backbone=tiny-unet"]
    shown = cli(*base, path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "options:\n    width: 8" in shown.stdout  # the backbone's default
    typo = cli(*base, "--set", "model.options.widht=4", path=tmp_path)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "unknown config key 'model.options.widht'" in typo.stderr
    assert "Did you mean 'model.options.width'?" in typo.stderr
    wrong = cli(*base, "--set", "model.options.width=wide", path=tmp_path)
    assert "model.options.width: expected an integer" in wrong.stderr
    listed = cli("backbones", "--import", "my_nets", path=tmp_path)
    assert "tiny-unet" in listed.stdout and "options: model.options.width" in listed.stdout


def test_the_readme_backbone_hosts_harmofl_and_fedbcs(tmp_path):
    """The base class applies HarmoFL's input transform and FedBCS's level transforms."""
    (tmp_path / "my_nets.py").write_text(readme_backbone())
    common = ["fit", "--import", "my_nets", "--set", "model.backbone=tiny-unet", *TINY]
    for method, extra in (("harmofl", []), ("fedbcs", ["--set", "fedbcs.fsr_levels=[2]"])):
        run = tmp_path / method
        done = cli(*common, "--method", method, *extra, "--output", str(run), path=tmp_path)
        assert done.returncode == 0, done.stderr
        from fedbcs_lightning.io import load_checkpoint

        weights = load_checkpoint(run / "checkpoints" / "last.pt")["state_dict"]
        if method == "harmofl":
            assert any(k.startswith("site1/input_transform.") for k in weights), sorted(weights)
        else:
            assert "encoder_transforms.1.mix_logits" in weights
    refused = cli(*common, "--method", "fedbcs", path=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "fedbcs.fsr_levels: level 3 does not exist" in refused.stderr


def test_a_method_plugin_with_options_trains_resumes_evaluates_and_is_listed(tmp_path):
    (tmp_path / "my_methods.py").write_text(readme_method())
    listed = cli("methods", "--import", "my_methods", path=tmp_path)
    assert "trimmed" in listed.stdout and "options: trimmed.trim" in listed.stdout
    run = tmp_path / "run"
    args = ["fit", "--import", "my_methods", "--method", "trimmed", *TINY]
    trained = cli(*args, "--set", "trimmed.trim=0.25", "--output", str(run), path=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "trimmed:\n  trim: 0.25" in (run / "config.yaml").read_text()
    resumed = cli(
        "fit", "--resume", str(run), "--rounds", "2", "--import", "my_methods", path=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    checkpoint = str(run / "checkpoints" / "last.pt")
    refused = cli("evaluate", checkpoint, path=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "method 'trimmed' from module(s) my_methods" in refused.stderr
    scored = cli("evaluate", checkpoint, "--import", "my_methods", path=tmp_path)
    assert scored.returncode == 0, scored.stderr
    bad = cli(*args, "--set", "trimmed.trim=0.7", path=tmp_path)
    assert bad.returncode == 2 and "trimmed.trim: must lie in [0.0, 0.5), got 0.7" in bad.stderr
    typo = cli(*args, "--set", "trimmed.trm=0.1", path=tmp_path)
    assert "unknown config key 'trimmed.trm'" in typo.stderr and "Did you mean" in typo.stderr
    section = cli(*args, "--set", "trimed.trim=0.1", path=tmp_path)
    assert "Did you mean 'trimmed'?" in section.stderr


def test_a_registered_class_that_is_not_a_strategy_is_refused_by_name(tmp_path):
    (tmp_path / "odd.py").write_text(
        textwrap.dedent(
            """
            from fedbcs_lightning.catalog import METHODS

            class MedianAvg:  # forgot to subclass Strategy
                def aggregate_train(self, server_round, updates):
                    raise AssertionError("never called")

            METHODS.register("median", MedianAvg)
            """
        )
    )
    refused = cli("fit", "--import", "odd", "--method", "median", *TINY, path=tmp_path)
    assert refused.returncode != 0, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "method 'median' is registered as odd.MedianAvg" in refused.stderr
    assert "not a subclass of fedbcs_lightning.methods.Strategy" in refused.stderr


def test_an_installed_package_registers_through_an_entry_point(tmp_path):
    package = tmp_path / "ep_plugin"
    package.mkdir()
    code = readme_backbone().replace(
        '@BACKBONES.register("tiny-unet", description="a two-level U-Net")\n', ""
    )
    method = readme_method().replace(
        '@METHODS.register("trimmed", description="coordinate-wise trimmed mean of the updates")\n',
        "",
    )
    (package / "__init__.py").write_text(code + "\n" + method)
    info = tmp_path / "ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [fedbcs_lightning.backbones]
            ep-unet = ep_plugin:TinyUNet

            [fedbcs_lightning.methods]
            ep-trimmed = ep_plugin:TrimmedMean
            ep-missing = ep_plugin_gone:Nothing
            """
        )
    )
    listed = cli("backbones", path=tmp_path)
    assert "ep-unet" in listed.stdout, listed.stderr
    methods = cli("methods", path=tmp_path)
    assert "ep-trimmed" in methods.stdout and "options: ep-trimmed.trim" in methods.stdout
    assert methods.returncode == 0 and "Traceback" not in methods.stderr
    assert "(cannot load: ModuleNotFoundError" in methods.stdout  # listed, with the reason
    run = tmp_path / "run"
    trained = cli(
        "fit", "--set", "model.backbone=ep-unet", "--method", "ep-trimmed",
        "--set", "ep-trimmed.trim=0.1", *TINY, "--output", str(run), path=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert (run / "checkpoints" / "last.pt").is_file()
