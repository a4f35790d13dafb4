"""The progress lines tell the truth: what starts, each round with an ETA that holds after
a resume, the final test site by site, and Ctrl-C (through Lightning) with the way back."""

import io
import os
import re
import signal
import subprocess
import sys

from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.api import fit, resume
from fedbcs_lightning.callbacks import RoundProgress
from fedbcs_lightning.config import resolve


def tiny(rounds):
    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 6}},
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4},
            "run": {"log_images": 0},
        }
    )


def test_lines_for_start_rounds_and_test_and_an_eta_that_counts_this_process(tmp_path):
    first = io.StringIO()
    fit(tiny(2), run_dir=tmp_path, callbacks=[RoundProgress(first)], progress=False)
    lines = first.getvalue().splitlines()
    assert lines[0] == "training 2 clients for 2 rounds"
    assert lines[1].startswith("round 1/2  train loss ")
    assert re.match(r"testing the .* on 2 sites \.\.\.", lines[3])
    assert re.fullmatch(r"  tested site2 \((\d)/\1\)", lines[-1])  # the last of all tests

    second = io.StringIO()
    resume(tmp_path, rounds=4, callbacks=[RoundProgress(second)], progress=False)
    lines = second.getvalue().splitlines()
    assert lines[0] == "resuming after round 2: rounds 3-4 with 2 clients"
    elapsed, eta = re.search(r"round 3/4 .* elapsed (\d+)s  eta (\d+)s", lines[1]).groups()
    assert abs(int(eta) - int(elapsed)) <= 1  # one round left, one round done here


def test_version_and_help_without_type_noise():
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and re.fullmatch(r"fedbcs-lightning \S+\n", version.output)
    for args in (["--help"], ["fit", "--help"], ["evaluate", "--help"]):
        shown = runner.invoke(app, args).output
        assert "<bool>" not in shown and "--help" in shown


def test_ctrl_c_stops_cleanly_with_the_resume_command(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "fedbcs_cli.main", "fit", "--rounds", "500"]
    command += ["--image-size", "32", "--clients", "2", "--set", "model.width=4"]
    command += ["--set", "run.log_images=0", "--output", str(run_dir)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal, even where these tests run as a background job (which starts
        # with SIGINT ignored, and its children inherit that)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stdout:
        if line.startswith("round 2/"):
            break
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"interrupted; continue with: fedbcs fit --resume {run_dir}" in err
    assert "Traceback" not in err
