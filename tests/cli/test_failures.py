"""Every failure mode a user can meet, what they see, and the table that lists them.

Each case runs the failure for real (the CLI where a user would meet it) and checks the
message; docs/troubleshooting.md's table must list exactly these cases,
in this order, with these messages.
"""

import errno
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.federation.trainer import FederatedTrainer
from tests.helpers import federation

TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
TINY = ["--image-size", "32", "--clients", "2", "--rounds", "1", "--set", "model.width=4"]
TINY += ["--set", "data.synthetic.images_per_site=8", "--set", "run.log_images=0"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    return result.output


def fit(tmp, *args: str) -> str:
    return cli("fit", *TINY, "--output", str(tmp / "run"), *args)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def sites(tmp: Path, channels=(3, 3), images=4, foreground=True) -> Path:
    root = tmp / "data"
    for k, c in enumerate(channels):
        for i in range(images):
            shape = (24, 24, c) if c > 1 else (24, 24)
            save(root / f"site{k}" / "images" / f"{i}.png", np.full(shape, 9 * i, np.uint8))
            mask = np.zeros((24, 24), np.uint8)
            mask[2:9, 2:9] = 255 if foreground else 0
            save(root / f"site{k}" / "masks" / f"{i}.png", mask)
    return root


def prepare(root: Path, *extra: str) -> str:
    out = root.parent / "out.h5"
    result = CliRunner().invoke(
        app, ["prepare", "--dataset", "sites", "--data-root", str(root), "--out", str(out), *extra]
    )
    assert "Traceback" not in result.output
    return result.output


def in_use(tmp):
    holder = (
        "import sys, time\n"
        "from fedbcs_lightning.rundir import lock_run_dir\n"
        f"with lock_run_dir({str(tmp / 'run')!r}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        return fit(tmp)
    finally:
        process.kill()
        process.wait()


def finished(tmp):
    cli_ok = CliRunner().invoke(app, ["fit", *TINY, "--output", str(tmp / "run")])
    assert cli_ok.exit_code == 0, cli_ok.output
    return fit(tmp)


def foreign(tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "thesis.docx").write_text("x")
    return fit(tmp)


def output_file(tmp):
    (tmp / "run").write_text("x")
    return fit(tmp)


def yaml_section(tmp):
    (tmp / "bad.yaml").write_text("train: 5\n")
    return cli("fit", "--config", str(tmp / "bad.yaml"))


def grey_in_rgb(tmp):
    root = sites(tmp)
    save(root / "site0" / "images" / "1.png", np.zeros((24, 24), np.uint8))
    return prepare(root)


def one_stem(tmp):
    root = sites(tmp)
    save(root / "site0" / "images" / "1.jpg", np.zeros((24, 24, 3), np.uint8))
    return prepare(root)


def stray(tmp):
    root = sites(tmp)
    (root / "notes").mkdir()
    (root / ".ipynb_checkpoints").mkdir()  # hidden: skipped
    return prepare(root)


def damaged(tmp):
    root = sites(tmp)
    path = root / "site1" / "masks" / "2.png"
    path.write_bytes(path.read_bytes()[:30])
    return prepare(root)


def huge(tmp, monkeypatch):
    monkeypatch.setenv("FEDBCS_MAX_IMAGE_PIXELS", "100")
    return prepare(sites(tmp))


def disk_full(tmp, monkeypatch):
    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    root = sites(tmp)
    monkeypatch.setattr(os, "fsync", no_space)
    return prepare(root)


def duplicate_key(tmp):
    (tmp / "twice.yaml").write_text("train:\n  rounds: 3\ntrain:\n  lr: 0.1\n")
    return cli("fit", "--config", str(tmp / "twice.yaml"))


def own_files(tmp):
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    (tmp / "run" / "config.yaml").write_text("mine: true\n")
    (tmp / "run" / "checkpoints" / "last.pt").write_text("mine")
    return fit(tmp, "--overwrite")


def trained_checkpoint(tmp) -> Path:
    done = CliRunner().invoke(app, ["fit", *TINY, "--output", str(tmp / "trained")])
    assert done.exit_code == 0, done.output
    return tmp / "trained" / "checkpoints" / "last.pt"


def plugin_checkpoint(tmp):
    path = trained_checkpoint(tmp)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["model"]["backbone"] = "tiny-unet"
    checkpoint["config"]["run"]["imports"] = ["my_nets"]
    torch.save(checkpoint, path)
    return cli("evaluate", str(path))


def nan_checkpoint(tmp):
    path = trained_checkpoint(tmp)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["head.bias"] = torch.full_like(
        checkpoint["state_dict"]["head.bias"], math.nan
    )
    torch.save(checkpoint, path)
    return cli("evaluate", str(path))


def poisoned(tmp):
    from tests.helpers import tiny_fedbcs

    strategy, clients = federation(tiny_fedbcs(rounds=1))
    honest = clients[1].fit

    def fit_nan(instruction):
        update = honest(instruction)
        update.weights["head.bias"] = torch.full_like(update.weights["head.bias"], math.nan)
        return update

    clients[1].fit = fit_nan
    trainer = FederatedTrainer(clients, strategy, 1)
    trainer.fit(clients[0].get_weights())
    return f"round 1: update of site2 rejected: {trainer.history[0]['rejected']['site2']}"


#: (what goes wrong, what the user sees, how to make it happen)
CASES = [
    (
        "`--set train.momentum=-1`",
        "train.momentum: must lie in [0, 1), got -1.0",
        lambda t: fit(t, "--set", "train.momentum=-1"),
    ),
    ("`--seed -1`", "run.seed: must be >= 0, got -1", lambda t: fit(t, "--seed", "-1")),
    (
        "`--lr nan`, `--lr inf`",
        "train.lr: expected a finite number, got nan",
        lambda t: fit(t, "--lr", "nan"),
    ),
    (
        "`--set fedprox.mu=nan`",
        "fedprox.mu: expected a finite number",
        lambda t: fit(t, "--set", "fedprox.mu=nan"),
    ),
    (
        "`--set train.rounds=abc --rounds 1`",
        "train.rounds: expected an integer, got 'abc'",
        lambda t: fit(t, "--set", "train.rounds=abc"),
    ),
    (
        "a YAML section that is not a mapping (`train: 5`)",
        "section 'train': expected a mapping of keys, got 5",
        yaml_section,
    ),
    (
        "`--set fedbcs.fsr_levels=[5]`",
        "fedbcs.fsr_levels: level 5 does not exist; the backbone has 4 encoder levels",
        lambda t: fit(t, "--method", "fedbcs", "--set", "fedbcs.fsr_levels=[5]"),
    ),
    (
        "`--set model.backbone=smp-unet --image-size 48`",
        "data.image_size: backbone 'smp-unet' needs a multiple of 32, got 48; try 64",
        lambda t: cli(
            "fit",
            "--set",
            "model.backbone=smp-unet",
            "--image-size",
            "48",
            "--output",
            str(t / "run"),
        ),
    ),
    (
        "`--set run.accelerator=gpu` without a GPU",
        "run.accelerator: 'gpu' but torch",
        lambda t: fit(t, "--set", "run.accelerator=gpu"),
    ),
    (
        "a batch of one with BatchNorm (`--batch-size 1 --image-size 16`)",
        "BatchNorm got a batch of one value per channel",
        lambda t: cli(
            "fit", *TINY[2:], "--batch-size", "1", "--image-size", "16", "--output", str(t / "run")
        ),
    ),
    (
        "training diverges (`--lr 1e6`)",
        "client updates accepted, fewer than the 1 needed",
        lambda t: cli(
            "fit",
            *TINY[6:],
            "--image-size",
            "32",
            "--clients",
            "2",
            "--rounds",
            "3",
            "--lr",
            "1e6",
            "--output",
            str(t / "run"),
        ),
    ),
    (
        "a client uploads NaN (or wrong keys, shapes, dtypes, counts, prototypes)",
        "round 1: update of site2 rejected: non-finite values in 'head.bias'",
        poisoned,
    ),
    ("`--output` names a file", "is a file, not a folder", output_file),
    ("`--output` holds a finished run", "already holds a run. Continue it with", finished),
    (
        "`--output` holds other files",
        "is not empty and is not a fedbcs run (it holds thesis.docx)",
        foreign,
    ),
    ("another fit or resume uses the folder", "is in use by another fedbcs process (pid", in_use),
    (
        "`--resume` a folder that does not exist",
        "cannot be resumed: no such folder",
        lambda t: cli("fit", "--resume", str(t / "nowhere")),
    ),
    (
        "`--resume RUN --rounds 0`",
        "--rounds must be at least 1, got 0",
        lambda t: cli("fit", "--resume", str(t), "--rounds", "0"),
    ),
    (
        "one grey image in an RGB site",
        "1 of 4 images do not have the 3 channels of the others",
        grey_in_rgb,
    ),
    (
        "one grey site, one RGB site",
        "sites have different channel counts: 1 channel(s) in site0",
        lambda t: prepare(sites(t, channels=(1, 3))),
    ),
    (
        "no mask has foreground",
        "warning: data set 'sites': no mask has any foreground, so every Dice will be 1.0",
        lambda t: prepare(sites(t, foreground=False)),
    ),
    (
        "a site with one image (`fit`; `prepare` caches it)",
        "site 'site0' has 1 images to split: too few for training, validation and test",
        lambda t: fit(t, "--dataset", "sites", "--data-root", str(sites(t, images=1))),
    ),
    ("`01.png` and `01.jpg` in one folder", "have the same name '1'", one_stem),
    (
        "a stray folder at the data root (hidden ones are skipped)",
        "folder(s) notes/ do not fit the sites layout",
        stray,
    ),
    ("a truncated or unreadable file", "cannot be read as an image", damaged),
    (
        "an image over the decompression-bomb limit",
        "image is larger than the limit of 100 pixels",
        huge,
    ),
    ("the disk is full", "the disk is full:", disk_full),
    (
        "a YAML key given twice",
        "key 'train' appears twice in one mapping (lines 1 and 3)",
        duplicate_key,
    ),
    (
        "`--set data.label_values=[1,1]`",
        "data.label_values: each mask value maps to its own class, but 1 is given more",
        lambda t: fit(t, "--set", "data.label_values=[1,1]"),
    ),
    (
        "`--data-root` with the synthetic data set",
        "data.root: data set 'synthetic' is generated, it reads no folder",
        lambda t: fit(t, "--data-root", str(t)),
    ),
    (
        "`--overwrite` on a folder of your own files",
        "which no fedbcs run wrote; --overwrite replaces only the files of an earlier run",
        own_files,
    ),
    (
        "a checkpoint of a plugin backbone, without `--import`",
        "from module(s) my_nets (run.imports), which a config or checkpoint never imports",
        plugin_checkpoint,
    ),
    ("a checkpoint with NaN weights", "holds non-finite weights (NaN or infinity", nan_checkpoint),
]


@pytest.mark.parametrize(("what", "message", "make"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_says_what_is_wrong(what, message, make, tmp_path, monkeypatch, request):
    if "GPU" in what and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if "resume RUN" in what:
        (tmp_path / "checkpoints").mkdir()
    arguments = make.__code__.co_varnames[: make.__code__.co_argcount]
    output = make(tmp_path, monkeypatch) if "monkeypatch" in arguments else make(tmp_path)
    assert message in " ".join(output.split()), output


def test_the_troubleshooting_table_lists_exactly_these_cases():
    text = TROUBLESHOOTING.read_text()
    section = text[text.index("# When something goes wrong") :]
    rows = re.findall(r"^\| (.+?) \| `(.+?)` \|$", section, flags=re.M)
    assert rows[: len(CASES)] == [(what, message) for what, message, _ in CASES]
