"""A full disk, on a real small filesystem (a tmpfs this test mounts): one line that says
the disk is full and where, nothing half-written, and the run continues once there is
space. Skipped, with the reason, where mounting is not allowed (the patched-``fsync``
test in ``tests/test_rundir.py`` covers the logic everywhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "samples" / "fundus-dofe"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path, leave: int) -> Path:
    """Fill ``mount`` until ``leave`` bytes are free; the ballast file is returned."""
    import shutil

    ballast = mount / "ballast"
    free = shutil.disk_usage(mount).free
    with ballast.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return ballast


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fedbcs_cli.main", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def test_fit_on_a_full_disk_says_so_in_one_line_and_resumes_once_there_is_space(small_disk):
    run = small_disk / "run"
    args = ["fit", "--rounds", "3", "--image-size", "32", "--clients", "2", "--set",
            "model.width=4", "--set", "data.synthetic.images_per_site=8", "--set",
            "run.log_images=0", "--output", str(run)]  # fmt: skip
    first = cli(*args, "--rounds", "1")
    assert first.returncode == 0, first.stderr
    state = (run / "checkpoints" / "state.pt").read_bytes()
    ballast = fill(small_disk, leave=64 * 1024)  # less than one checkpoint
    stopped = cli("fit", "--resume", str(run), "--rounds", "3")
    assert stopped.returncode == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr and "unexpected pos" not in stopped.stderr
    (line,) = [x for x in stopped.stderr.splitlines() if x.startswith("error:")]
    assert "the disk is full" in line and str(small_disk) in line
    assert leftovers(small_disk) == []
    assert (run / "checkpoints" / "state.pt").read_bytes() == state  # the saved round intact
    ballast.unlink()
    resumed = cli("fit", "--resume", str(run), "--rounds", "3")
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets/samples is not here")
def test_prepare_on_a_full_disk_says_so_and_leaves_nothing(small_disk):
    fill(small_disk, leave=32 * 1024)
    out = small_disk / "fundus.h5"
    done = cli("prepare", "--dataset", "fundus", "--data-root", str(SHARED), "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "the disk is full" in line and str(out) in line
    assert not out.exists() and leftovers(small_disk) == []
